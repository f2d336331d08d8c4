"""RewardBench 2 (`dpo_ext.rewardbench.v2`): scores from hand-worked reward tables (best-of-4 with shared
credit for ties, and the Ties subset's own score), the published rows read into scoring inputs, and errors that name
the row and field. No model runs here."""

import json
import math
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dpo_ext import PreferenceDataError
from dpo_ext.rewardbench import v2 as rb2

SAMPLE = Path(__file__).parent / "data" / "rewardbench2_sample.jsonl"
NAN = float("nan")


def table(*rows):
    """``(subset, id, num_correct, rewards)`` rows, correct answers' rewards first -> ``(rewards, meta)``."""
    meta = [rb2.BenchmarkRow(i, row_id, subset, num_correct, len(values))
            for i, (subset, row_id, num_correct, values) in enumerate(rows)]
    return [list(values) for *_, values in rows], meta


BEST_OF_4 = [("Factuality", "1", 1, [1.0, 0.5, 0.2, 0.1]), ("Factuality", "2", 1, [1.0, 1.0, 0.0, 0.0]),
             ("Precise IF", "3", 1, [0.0, 1.0, 0.0, 0.0]), ("Math", "4", 1, [2.0, 2.0, 2.0, 2.0]),
             ("Safety", "5", 1, [3.0, 1.0, 2.0, 3.0]), ("Focus", "6", 1, [0.5, 0.4, 0.3, 0.2]),
             ("Focus", "7", 1, [NAN, 0.0, 0.0, 0.0])]
TIES = [("Ties", "ref:1", 1, [2.0, 1.0, 0.5]), ("Ties", "tied:1", 3, [3.0, 2.8, 2.5, 1.0]),
        ("Ties", "ref:2", 1, [0.0, 1.0]), ("Ties", "tied:2", 2, [4.0, 2.0, 1.0])]


def test_best_of_4_with_shared_credit_for_ties():
    """A row scores 1 / (completions at the top reward) when its correct answer is among them, else 0.

    Factuality [1 | 0.5, 0.2, 0.1] -> 1;  [1 | 1, 0, 0] two at the top -> 1/2;   Factuality = 3/4
    Precise IF [0 | 1, 0, 0] -> 0                                                 Precise IF = 0
    Math [2 | 2, 2, 2] four at the top -> 1/4                                     Math       = 1/4
    Safety [3 | 1, 2, 3] -> 1/2                                                   Safety     = 1/2
    Focus [0.5 | 0.4, 0.3, 0.2] -> 1;  [nan | 0, 0, 0] -> 0                      Focus      = 1/2
    """
    out = rb2.aggregate(*table(*BEST_OF_4))
    assert out["subsets"] == {"Factuality": 0.75, "Precise IF": 0.0, "Math": 0.25, "Safety": 0.5, "Focus": 0.5}
    assert out["counts"]["Factuality"] == {"rows": 2, "credit": 1.5, "tied_at_top": 1}
    assert out["counts"]["Focus"] == {"rows": 2, "credit": 1.0, "tied_at_top": 0}
    assert out["overall"] is None and out["ties"] is None  # no Ties rows: not all six subsets
    assert out["num_nonfinite"] == 1


def test_ties_score():
    """Rewards written [correct | incorrect]; margin = min(correct) - max(incorrect), spread = max(correct) -
    min(correct), accurate = margin > 0.

    ref:1  [2 | 1, 0.5]         margin 1    accurate
    tied:1 [3, 2.8, 2.5 | 1]    margin 1.5  accurate   spread 0.5
    ref:2  [0 | 1]              margin -1   wrong
    tied:2 [4, 2 | 1]           margin 1    accurate   spread 2
    tied_accuracy = 2/2 = 1, ref_accuracy = 1/2
    id 1: 1.5 > 0.5 yes; min(1, 1.5) = 1 > 0.5 yes; tanh(1 / 0.5 - 1) = tanh(1)
    id 2: 1 > 2 no;      min(-1, 1) = -1 > 2 no;    tanh(-1 / 2 - 1) = tanh(-1.5)
    correctness_preferred = 1/2, correctness_preferred_hard = 1/2, margin score = (tanh(1) + tanh(-1.5)) / 2
    Ties = 0.3 * 1 + 0.3 * 0.5 + 0.2 * 0.5 + 0.2 * 0.5 + 0.01 * (0.761594 - 0.905148) / 2 = 0.649282...
    overall = (3/4 + 0 + 1/4 + 1/2 + 1/2 + 0.649282...) / 6 = 0.441547...
    """
    out = rb2.aggregate(*table(*BEST_OF_4, *TIES))
    margin_score = (math.tanh(1) + math.tanh(-1.5)) / 2
    ties = 0.3 + 0.15 + 0.1 + 0.1 + 0.01 * margin_score
    assert out["ties"]["tied_accuracy"] == 1.0 and out["ties"]["ref_accuracy"] == 0.5
    assert out["ties"]["correctness_preferred"] == 0.5 and out["ties"]["correctness_preferred_hard"] == 0.5
    assert out["ties"]["correctness_margin_score"] == pytest.approx(margin_score, abs=1e-15)
    assert (out["ties"]["num_ref"], out["ties"]["num_tied"], out["ties"]["num_pairs"]) == (2, 2, 2)
    assert out["subsets"]["Ties"] == pytest.approx(ties, abs=1e-15) == pytest.approx(0.6492822295, abs=1e-10)
    assert list(out["subsets"]) == list(rb2.SUBSETS)
    assert out["overall"] == pytest.approx((0.75 + 0 + 0.25 + 0.5 + 0.5 + ties) / 6, abs=1e-15)
    assert out["overall"] == pytest.approx(0.4415470383, abs=1e-10)


def test_ties_with_equal_rewards():
    """Equal rewards in Ties: a correct answer tied with an incorrect one is not accurate; correct answers tied with
    each other have spread 0, and x / 0 is +inf for x > 0 (tanh 1) and 0 / 0 is NaN (counted 0), as numpy divides.

    ref:3  [1 | 0.5]     margin 0.5 accurate     tied:3 [1, 1 | 0]  margin 1 accurate, spread 0
        1 > 0 yes; min(0.5, 1) = 0.5 > 0 yes; tanh(0.5 / 0 - 1) = tanh(inf) = 1
    ref:4  [1 | 1]       margin 0 wrong          tied:4 [2, 1 | 1]  margin 0 wrong, spread 1
        0 > 1 no; 0 > 1 no; tanh(0 / 1 - 1) = tanh(-1)
    ref:5  [0 | 0]       margin 0 wrong          tied:5 [0, 0 | 0]  margin 0 wrong, spread 0
        0 > 0 no; 0 > 0 no; tanh(0 / 0 - 1) = NaN -> 0
    Ties = 0.3 / 3 + 0.3 / 3 + 0.2 / 3 + 0.2 / 3 + 0.01 * (1 + tanh(-1) + 0) / 3 = 1/3 + 0.01 * 0.238406 / 3
    (rewardbench 0.1.4 left the spread-0 ids out of the margin score: it would give 1/3 + 0.01 * tanh(-1).)
    """
    out = rb2.aggregate(*table(
        ("Ties", "ref:3", 1, [1.0, 0.5]), ("Ties", "tied:3", 2, [1.0, 1.0, 0.0]),
        ("Ties", "ref:4", 1, [1.0, 1.0]), ("Ties", "tied:4", 2, [2.0, 1.0, 1.0]),
        ("Ties", "ref:5", 1, [0.0, 0.0]), ("Ties", "tied:5", 2, [0.0, 0.0, 0.0])))
    assert out["ties"]["tied_accuracy"] == out["ties"]["ref_accuracy"] == pytest.approx(1 / 3)
    assert out["ties"]["correctness_preferred"] == out["ties"]["correctness_preferred_hard"] == pytest.approx(1 / 3)
    assert out["ties"]["correctness_margin_score"] == pytest.approx((1 + math.tanh(-1)) / 3, abs=1e-15)
    assert out["subsets"] == {"Ties": pytest.approx(1 / 3 + 0.01 * (1 + math.tanh(-1)) / 3, abs=1e-15)}


def test_ties_terms_with_nothing_to_average_are_zero():
    """Only a tied row, no ref row with its id: tied_accuracy 1 ([2, 1 | 0] margin 1), every other term 0 (the current
    reference gives NaN for the margin terms there) -> Ties = 0.3."""
    out = rb2.aggregate(*table(("Ties", "tied:9", 2, [2.0, 1.0, 0.0])))
    assert out["subsets"]["Ties"] == pytest.approx(0.3, abs=1e-15) and out["ties"]["num_pairs"] == 0


def test_rewards_as_padded_tensor_or_score_result():
    """The scorer's (B, K) NaN-padded rewards (float32) give the numbers lists give (up to float32 rounding)."""
    from dpo_ext.scoring.results import ScoreResult

    rewards, meta = table(*BEST_OF_4, *TIES)
    width = max(map(len, rewards))
    tensor = torch.tensor([r + [NAN] * (width - len(r)) for r in rewards], dtype=torch.float32)  # (B, K)
    num_tokens = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rewards])
    result = ScoreResult(tensor, tensor, None, num_tokens, beta=1.0, normalize="sum", reference_free=True)
    expected = rb2.aggregate(rewards, meta)["subsets"]
    assert rb2.aggregate(tensor, meta)["subsets"] == pytest.approx(expected, abs=1e-7)
    assert rb2.aggregate(result, meta)["subsets"] == pytest.approx(expected, abs=1e-7)
    assert rb2.aggregate(result.tolist(), meta)["subsets"] == pytest.approx(expected, abs=1e-7)
    with pytest.raises(ValueError, match="row 3 .*1 rewards for its 4 completions"):
        rb2.aggregate(rewards[:3] + [[1.0]] + rewards[4:], meta)


def test_sample_rows_read_into_inputs():
    """The fixture has every subset, and a Ties question as a ref row and a tied row with three correct answers."""
    rows = rb2.load_rows(data_files=SAMPLE)
    lines = [json.loads(line) for line in SAMPLE.read_text().splitlines()]
    assert rows == lines
    prompts, completions, meta = rb2.rows_to_inputs(rows)
    assert prompts == [row["prompt"] for row in lines]
    assert completions == [row["chosen"] + row["rejected"] for row in lines]
    assert [(m.index, m.id, m.subset, m.num_correct, m.num_completions) for m in meta] == [
        (i, row["id"], row["subset"], len(row["chosen"]), row["total_completions"]) for i, row in enumerate(lines)]
    assert {m.subset for m in meta} == set(rb2.SUBSETS)
    assert {m.id: m.num_correct for m in meta if m.subset == "Ties"} == {"ref:7": 1, "tied:7": 3}
    chat_prompts, _, _ = rb2.rows_to_inputs(rows, chat=True)
    assert chat_prompts[-1] == [{"role": "user", "content": lines[-1]["prompt"]}]
    # every correct answer far above every incorrect one, correct answers close together: a perfect score
    rewards = [[10.0 - 0.1 * k for k in range(m.num_correct)] + [0.0] * (m.num_completions - m.num_correct)
               for m in meta]
    out = rb2.aggregate(rewards, meta)
    assert out["subsets"]["Ties"] == pytest.approx(0.3 + 0.3 + 0.2 + 0.2 + 0.01 * math.tanh(10.0 / 0.2 - 1))
    assert out["overall"] == pytest.approx((5 + out["subsets"]["Ties"]) / 6)


def test_load_rows_from_the_hub_asks_for_the_test_split(monkeypatch):
    import datasets

    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kwargs: calls.append((args, kwargs)) or [])
    assert rb2.load_rows() == []
    assert calls == [(("allenai/reward-bench-2",), {"split": "test"})]


def _sample_row(line=0, **changes):
    row = json.loads(SAMPLE.read_text().splitlines()[line])
    row.update(changes)
    return {k: v for k, v in row.items() if v is not ...}


@pytest.mark.parametrize("bad, field, words", [
    (_sample_row(prompt=...), "prompt", "missing: every RewardBench 2 row has 'prompt'"),
    (_sample_row(chosen="one answer"), "chosen", "expected a list of strings, got str"),
    (_sample_row(rejected=["no", 2, "no"]), "rejected[1]", "expected a string, got int (id '11')"),
    (_sample_row(num_correct=2), "num_correct", "2, but 'chosen' has 1 completions"),
    (_sample_row(rejected=[], num_incorrect=0, total_completions=1), "rejected", "empty list"),
    (_sample_row(total_completions=5), "total_completions", "5, not num_correct + num_incorrect = 4"),
    (_sample_row(subset="Chat"), "subset", "unknown subset 'Chat' (id '11')"),
    (_sample_row(5, id="7"), "id", "'7' is not a Ties id"),
    (_sample_row(5, id="ref:seven"), "id", "'ref:seven' is not a Ties id"),
    (_sample_row(6, id="ref:7"), "id", "'ref:7' is also the id of row 0"),
    (_sample_row(additional_metadata="none"), "additional_metadata", "expected a dict, got str"),
])
def test_bad_rows_name_row_and_field(bad, field, words):
    rows = [_sample_row(5), bad]  # row 0 is the Ties row "ref:7"
    with pytest.raises(PreferenceDataError) as caught:
        rb2.rows_to_inputs(rows)
    assert (caught.value.row, caught.value.field) == (1, field)
    assert str(caught.value).startswith(f"RewardBench 2 dataset, row 1, field '{field}': ")
    assert words in str(caught.value)


def test_aggregate_refuses_meta_of_another_benchmark():
    with pytest.raises(ValueError, match="not a RewardBench 2 row"):
        rb2.aggregate([[1.0, 0.0]], [rb2.BenchmarkRow(0, 5, "donotanswer", 1, 2)])


small = st.integers(-2, 2).map(float)
plain_rows = st.lists(st.tuples(st.sampled_from(rb2.SUBSETS[:-1]), st.lists(small, min_size=2, max_size=5)),
                      min_size=1, max_size=25)
ties_questions = st.lists(st.tuples(st.lists(small, min_size=2, max_size=3),  # ref: 1 correct, then incorrect
                                    st.integers(2, 3), st.lists(small, min_size=4, max_size=5)),  # tied
                          max_size=6)


def _rows(plain, questions):
    rows = [(subset, str(i), 1, values) for i, (subset, values) in enumerate(plain)]
    for n, (ref, num_correct, tied) in enumerate(questions):
        rows += [("Ties", f"ref:{n}", 1, ref), ("Ties", f"tied:{n}", num_correct, tied)]
    return rows


@settings(max_examples=60, deadline=None)
@given(plain=plain_rows, questions=ties_questions, data=st.data())
def test_scores_ignore_row_order_and_best_of_n_never_drops_when_correct_rises(plain, questions, data):
    """Permuting rows (with their rewards) leaves every score unchanged (up to the order of float sums). Outside
    Ties, raising a row's correct reward never lowers its subset's score. (In Ties it can: raising one correct answer
    above the others widens their spread, which the score penalises.)"""
    rows = _rows(plain, questions)
    out = rb2.aggregate(*table(*rows))
    order = data.draw(st.permutations(range(len(rows))))
    shuffled = rb2.aggregate(*table(*[rows[i] for i in order]))
    assert shuffled["subsets"] == pytest.approx(out["subsets"], abs=1e-12)
    i = data.draw(st.integers(0, len(plain) - 1))
    subset, values = plain[i]
    raised = list(plain)
    raised[i] = (subset, [values[0] + data.draw(st.integers(1, 3))] + values[1:])
    up = rb2.aggregate(*table(*_rows(raised, questions)))
    assert up["subsets"][subset] >= out["subsets"][subset] - 1e-12
