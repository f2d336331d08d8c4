"""Tokenizing normalised rows the way `trl.DPOTrainer` does, and preparing a whole dataset by the row rules of
`dpo_ext.data`.
"""

import logging
from collections import Counter

from dpo_ext.data.rows import (
    COMPLETION_IDS,
    PROMPT,
    PROMPT_IDS,
    RANKS,
    REF_LOGPS,
    ROW_INDEX,
    PreferenceDataError,
    normalize_row,
)
from dpo_ext.data.validation import summarize_counts

logger = logging.getLogger(__name__)


def _common_prefix_length(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def tokenize_ranked(prompt, completions, tokenizer) -> tuple[list[int], list[list[int]]]:
    """Tokenize a prompt and its K completions the way ``trl.DPOTrainer`` does, so rewards and losses line up.

    Plain text: EOS is appended to each completion that lacks it, and ``prompt + completion`` is tokenized as one
    string. Conversational: the chat template renders ``prompt`` (with the generation prompt) and
    ``prompt + completion``. In both cases the completion starts where the tokenized prompt and the tokenized
    ``prompt + completion`` first differ (over all K completions), since tokens may merge across the boundary.

    Returns:
        `(prompt_ids, completion_ids)`: a list of ints and a list of K lists of ints.

    Raises:
        `PreferenceDataError` (field ``prompt``): when no prompt token is left (the prompt merges into a completion's
            first token), or for chat messages and a tokenizer without a chat template.
    """
    if isinstance(prompt, list):
        if getattr(tokenizer, "chat_template", None) is None:
            raise PreferenceDataError("the prompt is a list of chat messages but the tokenizer has no chat template "
                                      "(set tokenizer.chat_template, or give text prompts)", field=PROMPT)
        prompt_ids = tokenizer.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True, return_dict=True)
        prompt_ids = list(prompt_ids["input_ids"])
        full = [
            list(tokenizer.apply_chat_template(prompt + c, tokenize=True, return_dict=True)["input_ids"])
            for c in completions
        ]
    else:
        eos = tokenizer.eos_token or ""
        prompt_ids = tokenizer(prompt)["input_ids"]
        full = [tokenizer(prompt + (c if c.endswith(eos) else c + eos))["input_ids"] for c in completions]
    prompt_len = min(_common_prefix_length(prompt_ids, ids) for ids in full)
    if prompt_len == 0:
        raise PreferenceDataError(
            "the prompt gives no token of its own: tokenized with a completion, it merges into the completion's first "
            "token, so nothing would predict that token. End the prompt where a token ends (with a space or a "
            "newline, say), or start it with the tokenizer's BOS token text", field=PROMPT)
    return prompt_ids[:prompt_len], [ids[prompt_len:] for ids in full]


def prepare_ranked_dataset(dataset, tokenizer, max_length: int | None = None, num_proc=None, name="train"):
    """Check, normalise and tokenize a `datasets.Dataset` of preference rows (any format of this module, tokenized
    ones included) by the row rules of this module.

    Returns a dataset with columns ``prompt_ids``, ``completion_ids`` (K lists), ``ranks`` (K dense ranks),
    ``row_index`` (the row's index in ``dataset``, or a tokenized row's own ``row_index``, so that errors during
    training can name it) and, when the input had one, ``ref_logps``. Rows with no preference and rows whose prompt
    alone reaches ``max_length`` are dropped; what was dropped or collapsed is logged.

    Raises:
        `PreferenceDataError`: for the first invalid row, naming the dataset (``name``), the row and the field.
    """

    def prepare(row, index):
        try:
            normalized = normalize_row(row, index)
            if normalized.tokenized:
                prompt_ids, completion_ids = normalized.prompt, normalized.completions
            else:
                prompt_ids, completion_ids = tokenize_ranked(normalized.prompt, normalized.completions, tokenizer)
        except PreferenceDataError as error:
            raise error.located(index, name) from None
        own_index = row.get(ROW_INDEX) if normalized.tokenized else None
        out = {PROMPT_IDS: prompt_ids, COMPLETION_IDS: completion_ids, RANKS: normalized.ranks,
               ROW_INDEX: index if own_index is None else own_index, "_collapsed": normalized.num_collapsed,
               "_no_preference": normalized.no_preference or "", "_key": normalized.key()}
        return out if normalized.ref_logps is None else {**out, REF_LOGPS: normalized.ref_logps}

    if len(dataset) == 0:  # map() of no rows adds no columns, and the counts below would fail on a missing one
        raise PreferenceDataError(f"{name} dataset is empty: give it at least one row with a preference")
    dataset = dataset.map(prepare, with_indices=True, remove_columns=dataset.column_names, num_proc=num_proc,
                          desc=f"Checking and tokenizing {name} preferences")
    num_rows, collapsed = len(dataset), sum(dataset["_collapsed"])
    no_preference = Counter(reason for reason in dataset["_no_preference"] if reason)
    dataset = dataset.filter(lambda reason: not reason, input_columns="_no_preference", num_proc=num_proc)
    keys = dataset["_key"]
    for line in summarize_counts(num_rows, no_preference, collapsed, len(keys) - len(set(keys))):
        logger.warning("%s: %s.", name, line)
    dataset = dataset.remove_columns(["_collapsed", "_no_preference", "_key"])
    if max_length is not None:
        before = len(dataset)
        dataset = dataset.filter(lambda p: len(p) < max_length, input_columns=PROMPT_IDS, num_proc=num_proc)
        if len(dataset) < before:
            logger.warning(
                "%s: dropped %d of %d rows whose prompt alone has max_length=%d tokens or more.",
                name, before - len(dataset), before, max_length,
            )
    if len(dataset) == 0:
        raise PreferenceDataError("no usable rows left after validation (see the warnings above)", dataset=name)
    return dataset
