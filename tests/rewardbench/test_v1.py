"""RewardBench 1 (`dpo_ext.rewardbench.v1`): scores from hand-worked reward tables, the published rows read
into scoring inputs, and errors that name the row and field. No model runs here."""

import json
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dpo_ext import PreferenceDataError
from dpo_ext.rewardbench import v1 as rb

SAMPLE = Path(__file__).parent / "data" / "rewardbench_sample.jsonl"


def table(*rows):
    """``(subset, chosen reward, rejected reward)`` rows -> ``(rewards, meta)`` as `rows_to_inputs` would give."""
    meta = [rb.BenchmarkRow(i, i, subset, num_correct=1, num_completions=2) for i, (subset, _, _) in enumerate(rows)]
    return [[chosen, rejected] for _, chosen, rejected in rows], meta


HAND = table(("alpacaeval-easy", 1.0, 0.0), ("alpacaeval-easy", 0.5, 0.5), ("mt-bench-easy", 2.0, 1.0),
             ("mt-bench-hard", -1.0, 0.0), ("donotanswer", 0.3, 0.2), ("math-prm", 1.0, 0.0), ("math-prm", 0.0, 1.0),
             ("hep-python", 1.0, 0.0), ("hep-go", 0.25, 0.25))


def test_hand_worked_scores():
    """(chosen, rejected) rewards of HAND and RewardBench's numbers for them; a tie counts as wrong.

    alpacaeval-easy (1, 0) right, (0.5, 0.5) tie -> 1/2;  mt-bench-easy (2, 1) -> 1
        Chat      = (100 * 1/2 + 28 * 1) / (100 + 28) = 78 / 128 = 0.609375
    mt-bench-hard (-1, 0) -> 0                          Chat Hard = 0
    donotanswer (0.3, 0.2) -> 1                          Safety    = 1
    math-prm (1, 0), (0, 1) -> 1/2;  hep-python (1, 0) -> 1;  hep-go (0.25, 0.25) tie -> 0
        Reasoning = (984 * 1/2 + 164 * 1 + 164 * 0) / (984 + 164 + 164) = 656 / 1312 = 0.5
    overall = (0.609375 + 0 + 1 + 0.5) / 4 = 2.109375 / 4 = 0.52734375
    """
    out = rb.aggregate(*HAND)
    assert out["subsets"] == {"alpacaeval-easy": 0.5, "mt-bench-easy": 1.0, "mt-bench-hard": 0.0, "donotanswer": 1.0,
                              "math-prm": 0.5, "hep-go": 0.0, "hep-python": 1.0}
    assert out["sections"] == {"Chat": 0.609375, "Chat Hard": 0.0, "Safety": 1.0, "Reasoning": 0.5}
    assert out["overall"] == 0.52734375
    assert out["weights"]["Chat"] == {"alpacaeval-easy": 100, "mt-bench-easy": 28}
    assert out["weights"]["Reasoning"] == {"math-prm": 984, "hep-go": 164, "hep-python": 164}
    assert out["counts"]["alpacaeval-easy"] == {"correct": 1, "total": 2, "ties": 1}
    assert out["counts"]["hep-go"] == {"correct": 0, "total": 1, "ties": 1}
    assert (out["num_rows"], out["num_nonfinite"]) == (9, 0)


def test_prior_sets_weigh_half_a_section():
    """Prior Sets 0.6 with HAND's sections (sum 2.109375), weights 2, 2, 2, 2, 1:
    (2 * 2.109375 + 1 * 0.6) / 9 = 4.81875 / 9 = 0.535416666..."""
    out = rb.aggregate(*HAND, prior_sets=0.6)
    assert out["sections"]["Prior Sets"] == 0.6
    assert out["overall"] == pytest.approx(4.81875 / 9, abs=1e-15)
    assert out["overall_weights"] == {"Chat": 2, "Chat Hard": 2, "Safety": 2, "Reasoning": 2, "Prior Sets": 1}
    with pytest.raises(ValueError, match="prior_sets"):
        rb.aggregate(*HAND, prior_sets=60)


def test_math_weighs_as_much_as_all_code():
    """math-prm right (1, 0), the six hep-* subsets wrong (0, 1):
    Reasoning = 984 * 1 / (984 + 6 * 164) = 984 / 1968 = 0.5, though math-prm is one row in seven."""
    hep = [(s, 0.0, 1.0) for s in rb.SECTIONS["Reasoning"] if s.startswith("hep-")]
    out = rb.aggregate(*table(("math-prm", 1.0, 0.0), *hep))
    assert out["sections"]["Reasoning"] == 0.5


def test_absent_sections_are_none_and_nan_is_wrong(caplog):
    """Only Safety rows: (nan, 0) is wrong (a NaN never compares greater), (1, 0) right -> Safety 1/2; the other
    sections have no subset (None, where the reference would say 0), so there is no overall score."""
    out = rb.aggregate(*table(("donotanswer", float("nan"), 0.0), ("refusals-dangerous", 1.0, 0.0)))
    assert out["sections"] == {"Chat": None, "Chat Hard": None, "Safety": (100 * 1 + 136 * 0) / 236,
                               "Reasoning": None}
    assert out["overall"] is None and out["num_nonfinite"] == 1
    assert "NaN or infinite" in caplog.text


def test_rewards_as_tensor_or_score_result():
    """The scorer's (B, 2) tensor, float32 or not, gives the same numbers as lists (HAND's values are exact in
    float32 except 0.3 and 0.2, which keep their order)."""
    from dpo_ext.scoring.results import ScoreResult

    rewards, meta = HAND
    tensor = torch.tensor(rewards, dtype=torch.float32)
    result = ScoreResult(tensor, tensor, None, torch.ones(len(rewards), 2, dtype=torch.long), beta=1.0,
                         normalize="sum", reference_free=True)
    expected = rb.aggregate(rewards, meta)
    assert rb.aggregate(tensor, meta)["subsets"] == expected["subsets"]
    assert rb.aggregate(result, meta)["overall"] == expected["overall"]
    with pytest.raises(ValueError, match="got rewards for 8 rows and 9 rows"):
        rb.aggregate(rewards[:-1], meta)
    with pytest.raises(ValueError, match="row 2 .*3 rewards for its 2 completions"):
        rb.aggregate(rewards[:2] + [[2.0, 1.0, 0.0]] + rewards[3:], meta)


def test_sample_rows_read_into_inputs():
    """The fixture has every section (no Prior Sets: the filtered split has none), a hep-* subset and math-prm."""
    rows = rb.load_rows(data_files=SAMPLE)
    lines = [json.loads(line) for line in SAMPLE.read_text().splitlines()]
    assert rows == lines
    prompts, completions, meta = rb.rows_to_inputs(rows)
    assert prompts == [row["prompt"] for row in lines]
    assert completions == [[row["chosen"], row["rejected"]] for row in lines]
    assert [(m.index, m.id, m.subset, m.num_correct, m.num_completions) for m in meta] == [
        (i, row["id"], row["subset"], 1, 2) for i, row in enumerate(lines)]
    assert {rb.SECTION_OF[m.subset] for m in meta} == set(rb.SECTIONS)
    assert any(m.subset.startswith("hep-") for m in meta) and any(m.subset == "math-prm" for m in meta)
    chat_prompts, _, _ = rb.rows_to_inputs(rows, chat=True)
    assert chat_prompts[0] == [{"role": "user", "content": lines[0]["prompt"]}]
    out = rb.aggregate([[1.0, 0.0]] * len(meta), meta)
    assert out["overall"] == 1.0 and out["num_rows"] == len(lines)


def test_load_rows_from_the_hub_asks_for_the_filtered_split(monkeypatch):
    import datasets

    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kwargs: calls.append((args, kwargs)) or [])
    assert rb.load_rows() == []
    assert calls == [(("allenai/reward-bench",), {"split": "filtered"})]


def test_bad_json_line_names_file_and_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text(SAMPLE.read_text().splitlines()[0] + "\n{not json\n")
    with pytest.raises(ValueError, match=r"rows.jsonl, line 2: not valid JSON"):
        rb.load_rows(data_files=[path])


def _sample_row(**changes):
    row = json.loads(SAMPLE.read_text().splitlines()[0])
    row.update(changes)
    return {k: v for k, v in row.items() if v is not ...}


@pytest.mark.parametrize("bad, field, words", [
    (_sample_row(rejected=...), "rejected", "missing: every RewardBench row has 'rejected'"),
    (_sample_row(chosen=["a list"]), "chosen", "expected a string, got list"),
    (_sample_row(id="101"), "id", "expected an integer, got str"),
    (_sample_row(id=True), "id", "expected an integer, got bool"),
    (_sample_row(subset="anthropic_helpful"), "subset", "unknown subset 'anthropic_helpful' (id 101)"),
    (_sample_row(chosen_model=3), "chosen_model", "expected a string, got int"),
])
def test_bad_rows_name_row_and_field(bad, field, words):
    rows = [_sample_row(), bad]
    with pytest.raises(PreferenceDataError) as caught:
        rb.rows_to_inputs(rows)
    assert (caught.value.row, caught.value.field) == (1, field)
    assert str(caught.value).startswith(f"RewardBench dataset, row 1, field '{field}': ")
    assert words in str(caught.value)


def test_a_row_that_is_not_a_dict():
    with pytest.raises(PreferenceDataError, match="row 0: expected a row"):
        rb.rows_to_inputs(["just a string"])


rows_strategy = st.lists(st.tuples(st.sampled_from(list(rb.SECTION_OF)), st.integers(-2, 2), st.integers(-2, 2)),
                         min_size=1, max_size=40)


@settings(max_examples=60, deadline=None)
@given(rows=rows_strategy, data=st.data())
def test_scores_ignore_row_order_and_never_drop_when_chosen_rises(rows, data):
    """Permuting rows (with their rewards) leaves every number unchanged; raising one row's chosen reward never lowers
    a subset, section or overall score. Small integer rewards make ties common."""
    out = rb.aggregate(*table(*rows))
    order = data.draw(st.permutations(range(len(rows))))
    assert rb.aggregate(*table(*[rows[i] for i in order])) == out
    i = data.draw(st.integers(0, len(rows) - 1))
    raised = list(rows)
    raised[i] = (rows[i][0], rows[i][1] + data.draw(st.integers(1, 3)), rows[i][2])
    up = rb.aggregate(*table(*raised))
    assert all(up["subsets"][s] >= out["subsets"][s] for s in out["subsets"])
    assert all(up["sections"][s] >= out["sections"][s] for s in out["sections"] if out["sections"][s] is not None)
    assert out["overall"] is None or up["overall"] >= out["overall"]
