"""`dpo-ext score / rerank / eval` on a tiny saved adapter, and their error messages."""

import json
import subprocess
import sys

import pytest
import torch
from peft import LoraConfig, get_peft_model

from conftest import make_model
from dpo_ext.cli import main
from dpo_ext.scoring import ImplicitRewardScorer

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
    root = tmp_path_factory.mktemp("cli_models")
    base = make_model(tokenizer)
    base.save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(root / "base"),
                           LoraConfig(r=4, target_modules=["c_attn", "c_proj"], fan_in_fan_out=True))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.3)
    model.save_pretrained(root / "adapter")
    return root


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
    rows = [{"prompt": "the movie was"}, {"prompt": "i saw", "candidates": [" good", " bad", " fine fun"]}]
    out = tmp_path / "best.jsonl"
    assert main(["rerank", str(saved / "adapter"), "-i", _jsonl(tmp_path / "p.jsonl", rows), "-o", str(out),
                 "--n", "3", "--max-new-tokens", "4"]) == 0
    sampled, given = _read(out)
    assert len(sampled["candidates"]) == len(sampled["rewards"]) == 3
    assert sampled["best_reward"] == max(sampled["rewards"])
    assert given["candidates"] == rows[1]["candidates"]  # input order kept
    assert given["best"] == given["candidates"][given["rewards"].index(max(given["rewards"]))]


def test_eval_prints_and_writes_preference_accuracy(saved, tmp_path, capsys):
    out = tmp_path / "metrics.json"
    assert main(["eval", str(saved / "adapter"), "-i", _jsonl(tmp_path / "pairs.jsonl", PAIRS), "-o", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text())
    assert printed["num_rows"] == 3 and 0.0 <= printed["accuracy"] <= 1.0
    assert printed["accuracy"] * 3 == pytest.approx(round(printed["accuracy"] * 3))


@pytest.mark.parametrize("rows, message", [
    ([{"completion": " good"}], "in.jsonl, line 1: field 'prompt' is missing"),
    ([ROWS[0], {"prompt": "the movie", "text": " good"}], "in.jsonl, line 2: no 'completion', 'completions' or "
                                                          "'chosen'/'rejected' field (fields present: prompt, text)"),
    ([{"prompt": "the", "completions": [" good", "  "]}], "line 1: field 'completions[1]' is an empty completion"),
    ([{"prompt": "the", "chosen": " good"}], "line 1: field 'rejected' is missing"),
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
    assert "ranked.jsonl, line 1: row 0, field 'ranks': has 1 entries for 2 completions" in capsys.readouterr().err


def test_help_lists_the_commands_without_importing_torch():
    code = ("import sys; from dpo_ext.cli import build_parser; h = build_parser().format_help(); "
            "print(all(c in h for c in ('score', 'rerank', 'eval')), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "False"]
