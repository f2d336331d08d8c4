"""Reddit TL;DR with human preferences (``openai/summarize_from_feedback``, config ``comparisons``) as preference rows,
the way the DPO paper uses it (section 6.2).

The published schema (one comparison per row; the ``comparisons/batch*.json`` files described in the README of
github.com/openai/summarize-from-feedback, and the Hub's parquet export of the dataset's loading script)::

    {"info": {"id": str, "post": str | None, "title": str, "subreddit": str | None,
              "site": str | None, "article": str | None},
     "summaries": [{"text": str, "policy": str, "note": str | None}, {...}],    # the two summaries compared
     "choice": int,                     # 0 or 1: the index in "summaries" of the one the labeller preferred
     "worker": str, "batch": str, "split": str,    # split: the labellers' own "train", "valid1" or "valid2"
     "extra": {"confidence": int | None}}

Reddit rows carry ``post`` and ``subreddit``. CNN/DailyMail rows (batches ``batch0_cnndm``, ``cnndm0``, ``cnndm2``,
only in the Hub's ``validation`` split) carry ``article`` and ``site`` instead, with ``post`` null. The paper trains
and tests on Reddit posts, so the news articles are left out and counted (``not_reddit``). OpenAI's own files leave
the keys a row does not use out; the Hub's parquet export has all six ``info`` keys, null where unused. Both work.

Prompt: the one TRL's ``trl-lib/tldr-preference`` uses (``examples/datasets/tldr_preference.py``), so that this module
gives the same rows whichever of the two datasets it reads: ``"SUBREDDIT: r/{subreddit}\\n\\nTITLE: {title}\\n\\nPOST:
{post}\\n\\nTL;DR:"``, with each ``"\\n\\n"`` of the post made ``"\\n"`` (one pass of ``str.replace``, as TRL does) so
that blank lines only separate the template's own parts. Responses: the summary as published. Published summaries
start with a space (as in OpenAI's README example: they follow ``"TL;DR:"``); one that does not is given one, so
that the prompt and the response never run together.

Loading with ``datasets`` 4 and later: the Hub repository's main branch still holds only the loading script
``summarize_from_feedback.py``, which these versions refuse ("Dataset scripts are no longer supported"). The Hub's
automatic parquet export of it sits on the ``refs/convert/parquet`` branch as ``comparisons/train/*.parquet`` and
``comparisons/validation/*.parquet``, and `load_rows` reads those. ``trl-lib/tldr-preference`` is plain parquet and
loads as it is.

SFT: the paper's SFT model was fine-tuned on human-written summaries of the filtered TL;DR dataset (``trl-lib/tldr``,
already ``{"prompt", "completion"}``, same template but with the post's blank lines kept). The recipe takes the
alternative the HH recipe takes (`recipe_kit.sft.sft_rows`): the preferred summaries of the comparisons, with the
prompts of the DPO rows.
"""

from dpo_ext import PreferenceDataError

DATASET = "openai/summarize_from_feedback"
PARQUET_REVISION = "refs/convert/parquet"
PREFERENCE_DATASET = "trl-lib/tldr-preference"
PROMPT = "SUBREDDIT: r/{subreddit}\n\nTITLE: {title}\n\nPOST: {post}\n\nTL;DR:"
REDDIT_PREFIX = "SUBREDDIT: r/"
LEFT_OUT = ("not_reddit", "empty_summary", "identical_summaries")
SCHEMA_HINT = (f"each row must follow {DATASET}'s 'comparisons' schema (see the docstring of recipes/tldr/tldr_data.py)"
               "; fix or remove this row")


def reddit_prompt(subreddit: str, title: str, post: str) -> str:
    """The TL;DR prompt of one Reddit post (each ``"\\n\\n"`` of the post made ``"\\n"``, as TRL does)."""
    return PROMPT.format(subreddit=subreddit, title=title, post=post.replace("\n\n", "\n"))


def response(text: str) -> str:
    """A summary as it follows the prompt: as published, with a leading space added when it has none."""
    return text if text[:1].isspace() else " " + text


def _text(value, row: int, field: str, hint: str = SCHEMA_HINT) -> str:
    if not isinstance(value, str):
        found = "nothing (missing or null)" if value is None else f"a {type(value).__name__}"
        raise PreferenceDataError(f"expected a string, found {found}; {hint}.", row, field)
    return value


def comparison_pair(record: dict, row: int) -> tuple[str | None, str, str]:
    """``(prompt, chosen, rejected)`` of one published comparison; the prompt is ``None`` for a news article.

    Raises:
        `PreferenceDataError` naming ``row`` and the field when a field the pair needs is missing or malformed.
    """
    info, summaries, choice = record.get("info"), record.get("summaries"), record.get("choice")
    if not isinstance(info, dict):
        raise PreferenceDataError(f"expected the post's details (id, post, title, subreddit...); {SCHEMA_HINT}.",
                                  row, "info")
    if not isinstance(summaries, list) or len(summaries) != 2:
        raise PreferenceDataError(f"expected a list of the two summaries compared; {SCHEMA_HINT}.", row, "summaries")
    texts = [_text(s.get("text") if isinstance(s, dict) else None, row, f"summaries[{k}].text")
             for k, s in enumerate(summaries)]
    if not isinstance(choice, int) or isinstance(choice, bool) or choice not in (0, 1):
        raise PreferenceDataError(f"expected 0 or 1 (the index of the preferred summary), found {choice!r}; "
                                  f"{SCHEMA_HINT}.", row, "choice")
    chosen, rejected = texts[choice], texts[1 - choice]
    if info.get("post") is None:
        if info.get("article") is None:
            raise PreferenceDataError("expected a Reddit post here (or, for a news article, info.article); "
                                      f"{SCHEMA_HINT}.", row, "info.post")
        return None, chosen, rejected
    prompt = reddit_prompt(_text(info.get("subreddit"), row, "info.subreddit"),
                           _text(info.get("title"), row, "info.title"), _text(info["post"], row, "info.post"))
    return prompt, chosen, rejected


def preference_pair(record: dict, row: int) -> tuple[str | None, str, str]:
    """``(prompt, chosen, rejected)`` of one ``trl-lib/tldr-preference`` row; the prompt is ``None`` when it is not a
    Reddit post's (that dataset's CNN/DM prompts start ``"TITLE: "``)."""
    hint = (f"rows in {PREFERENCE_DATASET}'s form have 'prompt', 'chosen' and 'rejected' as plain text "
            "(conversational rows are not read here); fix or remove this row")
    prompt, chosen, rejected = (_text(record.get(name), row, name, hint) for name in ("prompt", "chosen", "rejected"))
    return (prompt if prompt.startswith(REDDIT_PREFIX) else None), chosen, rejected


def _keep(pairs: list[tuple[str | None, str, str]]) -> tuple[list[dict], dict]:
    rows, left_out = [], dict.fromkeys(LEFT_OUT, 0)
    for prompt, chosen, rejected in pairs:
        if prompt is None:
            left_out["not_reddit"] += 1
        elif not chosen.strip() or not rejected.strip():
            left_out["empty_summary"] += 1
        elif chosen.strip() == rejected.strip():  # differing only in surrounding spaces is still no preference
            left_out["identical_summaries"] += 1
        else:
            rows.append({"prompt": prompt, "chosen": response(chosen), "rejected": response(rejected)})
    return rows, {"records": len(pairs), "kept": len(rows), "left_out": left_out}


def to_rows(records) -> tuple[list[dict], dict]:
    """Preference rows ``{"prompt", "chosen", "rejected"}`` from published comparisons, and counts of what was kept
    and left out, by reason: ``not_reddit`` (a CNN/DM article), ``empty_summary``, ``identical_summaries`` (no
    preference to learn). A malformed record raises `PreferenceDataError` naming its row and field."""
    return _keep([comparison_pair(record, row) for row, record in enumerate(records)])


def preference_to_rows(records) -> tuple[list[dict], dict]:
    """`to_rows` for rows already in ``trl-lib/tldr-preference``'s ``{"prompt", "chosen", "rejected"}`` form: the same
    rules and counts, so that both datasets give the same rows."""
    return _keep([preference_pair(record, row) for row, record in enumerate(records)])


def any_to_rows(records) -> tuple[list[dict], dict]:
    """`to_rows` or `preference_to_rows`, told apart by the records' columns (those of the first record for a list)."""
    columns = set(getattr(records, "column_names", None) or (records[0] if len(records) else ()))
    if {"info", "summaries", "choice"} <= columns:
        return to_rows(records)
    if {"prompt", "chosen", "rejected"} <= columns:
        return preference_to_rows(records)
    raise PreferenceDataError(
        f"the data has columns {sorted(columns)}; expected {DATASET}'s comparisons ('info', 'summaries', 'choice') "
        f"or {PREFERENCE_DATASET}'s rows ('prompt', 'chosen', 'rejected').")


def load_rows(split: str = "train", data_files: str | list[str] | None = None,
              dataset: str = DATASET) -> tuple[list[dict], dict]:
    """Preference rows (`to_rows`) of one split (``"train"`` or ``"validation"``) of ``dataset`` on the Hub, or of
    local JSON-lines files (``data_files``) in either published schema.

    ``dataset``: ``openai/summarize_from_feedback`` (read from its parquet export, see the module docstring),
    ``trl-lib/tldr-preference``, or another Hub dataset in one of the two schemas.
    """
    from datasets import load_dataset

    if data_files is not None:
        records = load_dataset("json", data_files=data_files, split="train")
    elif dataset == DATASET:
        records = load_dataset(DATASET, revision=PARQUET_REVISION,
                               data_files={split: f"comparisons/{split}/*.parquet"}, split=split)
    else:
        records = load_dataset(dataset, split=split)
    return any_to_rows(records)

