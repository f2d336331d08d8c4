"""The one max_length rule (`dpo_ext.data.lengths.fit_max_length`) and the places that must follow it: both
collators, the scorer's token groups and `validate_rows`' counts."""

import random

import pytest
import torch

from dpo_ext.data.collate import PackedRankedCollator, RankedCollator
from dpo_ext.data.lengths import KeptRow, fit_max_length
from dpo_ext.data.validation import validate_rows
from dpo_ext.scoring.inputs import token_groups


def test_fit_max_length_worked_by_hand():
    """max_length 5: prompt [1, 2] leaves room for 3 completion ids; a prompt of 5 ids leaves none (dropped)."""
    assert fit_max_length([1, 2], [[3, 4, 5, 6], [7]], 5) == KeptRow([1, 2], [[3, 4, 5], [7]], False)
    assert fit_max_length([1, 2, 3, 4, 5, 6], [[7]], 5) == KeptRow([1, 2, 3, 4, 5], [[]], True)
    assert fit_max_length([1, 2, 3, 4], [[7, 8]], 5) == KeptRow([1, 2, 3, 4], [[7]], False)
    assert fit_max_length([1], [[2, 3]], None) == KeptRow([1], [[2, 3]], False)


def _random_rows(seed, n=12):
    rng = random.Random(seed)
    return [([rng.randrange(2, 50) for _ in range(rng.randint(1, 7))],
             [[rng.randrange(2, 50) for _ in range(rng.randint(1, 8))] for _ in range(rng.randint(2, 4))])
            for _ in range(n)]


@pytest.mark.parametrize("max_length", [4, 6, 9])
def test_collators_scorer_and_validate_keep_what_fit_max_length_keeps(max_length):
    rows = [r for r in _random_rows(max_length) if not fit_max_length(*r, max_length).dropped]
    examples = [{"prompt_ids": p, "completion_ids": cs, "ranks": list(range(len(cs)))} for p, cs in rows]
    kept = [fit_max_length(p, cs, max_length) for p, cs in rows]
    want = [len(c) for row in kept for c in row.completion_ids]

    plain = RankedCollator(pad_token_id=0, max_length=max_length)(examples)
    assert plain["completion_mask"].sum(-1).tolist() == want
    packed = PackedRankedCollator(pad_token_id=0, max_length=max_length)(examples)
    assert packed["token_mask"].sum(-1).tolist() == want
    flat = packed["input_ids"].flatten()
    got = [flat[index[mask.bool()]].tolist() for index, mask in zip(packed["token_index"], packed["token_mask"])]
    assert got == [c for row in kept for c in row.completion_ids]

    model = torch.nn.Linear(1, 1)  # no config: no vocabulary or position limit, only max_length applies
    groups, counts, _ = token_groups([p for p, _ in rows], [cs for _, cs in rows], [model], max_length)
    assert counts == want
    assert [g.completion_ids for g in groups] == [row.completion_ids for row in kept]

    everything = [{"prompt_ids": p, "completion_ids": cs, "ranks": list(range(len(cs)))}
                  for p, cs in _random_rows(max_length)]
    report = validate_rows(everything, max_length=max_length)
    fits = [fit_max_length(r["prompt_ids"], r["completion_ids"], max_length) for r in everything]
    assert report.long_prompts == sum(f.dropped for f in fits)
    assert report.truncated_completions == sum(len(k) < len(c) for r, f in zip(everything, fits) if not f.dropped
                                               for k, c in zip(f.completion_ids, r["completion_ids"]))
