"""Ranked and pairwise preference rows -> validated, tokenized examples.

Accepted row formats (all rows of a dataset share one format; K may vary from row to row):

- ranked:  ``{"prompt", "completions": [K], "ranks": [K]}``   (0 = best, equal ranks = tie)
- scored:  ``{"prompt", "completions": [K], "scores": [K]}``  (higher is better, equal scores = tie)
- pairwise (TRL's format): ``{"prompt", "chosen", "rejected"}``  (K = 2)

Prompts and completions are strings, or (conversational form) lists of ``{"role", "content"}`` messages rendered
with the tokenizer's chat template. A precomputed ``ref_logps`` column (K floats per row) is kept.

Only the order of ranks matters: ``[0, 2, 2]`` and ``[1, 5, 5]`` are the same ranking. They are normalised to dense
ranks (0, 1, 2, ...) so that downstream code can rely on 0 being the best group.
"""

import logging
import math
from dataclasses import dataclass
from numbers import Integral, Real

import torch

logger = logging.getLogger(__name__)

PROMPT, COMPLETIONS, RANKS, SCORES, CHOSEN, REJECTED = "prompt", "completions", "ranks", "scores", "chosen", "rejected"
REF_LOGPS = "ref_logps"
TOKENIZED_COLUMNS = ("prompt_ids", "completion_ids", "ranks")


class PreferenceDataError(ValueError):
    """A preference row that cannot be used; the message names the row and the field."""


def _fail(index, field, problem):
    where = f"row {index}" if index is not None else "row"
    raise PreferenceDataError(f"{where}, field '{field}': {problem}")


def _is_messages(value) -> bool:
    return isinstance(value, list) and len(value) > 0 and all(
        isinstance(m, dict) and "role" in m and "content" in m for m in value
    )


def _check_text(value, index, field, conversational):
    if conversational:
        if not _is_messages(value):
            _fail(index, field, "expected a list of {'role', 'content'} messages like the prompt's")
        if all(not str(m["content"]).strip() for m in value):
            _fail(index, field, "the completion's messages are all empty")
    else:
        if not isinstance(value, str):
            _fail(index, field, f"expected a string, got {type(value).__name__}")
        if not value.strip():
            _fail(index, field, "empty completion")


def dense_ranks(values, descending=False) -> list[int]:
    """Map values to dense ranks 0..G-1 (0 = smallest, or largest with ``descending``); equal values share a rank."""
    distinct = sorted(set(values), reverse=descending)
    position = {v: i for i, v in enumerate(distinct)}
    return [position[v] for v in values]


def normalize_row(row: dict, index: int | None = None) -> dict:
    """Validate one preference row and return ``{"prompt", "completions", "ranks"}`` with dense ranks.

    Raises:
        `PreferenceDataError`: naming the row index and the field, for a missing field, K < 2, a length mismatch,
            a NaN or non-numeric score, a non-string (or non-message) completion, or ranks that are not a ranking.
    """
    if PROMPT not in row or row[PROMPT] is None:
        _fail(index, PROMPT, "missing (every row needs a prompt)")
    prompt = row[PROMPT]
    conversational = isinstance(prompt, list)
    if conversational and not _is_messages(prompt):
        _fail(index, PROMPT, "a list prompt must be {'role', 'content'} messages")
    if not conversational and not isinstance(prompt, str):
        _fail(index, PROMPT, f"expected a string or a list of messages, got {type(prompt).__name__}")

    has_pair = row.get(CHOSEN) is not None or row.get(REJECTED) is not None
    has_list = row.get(COMPLETIONS) is not None
    if has_pair and has_list:
        _fail(index, COMPLETIONS, "row has both 'completions' and 'chosen'/'rejected'; keep one format")
    if has_pair:
        for field in (CHOSEN, REJECTED):
            if row.get(field) is None:
                _fail(index, field, "missing (pairwise rows need both 'chosen' and 'rejected')")
            _check_text(row[field], index, field, conversational)
        return {PROMPT: prompt, COMPLETIONS: [row[CHOSEN], row[REJECTED]], RANKS: [0, 1]}
    if not has_list:
        _fail(index, COMPLETIONS, "missing (expected 'completions' with 'ranks' or 'scores', or 'chosen'/'rejected')")

    completions = row[COMPLETIONS]
    if not isinstance(completions, (list, tuple)):
        _fail(index, COMPLETIONS, f"expected a list, got {type(completions).__name__}")
    if len(completions) < 2:
        _fail(index, COMPLETIONS, f"needs at least 2 completions to rank, got {len(completions)}")
    for k, completion in enumerate(completions):
        _check_text(completion, index, f"{COMPLETIONS}[{k}]", conversational)

    ranks, scores = row.get(RANKS), row.get(SCORES)
    if ranks is not None and scores is not None:
        _fail(index, RANKS, "row has both 'ranks' and 'scores'; give one of them")
    if ranks is None and scores is None:
        _fail(index, RANKS, "missing (ranked rows need 'ranks' (0 = best) or 'scores' (higher = better))")
    field, values = (RANKS, ranks) if ranks is not None else (SCORES, scores)
    if not isinstance(values, (list, tuple)):
        _fail(index, field, f"expected a list, got {type(values).__name__}")
    if len(values) != len(completions):
        _fail(index, field, f"has {len(values)} entries for {len(completions)} completions")
    if field == RANKS:
        for k, rank in enumerate(values):
            if isinstance(rank, bool) or not isinstance(rank, Integral) or rank < 0:
                _fail(index, f"{RANKS}[{k}]", f"ranks must be non-negative integers (0 = best), got {rank!r}")
        dense = dense_ranks(list(values))
    else:
        for k, score in enumerate(values):
            if isinstance(score, bool) or not isinstance(score, Real) or not math.isfinite(score):
                _fail(index, f"{SCORES}[{k}]", f"scores must be finite numbers, got {score!r}")
        dense = dense_ranks([float(s) for s in values], descending=True)
    return {PROMPT: prompt, COMPLETIONS: list(completions), RANKS: dense}


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
    """
    if isinstance(prompt, list):
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
    return prompt_ids[:prompt_len], [ids[prompt_len:] for ids in full]


def prepare_ranked_dataset(dataset, tokenizer, max_length: int | None = None, num_proc=None, name="train"):
    """Validate and tokenize a `datasets.Dataset` of preference rows.

    Returns a dataset with columns ``prompt_ids``, ``completion_ids`` (K lists), ``ranks`` (K dense ranks) and,
    when the input had one, ``ref_logps``. Rows whose completions are all tied (no preference) and rows whose
    prompt alone reaches ``max_length`` are dropped, and their counts are logged. Already-tokenized datasets are
    returned unchanged.
    """
    columns = dataset.column_names
    if all(c in columns for c in TOKENIZED_COLUMNS):
        return dataset

    def tokenize(row, index):
        normalized = normalize_row(row, index)
        prompt_ids, completion_ids = tokenize_ranked(normalized[PROMPT], normalized[COMPLETIONS], tokenizer)
        if REF_LOGPS in row and row[REF_LOGPS] is not None and len(row[REF_LOGPS]) != len(completion_ids):
            _fail(index, REF_LOGPS, f"has {len(row[REF_LOGPS])} entries for {len(completion_ids)} completions")
        return {"prompt_ids": prompt_ids, "completion_ids": completion_ids, "ranks": normalized[RANKS]}

    keep = [c for c in columns if c == REF_LOGPS]
    dataset = dataset.map(
        tokenize,
        with_indices=True,
        remove_columns=[c for c in columns if c not in keep],
        num_proc=num_proc,
        desc=f"Tokenizing {name} preferences",
    )
    before = len(dataset)
    dataset = dataset.filter(lambda ranks: max(ranks) > 0, input_columns="ranks", num_proc=num_proc)
    if len(dataset) < before:
        logger.warning(
            "%s: dropped %d of %d rows whose completions are all tied (no preference to learn).",
            name, before - len(dataset), before,
        )
    if max_length is not None:
        before = len(dataset)
        dataset = dataset.filter(lambda p: len(p) < max_length, input_columns="prompt_ids", num_proc=num_proc)
        if len(dataset) < before:
            logger.warning(
                "%s: dropped %d of %d rows whose prompt alone has max_length=%d tokens or more.",
                name, before - len(dataset), before, max_length,
            )
    if len(dataset) == 0:
        raise PreferenceDataError(f"{name} dataset: no usable rows left after validation (see the warnings above)")
    return dataset


def pad_rows(rows, value: int, width: int | None = None, device=None) -> torch.Tensor:
    """Right-pad lists of ints with ``value`` to ``width`` (default: the longest): a (len(rows), width) long tensor."""
    width = max(len(r) for r in rows) if width is None else width
    return torch.tensor([list(r) + [value] * (width - len(r)) for r in rows], dtype=torch.long, device=device)


def ref_logps_grid(examples: list[dict], max_k: int) -> torch.Tensor:
    """The examples' precomputed ``ref_logps`` as a (B, K_max) float32 grid, 0 in missing slots."""
    grid = torch.zeros((len(examples), max_k), dtype=torch.float32)
    for b, example in enumerate(examples):
        grid[b, : len(example[REF_LOGPS])] = torch.tensor(example[REF_LOGPS], dtype=torch.float32)
    return grid


@dataclass
class RankedCollator:
    """Collate tokenized ranked examples into one batch of ``prompt + completion`` rows.

    Only real completions become rows (no padding rows for lists shorter than the longest), so a batch of lists of
    sizes K_1..K_B has N = sum K_b rows; ``slot_index`` maps each row to its place in the flattened (B, K_max) grid.

    Returns a dict with ``input_ids``, ``attention_mask``, ``completion_mask`` (N, T), right-padded; ``slot_index``
    (N,); ``ranks`` (B, K_max) with -1 in missing slots; and ``ref_logps`` (B, K_max) when the examples carry them.
    """

    pad_token_id: int
    max_length: int | None = None

    def __call__(self, examples: list[dict]) -> dict:
        max_k = max(len(e["completion_ids"]) for e in examples)
        sequences, completion_masks, slots = [], [], []
        ranks = torch.full((len(examples), max_k), -1, dtype=torch.long)
        for b, example in enumerate(examples):
            prompt = list(example["prompt_ids"])
            for k, completion in enumerate(example["completion_ids"]):
                ids = prompt + list(completion)
                mask = [0] * len(prompt) + [1] * len(completion)
                if self.max_length is not None:  # keep the start, like TRL: the prompt survives, the tail goes
                    ids, mask = ids[: self.max_length], mask[: self.max_length]
                sequences.append(ids)
                completion_masks.append(mask)
                slots.append(b * max_k + k)
            ranks[b, : len(example["ranks"])] = torch.tensor(example["ranks"], dtype=torch.long)
        batch = {
            "input_ids": pad_rows(sequences, self.pad_token_id),
            "attention_mask": pad_rows([[1] * len(s) for s in sequences], 0),
            "completion_mask": pad_rows(completion_masks, 0),
            "slot_index": torch.tensor(slots, dtype=torch.long),
            "ranks": ranks,
        }
        if examples[0].get(REF_LOGPS) is not None:
            batch[REF_LOGPS] = ref_logps_grid(examples, max_k)
        return batch
