"""Collating tokenized ranked examples into batches: one ``prompt + completion`` row per completion
(`RankedCollator`), or one packed ``prompt + c_1 + ... + c_K`` row per list (`PackedRankedCollator`, prefix sharing).

The prompt's tokens go through the model once per list; every completion attends to them (and to itself, causally)
through a block attention mask, and its position ids restart right after the prompt, so each completion sees
exactly what it would see in its own row. Gradients flow into the shared prompt positions from all K completions.

Layout of one packed row (P prompt tokens, completions of lengths C_1..C_K, then right padding)::

    tokens      p_0 .. p_{P-1} | c_1 tokens      | c_2 tokens      | ... | pad
    segment     0  ..  0       | 1 ..  1         | 2 ..  2         | ... | -1
    position    0  ..  P-1     | P .. P+C_1-1    | P .. P+C_2-1    | ... | 0

The first token of every completion is predicted by the last prompt position (P-1), the others by the token before
them, so per-completion log-probs come out as (N,) rows in the same order (and ``slot_index``) as
`RankedCollator`, with each completion cut the way that collator cuts it (`dpo_ext.data.lengths.fit_max_length`).

The forward pass over packed rows, and which models support it, are in `dpo_ext.modeling`.
"""

from dataclasses import dataclass

import torch

from dpo_ext.data.lengths import fit_max_length
from dpo_ext.data.rows import EMPTY_PROMPT, PROMPT_IDS, RANKS, REF_LOGPS, ROW_INDEX, SCORES, PreferenceDataError
from dpo_ext.losses import rank_labels


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


def label_grid(examples: list[dict], ranks: torch.Tensor) -> torch.Tensor:
    """(B, K_max) float64 label values: a scored row's ``scores`` as given, a row given by rank its
    `dpo_ext.losses.rank_labels` (so one batch may mix both); 0 in missing slots."""
    grid = rank_labels(ranks, torch.float64)
    for b, example in enumerate(examples):
        if example.get(SCORES) is not None:
            grid[b] = 0.0
            grid[b, : len(example[SCORES])] = torch.tensor(example[SCORES], dtype=torch.float64)
    return grid


def per_list_tensors(examples: list[dict], max_k: int) -> dict:
    """What both collators return per list: ``ranks`` (B, K_max) long with -1 in missing slots; ``scores`` (B, K_max)
    label values (`label_grid`) when any example is a scored row; ``ref_logps`` (B, K_max) float32 (0 in missing
    slots) and ``row_index`` (B,) long, each when the examples carry it."""
    ranks = torch.full((len(examples), max_k), -1, dtype=torch.long)
    for b, example in enumerate(examples):
        ranks[b, : len(example[RANKS])] = torch.tensor(example[RANKS], dtype=torch.long)
    out = {RANKS: ranks}
    if any(example.get(SCORES) is not None for example in examples):
        out[SCORES] = label_grid(examples, ranks)
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
            prompt, kept, _ = fit_max_length(prompt_ids_of(example), example["completion_ids"], self.max_length)
            for k, completion in enumerate(kept):
                sequences.append(prompt + completion)
                completion_masks.append([0] * len(prompt) + [1] * len(completion))
                slots.append(b * max_k + k)
        return {
            "input_ids": pad_rows(sequences, self.pad_token_id),
            "attention_mask": pad_rows([[1] * len(s) for s in sequences], 0),
            "completion_mask": pad_rows(completion_masks, 0),
            "slot_index": torch.tensor(slots, dtype=torch.long),
            **per_list_tensors(examples, max_k),
        }


SEGMENT_IDS = "segment_ids"  # the key that marks a collated batch as packed


@dataclass
class PackedRankedCollator:
    """Collate tokenized ranked examples into one packed ``prompt + c_1 + ... + c_K`` row per list.

    Returns a dict with ``input_ids``, ``position_ids``, ``segment_ids`` (B, L), right-padded (segment -1 is
    padding); ``token_index``, ``predictor_index``, ``token_mask`` (N, C): for token j of completion row n, its flat
    index into the (B * L) packed tokens and the flat index of the position whose logits predict it; plus
    ``slot_index`` (N,), ``ranks`` (B, K_max), ``ref_logps`` and ``row_index`` exactly as `RankedCollator` returns
    them.
    """

    pad_token_id: int
    max_length: int | None = None

    def __call__(self, examples: list[dict]) -> dict:
        max_k = max(len(e["completion_ids"]) for e in examples)
        packed, segments, positions = [], [], []
        completions = []  # per completion row: (list b, start in the packed row, length, prompt length)
        for b, example in enumerate(examples):
            prompt, kept, _ = fit_max_length(prompt_ids_of(example), example["completion_ids"], self.max_length)
            ids, seg, pos = list(prompt), [0] * len(prompt), list(range(len(prompt)))
            for k, completion in enumerate(kept):
                completions.append((b, len(ids), len(completion), len(prompt)))
                ids += completion
                seg += [k + 1] * len(completion)
                pos += range(len(prompt), len(prompt) + len(completion))
            packed.append(ids)
            segments.append(seg)
            positions.append(pos)

        width = max(len(r) for r in packed)
        return {
            "input_ids": pad_rows(packed, self.pad_token_id, width),
            "position_ids": pad_rows(positions, 0, width),
            SEGMENT_IDS: pad_rows(segments, -1, width),
            **_token_indices(completions, width),
            "slot_index": torch.tensor(
                [b * max_k + k for b, e in enumerate(examples) for k in range(len(e["completion_ids"]))],
                dtype=torch.long,
            ),
            **per_list_tensors(examples, max_k),
        }


def _token_indices(completions, width: int) -> dict:
    """Flat (B * L) indices of every completion token and of the position predicting it, (N, C_max) each."""
    c_max = max(1, max(length for _, _, length, _ in completions))
    token_index = torch.zeros((len(completions), c_max), dtype=torch.long)
    predictor_index = torch.zeros_like(token_index)
    token_mask = torch.zeros_like(token_index)
    for n, (b, start, length, prompt_len) in enumerate(completions):
        if length == 0:
            continue
        tokens = torch.arange(start, start + length) + b * width
        predictors = tokens - 1
        predictors[0] = b * width + prompt_len - 1  # the first token is predicted by the last prompt token
        token_index[n, :length], predictor_index[n, :length] = tokens, predictors
        token_mask[n, :length] = 1
    return {"token_index": token_index, "predictor_index": predictor_index, "token_mask": token_mask}


def is_packed(batch: dict) -> bool:
    return SEGMENT_IDS in batch
