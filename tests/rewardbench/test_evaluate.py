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
    assert record["chat_template"] == "none"  # prompts were given as text: no template was rendered (see --chat)
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


def test_cli_tokenization_option_reaches_the_scorer(adapter, tmp_path, caplog):
    """--tokenization rewardbench scores other tokens (BOS first, EOS always appended): the CLI's scores are those of
    a scorer built with that option. The adapter's tokenizer has no BOS token: RewardBench puts its EOS first."""
    outputs = {}
    for convention in ("trl", "rewardbench"):
        out = tmp_path / f"{convention}.json"
        assert main(["eval", "--benchmark", "rewardbench", adapter, "--input", str(FIXTURES["rewardbench"][1]),
                     "--tokenization", convention, "-o", str(out)]) == 0
        outputs[convention] = json.loads(out.read_text())["results"]
    # RewardBench renders every row with a chat template: without --chat the numbers are not its leaderboard's
    assert "--tokenization rewardbench without --chat" in caplog.text
    scorer = ImplicitRewardScorer.from_pretrained(adapter, device="cpu", tokenization="rewardbench")
    assert scorer.tokenizer.bos_token is None
    expected = evaluate_rewardbench(scorer, "rewardbench", v1.load_rows(data_files=str(FIXTURES["rewardbench"][1])))
    assert outputs["rewardbench"]["subsets"] == expected["subsets"]
    for convention in ("trl", "rewardbench"):  # the flag reaches the scorer the command builds
        args = build_parser().parse_args(["eval", "--benchmark", "rewardbench", adapter, "--tokenization", convention])
        assert scorer_from_arguments(args).tokenization == convention


# A template like Qwen2.5's in shape (no BOS written, a header per turn, an end-of-turn token), in the toy vocabulary
CHAT_TEMPLATE = ("{% for m in messages %}{% if m['role'] == 'user' %}i{% else %}we{% endif %} {{ m['content'] }} "
                 "<eos> {% endfor %}{% if add_generation_prompt %}we {% endif %}")


def rewardbench_chat_ids(tokenizer, prompt: str, answer: str) -> tuple[list[int], list[int]]:
    """RewardBench 0.1.4's ids for one row, built here step by step for this test's case (a word-level tokenizer, so no
    token merges across the prompt's end; a tokenizer without BOS; rows far below 2048 tokens): run_dpo.py renders
    the user message without the generation prompt (``prepare_dialogue_from_tokenizer``) as the prompt and the whole
    conversation as the completion, and ``tokenize_row`` drops the prompt text from the completion, tokenizes without
    special tokens, puts the BOS id (here the EOS id, run_dpo.py's BOS for a tokenizer without one) first and the EOS
    id last."""
    user = [{"role": "user", "content": prompt}]
    prompt_text = tokenizer.apply_chat_template(user, tokenize=False)
    conversation = tokenizer.apply_chat_template(user + [{"role": "assistant", "content": answer}], tokenize=False)
    assert conversation.startswith(prompt_text) and tokenizer.bos_token is None
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(conversation[len(prompt_text):], add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    return [eos] + prompt_ids, answer_ids + [eos]


def test_cli_chat_reproduces_rewardbench_on_its_rows(adapter, tmp_path, monkeypatch):
    """The README's leaderboard command (--tokenization rewardbench --chat) on RewardBench rows: every reward it scores
    equals beta times the one computed from RewardBench's own ids (built independently above, one forward per
    completion: log pi - log pi_ref summed over the completion), and its scores are the benchmark's aggregate of
    them."""
    import shutil

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter = shutil.copytree(adapter, tmp_path / "adapter")
    tokenizer = AutoTokenizer.from_pretrained(adapter)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(adapter)
    scored = []
    score = ImplicitRewardScorer.score
    monkeypatch.setattr(ImplicitRewardScorer, "score",
                        lambda scorer, *a, **k: scored.append((scorer.beta, score(scorer, *a, **k))) or scored[-1][1])
    out = tmp_path / "rb.json"
    assert main(["eval", "--benchmark", "rewardbench", str(adapter), "--input", str(FIXTURES["rewardbench"][1]),
                 "--tokenization", "rewardbench", "--chat", "--device", "cpu", "-o", str(out)]) == 0
    written = json.loads(out.read_text())
    assert written["leaderboard"]["chat_template"] == "tokenizer"

    base = json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter).eval()

    @torch.no_grad()
    def completion_logp(prompt_ids, completion_ids):
        ids = torch.tensor([prompt_ids + completion_ids])  # (1, T)
        logps = model(input_ids=ids).logits[0, :-1].log_softmax(-1)  # (T - 1, V): position t predicts token t + 1
        return float(logps[len(prompt_ids) - 1:].gather(-1, ids[0, len(prompt_ids):, None]).sum())

    def reward(prompt, answer):
        ids = rewardbench_chat_ids(tokenizer, prompt, answer)
        with model.disable_adapter():
            ref = completion_logp(*ids)
        return completion_logp(*ids) - ref

    rows = v1.load_rows(data_files=str(FIXTURES["rewardbench"][1]))
    expected = [[reward(row["prompt"], row["chosen"]), reward(row["prompt"], row["rejected"])] for row in rows]
    ((beta, result),) = scored
    expected = [[beta * reward for reward in pair] for pair in expected]  # RewardBench's are without beta
    assert result.tolist() == [pytest.approx(pair, abs=1e-4 * beta) for pair in expected]  # float32 sums, ~60 tokens
    assert written["results"]["subsets"] == v1.aggregate(result, v1.rows_to_inputs(rows)[2])["subsets"]


def test_no_rows_is_an_error_not_a_table_of_n_a(tmp_path):
    with pytest.raises(ValueError, match="no rows to score"):
        evaluate_rewardbench(None, "rewardbench", rows=[])
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="empty.jsonl: no rows"):
        evaluate_rewardbench(None, "rewardbench2", data_files=str(empty))
