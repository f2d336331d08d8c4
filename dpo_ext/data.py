"""Ranked and pairwise preference rows -> validated, tokenized examples: the one set of row rules that the trainer
(`prepare_ranked_dataset`), the scorer's evaluation and `dpo-ext validate` share.

Accepted row formats (all rows of a dataset share one format; K may vary from row to row):

- ranked:  ``{"prompt", "completions": [K], "ranks": [K]}``   (0 = best, equal ranks = tie)
- scored:  ``{"prompt", "completions": [K], "scores": [K]}``  (higher is better, equal scores = tie)
- pairwise (TRL's format): ``{"prompt", "chosen", "rejected"}``  (K = 2)
- tokenized: ``{"prompt_ids", "completion_ids": [K], "ranks": [K]}`` (e.g. a dataset prepared earlier)

Prompts and completions are strings, or (conversational form) lists of ``{"role", "content"}`` messages rendered
with the tokenizer's chat template. A precomputed ``ref_logps`` column (K floats per row) is kept.

The rules (`normalize_row` applies them to one row; every caller goes through it):

- A prompt must give at least one token of its own: a completion's first token is predicted from the prompt's last
  token, and with no prompt token nothing predicts it, so it would silently go unscored. An empty or whitespace-only
  prompt (or chat messages that are all empty) is an error; to score without a prompt, use the tokenizer's BOS token
  text as the prompt. A prompt whose tokens merge with the start of every completion (so that the prompt and
  ``prompt + completion`` share no token) is an error at tokenization.
- Only the order of ranks matters: ``[0, 2, 2]`` and ``[1, 5, 5]`` are the same ranking. They are normalised to
  dense ranks (0, 1, 2, ...) so that downstream code can rely on 0 being the best group.
- Identical completions within a row (same text, same messages, or same token ids) are collapsed into one copy that
  keeps the best rank among them: a completion compared with itself carries no information, and duplicates would
  count one text several times in the loss. The number collapsed is logged.
- A row left with no preference (fewer than 2 distinct completions, or all tied) is dropped in training and skipped
  in evaluation (not counted as a wrong answer); the counts are logged by reason (`IDENTICAL`, `ALL_TIED`).
- Exact duplicate rows (same prompt, completions and ranks after the rules above) are kept, since repeating a row is
  a way to weight it, but they are counted and logged.
- ``ref_logps``, when a row has the field, must be K finite numbers.
"""

import logging
from collections import Counter
from dataclasses import dataclass

import torch

from .rows import (  # the row rules; re-exported here, where the row format is documented
    ALL_TIED,
    COMPLETION_IDS,
    EMPTY_PROMPT,
    IDENTICAL,
    PROMPT,
    PROMPT_IDS,
    RANKS,
    REF_LOGPS,
    ROW_INDEX,
    NormalizedRow,
    PreferenceDataError,
    normalize_row,
    summarize_counts,
)

__all__ = ["ALL_TIED", "IDENTICAL", "NormalizedRow", "PreferenceDataError", "RankedCollator", "normalize_row",
           "pad_rows", "per_list_tensors", "prepare_ranked_dataset", "prompt_ids_of", "tokenize_ranked"]

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


def pad_rows(rows, value: int, width: int | None = None, device=None) -> torch.Tensor:
    """Right-pad lists of ints with ``value`` to ``width`` (default: the longest): a (len(rows), width) long tensor."""
    width = max(len(r) for r in rows) if width is None else width
    return torch.tensor([list(r) + [value] * (width - len(r)) for r in rows], dtype=torch.long, device=device)


def prompt_ids_of(example: dict) -> list[int]:
    """An example's prompt ids; refuses empty ones, which would leave each completion's first token unscored."""
    prompt = list(example[PROMPT_IDS])
    if not prompt:
        raise PreferenceDataError(f"{EMPTY_PROMPT}; prepare rows with prepare_ranked_dataset, which refuses them",
                                  example.get(ROW_INDEX), PROMPT_IDS)
    return prompt


def per_list_tensors(examples: list[dict], max_k: int) -> dict:
    """What both collators return per list: ``ranks`` (B, K_max) long with -1 in missing slots; ``ref_logps`` (B, K_max)
    float32 (0 in missing slots) and ``row_index`` (B,) long, each when the examples carry it."""
    ranks = torch.full((len(examples), max_k), -1, dtype=torch.long)
    for b, example in enumerate(examples):
        ranks[b, : len(example[RANKS])] = torch.tensor(example[RANKS], dtype=torch.long)
    out = {RANKS: ranks}
    if examples[0].get(REF_LOGPS) is not None:
        grid = torch.zeros((len(examples), max_k), dtype=torch.float32)
        for b, example in enumerate(examples):
            grid[b, : len(example[REF_LOGPS])] = torch.tensor(example[REF_LOGPS], dtype=torch.float32)
        out[REF_LOGPS] = grid
    if examples[0].get(ROW_INDEX) is not None:  # lets a training error name the dataset rows of its batch
        out[ROW_INDEX] = torch.tensor([e[ROW_INDEX] for e in examples], dtype=torch.long)
    return out


@dataclass
class RankedCollator:
    """Collate tokenized ranked examples into one batch of ``prompt + completion`` rows.

    Only real completions become rows (no padding rows for lists shorter than the longest), so a batch of lists of
    sizes K_1..K_B has N = sum K_b rows; ``slot_index`` maps each row to its place in the flattened (B, K_max) grid.

    Returns a dict with ``input_ids``, ``attention_mask``, ``completion_mask`` (N, T), right-padded; ``slot_index``
    (N,); and `per_list_tensors`: ``ranks`` (B, K_max) with -1 in missing slots, ``ref_logps`` (B, K_max) and
    ``row_index`` (B,) when the examples carry them.
    """

    pad_token_id: int
    max_length: int | None = None

    def __call__(self, examples: list[dict]) -> dict:
        max_k = max(len(e["completion_ids"]) for e in examples)
        sequences, completion_masks, slots = [], [], []
        for b, example in enumerate(examples):
            prompt = prompt_ids_of(example)
            for k, completion in enumerate(example["completion_ids"]):
                ids = prompt + list(completion)
                mask = [0] * len(prompt) + [1] * len(completion)
                if self.max_length is not None:  # keep the start, like TRL: the prompt survives, the tail goes
                    ids, mask = ids[: self.max_length], mask[: self.max_length]
                sequences.append(ids)
                completion_masks.append(mask)
                slots.append(b * max_k + k)
        return {
            "input_ids": pad_rows(sequences, self.pad_token_id),
            "attention_mask": pad_rows([[1] * len(s) for s in sequences], 0),
            "completion_mask": pad_rows(completion_masks, 0),
            "slot_index": torch.tensor(slots, dtype=torch.long),
            **per_list_tensors(examples, max_k),
        }
