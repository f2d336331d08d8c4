"""RewardBench 1 and 2 scored end to end with a saved tiny adapter: `evaluate_rewardbench` and `dpo-ext eval
--benchmark` (fixtures in the benchmarks' published schemas, local files in place of the Hub)."""

import json
from pathlib import Path

import pytest
import yaml

from fixtures import save_base_and_adapter
from dpo_ext.cli import build_parser, main
from dpo_ext.cli.common import scorer_from_arguments
from dpo_ext.rewardbench import v1, v2
from dpo_ext.rewardbench.evaluate import evaluate_rewardbench, leaderboard_record
from dpo_ext.scoring.scorer import ImplicitRewardScorer

DATA = Path(__file__).resolve().parent / "data"
FIXTURES = {"rewardbench": (v1, DATA / "rewardbench_sample.jsonl"),
            "rewardbench2": (v2, DATA / "rewardbench2_sample.jsonl")}


@pytest.fixture(scope="module")
def adapter(tokenizer, tmp_path_factory):
    """A saved LoRA adapter with non-zero weights (its rewards are not all zero)."""
    root = save_base_and_adapter(tokenizer, tmp_path_factory.mktemp("rewardbench_adapter"), lora_scale=0.5, seed=0,
                                 adapter_tokenizer=True)
    return str(root / "adapter")


@pytest.mark.parametrize("benchmark", ["rewardbench", "rewardbench2"])
def test_scores_are_the_aggregate_of_each_rows_own_rewards(adapter, benchmark):
    """The rewards of all rows scored in one call (batched, prompts shared) equal each row scored alone, correct
    completions first; the evaluation is the benchmark's aggregate of them. (Scores are compared on the batched
    rewards: this toy tokenizer maps unknown words to one token, so different texts can tie exactly when scored alone
    and differ by 1e-7 in a batch, and a tie moves a best-of-4 score.)"""
    module, path = FIXTURES[benchmark]
    scorer = ImplicitRewardScorer.from_pretrained(adapter, device="cpu")
    rows = module.load_rows(data_files=str(path))
    results = evaluate_rewardbench(scorer, benchmark, rows)
    prompts, completions, meta = module.rows_to_inputs(rows)
    batched = scorer.score(prompts, completions).rewards
    for i, (prompt, row_completions) in enumerate(zip(prompts, completions)):
        alone = scorer.score([prompt], [row_completions]).rewards[0, :len(row_completions)]
        assert batched[i, :len(row_completions)].tolist() == pytest.approx(alone.tolist(), abs=1e-5)
    expected = module.aggregate(batched, meta)
    assert results["subsets"] == expected["subsets"] and results["overall"] == expected["overall"]
    assert results["split"] == "rows given" and results["num_rows"] == len(rows)
    assert batched.nan_to_num().abs().max() > 1e-3  # the adapter is not a no-op


def test_cli_writes_the_leaderboard_record_and_prints_the_table(adapter, tmp_path, capsys):
    out = tmp_path / "rb2.json"
    assert main(["eval", "--benchmark", "rewardbench2", adapter, "--input", str(FIXTURES["rewardbench2"][1]),
                 "-o", str(out)]) == 0
    written = json.loads(out.read_text())
    record, results = written["leaderboard"], written["results"]
    assert record["model"] == adapter and record["model_type"] == "DPO" and "ref_model" not in record
    assert {k: record[k] for k in results["subsets"]} == results["subsets"]
    assert set(results["subsets"]) == set(v2.SUBSETS)  # the fixture has every subset, Ties included
    table = capsys.readouterr().out
    assert "| **rewardbench2 overall** |" in table and "| Ties |" in table
    # The same file publishes the scores on the card, under the benchmark's dataset id
    staged = tmp_path / "staged"
    assert main(["push", adapter, "--repo-id", "me/tiny-dpo", "--base-model", "me/tiny-base", "--beta", "0.1",
                 "--eval-results", str(out), "--dry-run", str(staged)]) == 0
    card = (staged / "README.md").read_text()
    head = yaml.safe_load(card.split("---")[1])
    (group,) = [r for r in head["model-index"][0]["results"] if r["dataset"]["type"] == "allenai/reward-bench-2"]
    reported = {m["type"]: m["value"] for m in group["metrics"]}
    assert reported["overall"] == pytest.approx(results["overall"])
    assert reported["Ties"] == pytest.approx(results["subsets"]["Ties"])


def test_leaderboard_record_of_rewardbench_names_the_reference():
    results = {"benchmark": "rewardbench", "subsets": {"alpacaeval-easy": 0.5}}
    assert leaderboard_record(results, "me/adapter", "base/model") == {
        "model": "me/adapter", "ref_model": "base/model", "model_type": "DPO", "chat_template": "tokenizer",
        "alpacaeval-easy": 0.5}
    assert leaderboard_record(results, "me/adapter", None, reference_free=True)["model_type"] == "DPO Ref. Free"


def test_unknown_benchmark_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="unknown benchmark 'rb3': choose one of rewardbench, rewardbench2"):
        evaluate_rewardbench(None, "rb3", rows=[])


def test_cli_tokenization_option_reaches_the_scorer(adapter, tmp_path):
    """--tokenization rewardbench scores other tokens (BOS first, EOS always appended): the CLI's scores are those of
    a scorer built with that option. (RewardBench needs a BOS token: this copy of the adapter's tokenizer uses EOS.)"""
    import shutil

    from transformers import AutoTokenizer

    adapter = str(shutil.copytree(adapter, tmp_path / "adapter"))
    tokenizer = AutoTokenizer.from_pretrained(adapter)
    tokenizer.bos_token = tokenizer.eos_token
    tokenizer.save_pretrained(adapter)
    outputs = {}
    for convention in ("trl", "rewardbench"):
        out = tmp_path / f"{convention}.json"
        assert main(["eval", "--benchmark", "rewardbench", adapter, "--input", str(FIXTURES["rewardbench"][1]),
                     "--tokenization", convention, "-o", str(out)]) == 0
        outputs[convention] = json.loads(out.read_text())["results"]
    scorer = ImplicitRewardScorer.from_pretrained(adapter, device="cpu", tokenization="rewardbench")
    expected = evaluate_rewardbench(scorer, "rewardbench", v1.load_rows(data_files=str(FIXTURES["rewardbench"][1])))
    assert outputs["rewardbench"]["subsets"] == expected["subsets"]
    for convention in ("trl", "rewardbench"):  # the flag reaches the scorer the command builds
        args = build_parser().parse_args(["eval", "--benchmark", "rewardbench", adapter, "--tokenization", convention])
        assert scorer_from_arguments(args).tokenization == convention
