"""License ids the Hub accepts in a card's `license:` field, and the rule for which license a card states.

A card states a license only when one is known: given by the user, or stated by the base model's own card or
recorded for the training data. Claiming one by default (as `apache-2.0` for data that carry none) misleads
everyone who reuses the model.

Source of the ids: huggingface/hub-docs `docs/hub/repositories-licenses.md` (the table between its "region licenses"
comments), read in 2026-12, with the Llama 3.x ids added there since.
"""

HUB_LICENSES = frozenset("""
apache-2.0 mit openrail bigscience-openrail-m creativeml-openrail-m bigscience-bloom-rail-1.0 bigcode-openrail-m
afl-3.0 artistic-2.0 bsl-1.0 bsd bsd-2-clause bsd-3-clause bsd-3-clause-clear c-uda cc cc0-1.0 cc-by-2.0 cc-by-2.5
cc-by-3.0 cc-by-4.0 cc-by-sa-3.0 cc-by-sa-4.0 cc-by-nc-2.0 cc-by-nc-3.0 cc-by-nc-4.0 cc-by-nd-4.0 cc-by-nc-nd-3.0
cc-by-nc-nd-4.0 cc-by-nc-sa-2.0 cc-by-nc-sa-3.0 cc-by-nc-sa-4.0 cdla-sharing-1.0 cdla-permissive-1.0
cdla-permissive-2.0 wtfpl ecl-2.0 epl-1.0 epl-2.0 etalab-2.0 eupl-1.1 agpl-3.0 gfdl gpl gpl-2.0 gpl-3.0 lgpl lgpl-2.1
lgpl-3.0 isc lppl-1.3c ms-pl mpl-2.0 odc-by odbl openrail++ osl-3.0 postgresql ofl-1.1 ncsa unlicense zlib pddl
lgpl-lr deepfloyd-if-license llama2 llama3 llama3.1 llama3.2 llama3.3 gemma unknown other
""".split())
LICENSES_PAGE = "https://huggingface.co/docs/hub/repositories-licenses"


def check_license(license, where: str = "license") -> str | None:
    """`license` as the Hub spells it (lower case), or None when none is given.

    Raises:
        `ValueError`: naming `where` and the value, when the Hub does not know the id (a card with it is refused by
            the Hub's metadata check, or shows no license), or when it is `other` (which needs a LICENSE file and a
            `license_name`, which dpo_ext does not write).
    """
    if license is None:
        return None
    value = license.strip().lower() if isinstance(license, str) else license
    if value == "other":
        raise ValueError(f"{where} 'other' needs a LICENSE file and a license_name in the card, which dpo_ext does not "
                         f"write: pass a license id from {LICENSES_PAGE}, or none (the card then says the license is "
                         "unknown)")
    if not isinstance(value, str) or value not in HUB_LICENSES:
        close = sorted(known for known in HUB_LICENSES if isinstance(value, str) and value[:3] == known[:3])[:5]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(f"{where} {license!r} is not a license id the Hub knows{hint}: pass one from {LICENSES_PAGE}, "
                         "e.g. 'apache-2.0' or 'mit', or none (the card then says the license is unknown)")
    return value


def card_license(given, base_model_license: str | None, data_license: str | None) -> tuple[str | None, str]:
    """``(license id or None, where it comes from)``: the given one; else the one that the base model's card and the
    training data's record state (when only one states a license, or both state the same); else None, with the
    reason."""
    given = check_license(given)
    if given is not None:
        return given, "given when the adapter was published"
    stated = {"stated in the base model's card": base_model_license, "recorded for the training data": data_license}
    stated = {source: value for source, value in stated.items() if value}
    values = set(stated.values())
    if len(values) == 1:
        value = values.pop()
        if value in HUB_LICENSES and value != "other":
            return value, " and ".join(stated)
    if len(values) > 1:
        return None, ("the base model's card and the training data state different licenses ("
                      + ", ".join(f"{value}: {source}" for source, value in stated.items()) + ")")
    return None, "none was given when the adapter was published, and neither the base model nor the data state one"
