"""The one way the library loads a model's tokenizer, and the one pad-token rule (trainer, scorer, judges).

Batches are right-padded and the padding is masked, so the pad id never changes a result; a tokenizer without a pad
token pads with its EOS token, and one with neither is refused, since nothing says which id is safe to use.
"""

import os


def padding_id(tokenizer, what: str = "the tokenizer") -> int:
    """The id batches are padded with: the pad token's, else the EOS token's. ``tokenizer`` is not changed.

    Raises:
        `ValueError`: for a tokenizer with neither, saying how to add a pad token (``what`` names the tokenizer).
    """
    if tokenizer.pad_token_id is not None:
        return tokenizer.pad_token_id
    if tokenizer.eos_token_id is None:
        raise ValueError(f"{what} has neither a pad token nor an EOS token, so batches cannot be padded: set one, e.g. "
                         "`tokenizer.add_special_tokens({'pad_token': '<pad>'})` then "
                         "`model.resize_token_embeddings(len(tokenizer))`")
    return tokenizer.eos_token_id


def ensure_pad_token(tokenizer, what: str = "the tokenizer") -> None:
    """Give ``tokenizer`` a pad token by `padding_id`'s rule (EOS when it has none), for code that reads
    ``tokenizer.pad_token`` itself (TRL, a reward model's config)."""
    if tokenizer.pad_token is None:
        padding_id(tokenizer, what)
        tokenizer.pad_token = tokenizer.eos_token


def load_tokenizer(source: str, argument: str, revision: str | None = None, fallback: str | None = None):
    """The tokenizer saved with a model: at ``source`` (a local folder or Hub id), else at ``fallback`` (an adapter's
    base model, say; loaded at its default revision). A local folder without ``tokenizer_config.json`` is skipped.

    Args:
        source (`str`): the model's name or folder (empty for a model built from a config).
        argument (`str`): how the caller's user passes a tokenizer instead, for the error (``"tokenizer"``,
            ``"--tokenizer"``...).
        revision (`str`, *optional*): ``source``'s revision.
        fallback (`str`, *optional*): where to look when ``source`` has no tokenizer.

    Raises:
        `ValueError`: naming where it looked, and saying to pass ``argument``.
    """
    if not source:
        raise ValueError(f"{argument} is required here: the model was built from a config, so there is no name or "
                         f"folder to load its tokenizer from; pass {argument}=tokenizer")
    from transformers import AutoTokenizer

    problems = []
    for place, place_revision in ((source, revision), (fallback, None)):
        if not place:
            continue
        if os.path.isdir(place) and not os.path.isfile(os.path.join(place, "tokenizer_config.json")):
            problems.append(f"{place!r} (a folder without tokenizer_config.json)")
            continue
        try:
            return AutoTokenizer.from_pretrained(place, revision=place_revision)
        except (OSError, ValueError) as error:
            problems.append(f"{place!r} ({error})")
    raise ValueError(f"could not load a tokenizer from {' or '.join(problems)}; pass {argument}=")
