"""`dpo-ext score / rerank / eval` on a tiny saved adapter, and their error messages."""

import json
import subprocess
import sys

import pytest
from fixtures import save_base_and_adapter

from dpo_ext.cli import main
from dpo_ext.data.rows import PreferenceDataError
from dpo_ext.scoring.evaluation import evaluate_preferences
from dpo_ext.scoring.scorer import ImplicitRewardScorer

ROWS = [
    {"prompt": "the movie was", "completion": " good fun"},
    {"prompt": "i saw it and", "completions": [" great", " bad plot", " fine"]},
    {"prompt": "they liked the", "chosen": " film and the music", "rejected": " awful"},
]
PAIRS = [{"prompt": "the movie was", "chosen": " good", "rejected": " bad"},
         {"prompt": "we saw", "chosen": " great fun", "rejected": " boring"},
         {"prompt": "i really", "chosen": " loved it", "rejected": " hated it"}]


@pytest.fixture(scope="module")
def saved(tokenizer, tmp_path_factory):
    """A base model directory and a non-zero LoRA adapter saved on it."""
    return save_base_and_adapter(tokenizer, tmp_path_factory.mktemp("cli_models"), ["c_attn", "c_proj"], lora_scale=0.3)


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_score_writes_rewards_equal_to_the_library(saved, tmp_path):
    out = tmp_path / "scored.jsonl"
    assert main(["score", str(saved / "adapter"), "-i", _jsonl(tmp_path / "in.jsonl", ROWS), "-o", str(out)]) == 0
    scored = _read(out)
    scorer = ImplicitRewardScorer.from_pretrained(str(saved / "adapter"), device="cpu")
    assert scored[0]["prompt"] == ROWS[0]["prompt"] and scored[0]["completion"] == ROWS[0]["completion"]
    expected = scorer.score(["the movie was"], [" good fun"]).rewards
    assert scored[0]["reward"] == pytest.approx(float(expected[0]), abs=1e-6)
    expected = scorer.score([ROWS[1]["prompt"]], [ROWS[1]["completions"]]).rewards[0]
    assert scored[1]["rewards"] == pytest.approx(expected.tolist(), abs=1e-6)
    assert len(scored[1]["policy_logps"]) == len(scored[1]["ref_logps"]) == 3
    assert {"chosen_reward", "rejected_reward"} <= set(scored[2])
    assert any(abs(r["reward"]) > 1e-4 for r in scored[:1])  # the adapter is not a no-op


def test_rerank_samples_or_reranks_and_keeps_the_best(saved, tmp_path):
    from dpo_ext.sampling import shard_seed

    rows = [{"prompt": "the movie was"}, {"prompt": "i saw", "candidates": [" good", " bad", " fine fun"]}]
    out = tmp_path / "best.jsonl"
    assert main(["rerank", str(saved / "adapter"), "-i", _jsonl(tmp_path / "p.jsonl", rows), "-o", str(out),
                 "--n", "3", "--max-new-tokens", "4", "--seed", "3"]) == 0
    sampled, given = _read(out)
    # the same samples and rewards as the Python API gives with the same seed, and the best is the API's best
    scorer = ImplicitRewardScorer.from_pretrained(str(saved / "adapter"), device="cpu")
    # row 0 is sampled alone on seed shard_seed(3, 0), whatever the global random state
    expected = scorer.best_of_n(["the movie was"], 3, generation_config={"max_new_tokens": 4},
                                seed=shard_seed(3, 0))[0]
    assert sampled["candidates"] == [c.completion for c in expected.candidates]
    assert sampled["rewards"] == pytest.approx([c.reward for c in expected.candidates], abs=1e-6)
    assert (sampled["best"], sampled["best_reward"]) == (expected.best.completion,
                                                         pytest.approx(expected.best.reward, abs=1e-6))
    # given candidates: input order kept, rewards as scored independently, best = the highest of those
    rewards = scorer.score(["i saw"], [rows[1]["candidates"]]).rewards[0]
    assert given["candidates"] == rows[1]["candidates"]
    assert given["rewards"] == pytest.approx(rewards.tolist(), abs=1e-6)
    assert len(set(rewards.tolist())) == 3  # no tie, so the best is unambiguous
    assert given["best"] == rows[1]["candidates"][int(rewards.argmax())]


def test_eval_prints_and_writes_preference_accuracy(saved, tmp_path, capsys):
    out = tmp_path / "metrics.json"
    assert main(["eval", str(saved / "adapter"), "-i", _jsonl(tmp_path / "pairs.jsonl", PAIRS), "-o", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text())
    scorer = ImplicitRewardScorer.from_pretrained(str(saved / "adapter"), device="cpu")
    rewards = scorer.score([r["prompt"] for r in PAIRS], [[r["chosen"], r["rejected"]] for r in PAIRS]).rewards
    assert printed["num_rows"] == 3
    assert printed["accuracy"] == pytest.approx(float((rewards[:, 0] > rewards[:, 1]).float().mean()))
    assert printed["rewards/margins"] == pytest.approx(float((rewards[:, 0] - rewards[:, 1]).mean()), abs=1e-6)


def test_eval_accuracy_of_pairs_and_their_swaps_is_one_half(saved, tmp_path, capsys):
    """Each pair and its swap (chosen <-> rejected) get opposite answers unless their rewards tie, and a tie counts
    as wrong: with no tie, exactly 3 of these 6 rows are right (accuracy 0.5) and the margins cancel (mean 0)."""
    swapped = [{**r, "chosen": r["rejected"], "rejected": r["chosen"]} for r in PAIRS]
    assert main(["eval", str(saved / "adapter"), "-i", _jsonl(tmp_path / "both.jsonl", PAIRS + swapped)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (printed["num_rows"], printed["accuracy"]) == (6, 0.5)
    assert printed["rewards/margins"] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("rows, message", [
    ([{"completion": " good"}], "in.jsonl, line 1, field 'prompt': missing (every row needs a prompt)"),
    ([ROWS[0], {"prompt": "the movie", "text": " good"}], "in.jsonl, line 2: no 'completion', 'completions' or "
                                                          "'chosen'/'rejected' field (fields present: prompt, text)"),
    ([{"prompt": "the", "completions": [" good", "  "]}], "line 1, field 'completions[1]': empty completion"),
    ([{"prompt": "the", "chosen": " good"}], "line 1, field 'rejected': missing"),
    ([ROWS[0], {"prompt": " ", "completion": " good"}], "in.jsonl, line 2, field 'prompt': empty prompt"),
])
def test_score_errors_name_the_line_and_field(saved, tmp_path, capsys, rows, message):
    code = main(["score", str(saved / "adapter"), "-i", _jsonl(tmp_path / "in.jsonl", rows),
                 "-o", str(tmp_path / "out.jsonl")])
    assert code == 2
    assert message in capsys.readouterr().err


def test_input_and_model_errors(saved, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "completion": " b"}\n{"prompt": \n')
    assert main(["score", str(saved / "adapter"), "-i", str(bad), "-o", str(tmp_path / "o.jsonl")]) == 2
    assert "bad.jsonl, line 2: not valid JSON" in capsys.readouterr().err

    assert main(["score", str(saved / "adapter"), "-i", str(tmp_path / "missing.jsonl"), "-o", "x"]) == 2
    assert "missing.jsonl: no such file" in capsys.readouterr().err
    assert main(["score", str(saved / "adapter"), "-i", "someone/no-such-dataset", "-o", "x"]) == 2  # offline
    assert "could not load the Hub dataset 'someone/no-such-dataset' (split 'train')" in capsys.readouterr().err

    pairs = _jsonl(tmp_path / "pairs.jsonl", PAIRS)
    assert main(["eval", str(saved / "base"), "-i", pairs]) == 2  # a full model: no built-in reference
    err = capsys.readouterr().err
    assert f"{saved / 'base'} is not a PEFT adapter" in err and "--ref-model" in err
    assert main(["eval", str(saved / "base"), "-i", pairs, "--reference-free"]) == 0
    capsys.readouterr()
    assert main(["eval", str(saved / "base"), "-i", pairs, "--ref-model", str(saved / "base")]) == 0
    assert json.loads(capsys.readouterr().out)["rewards/margins"] == 0.0  # the model against itself

    assert main(["eval", str(tmp_path / "no_such_adapter"), "-i", pairs]) == 2
    assert "no_such_adapter: no such directory" in capsys.readouterr().err
    ranked = _jsonl(tmp_path / "ranked.jsonl", [{"prompt": "a", "completions": [" good", " bad"], "ranks": [0]}])
    assert main(["eval", str(saved / "adapter"), "-i", ranked]) == 2
    assert "ranked.jsonl, line 1, field 'ranks': has 1 entries for 2 completions" in capsys.readouterr().err


def test_the_scorer_refuses_empty_prompts_like_the_trainer(saved):
    scorer = ImplicitRewardScorer.from_pretrained(str(saved / "adapter"), device="cpu")
    with pytest.raises(PreferenceDataError, match=r"^prompt 1: empty prompt.*BOS token") as info:
        scorer.score(["the movie", " "], [" good", " bad"])
    assert (info.value.row, info.value.field) == (1, "prompt")
    with pytest.raises(PreferenceDataError, match=r"^prompt 1: empty prompt_ids"):
        scorer.score_tokens([[5], []], [[[6, 1]], [[7, 1]]])
    with pytest.raises(PreferenceDataError, match=r"^prompt 0: the prompt is a list of chat messages but the "
                                                  r"tokenizer has no chat template"):
        scorer.score([[{"role": "user", "content": "the movie"}]], [" good"])


def test_eval_skips_rows_without_preference_instead_of_counting_them_wrong(saved, tmp_path, capsys, caplog):
    rows = PAIRS + [{"prompt": "we saw", "chosen": " fun", "rejected": " fun"},  # identical: no information
                    {"prompt": "i saw", "completions": [" good", " bad", " good"], "ranks": [0, 1, 1]}]
    assert main(["eval", str(saved / "adapter"), "-i", _jsonl(tmp_path / "pairs.jsonl", rows)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (printed["num_rows"], printed["num_skipped"]) == (4, 1)
    assert "skipped 1 of 5 rows with no preference (1 whose completions are all identical)" in caplog.text
    assert "collapsed 2 identical completions" in caplog.text
    scorer = ImplicitRewardScorer.from_pretrained(str(saved / "adapter"), device="cpu")
    rewards = evaluate_preferences(scorer, rows, return_rewards=True)["rewards"]
    assert [len(r) for r in rewards] == [2, 2, 2, 2]  # ' good' of the last row is scored once


def test_eval_errors_name_the_line_of_the_input(saved, tmp_path, capsys):
    rows = PAIRS + [{"prompt": "", "chosen": " good", "rejected": " bad"}]
    assert main(["eval", str(saved / "adapter"), "-i", _jsonl(tmp_path / "pairs.jsonl", rows)]) == 2
    assert "pairs.jsonl, line 4, field 'prompt': empty prompt" in capsys.readouterr().err
    long = [PAIRS[0], {**PAIRS[1], "rejected": " good" * 70}]  # found by the scorer, named by the row's own field
    assert main(["eval", str(saved / "adapter"), "-i", _jsonl(tmp_path / "long.jsonl", long)]) == 2
    assert "long.jsonl, line 2, field 'rejected': prompt + completion is" in capsys.readouterr().err
    # a scorer error (over the model's positions) about the 2nd scored row: named by its dataset row
    rows = [{"prompt": "a", "chosen": " b", "rejected": " b"}, PAIRS[0], {**PAIRS[1], "chosen": " good" * 70}]
    scorer = ImplicitRewardScorer.from_pretrained(str(saved / "adapter"), device="cpu")
    with pytest.raises(PreferenceDataError, match=r"^row 2, field 'completions\[0\]': prompt \+ completion is"):
        evaluate_preferences(scorer, rows)
    # identical completions are scored once: the error names the completion's position in the input row
    rows = [PAIRS[0], {"prompt": "we saw", "completions": [" fun", " fun", " good" * 70], "ranks": [0, 0, 1]}]
    with pytest.raises(PreferenceDataError, match=r"^row 1, field 'completions\[2\]': prompt \+ completion is") as info:
        evaluate_preferences(scorer, rows)
    assert (info.value.row, info.value.completion) == (1, 2)


def test_help_lists_the_commands_without_importing_torch():
    code = ("import sys; from dpo_ext.cli import build_parser; h = build_parser().format_help(); "
            "print(all(c in h for c in ('score', 'rerank', 'eval')), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "False"]


@pytest.mark.parametrize("command", ["score", "rerank", "eval"])
def test_an_output_directory_is_refused_before_the_model_loads(saved, tmp_path, capsys, monkeypatch, command):
    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the output path was checked")

    monkeypatch.setattr(ImplicitRewardScorer, "from_pretrained", no_model)
    out_dir = tmp_path / "results"
    out_dir.mkdir()
    pairs = _jsonl(tmp_path / "pairs.jsonl", PAIRS)
    assert main([command, str(saved / "adapter"), "-i", pairs, "-o", str(out_dir)]) == 2
    assert f"--output {out_dir} is a directory" in capsys.readouterr().err
