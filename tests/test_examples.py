"""The shipped `examples/` folder: its rows are what they say they are, and its configs run, offline on a CPU, by
exactly the commands their headers give (in a copy of the folder, as a reader runs them from the repository root)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures import launch_commands

from dpo_ext.testing import TOY_WORDS, tiny_tokenizer

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def texts(row: dict) -> list[str]:
    return [row["prompt"], *row.get("completions", []), *(row[key] for key in ("chosen", "rejected") if key in row)]


@pytest.mark.parametrize("name, n_rows", [("ranked.jsonl", (12, 20)), ("ranked_test.jsonl", (6, 6))])
def test_rows_cover_every_format_in_the_toy_vocabulary(name, n_rows):
    rows = read_jsonl(EXAMPLES / name)
    assert n_rows[0] <= len(rows) <= n_rows[1]
    assert any("scores" in row for row in rows) and any("chosen" in row for row in rows)
    if name == "ranked.jsonl":  # a tie among ranks
        assert any(len(set(row["ranks"])) < len(row["ranks"]) for row in rows if "ranks" in row)
    assert all(row["prompt"].endswith(" ") for row in rows), "a prompt ending in a space keeps the word boundary"
    tokenizer = tiny_tokenizer()
    for row in rows:
        for text in texts(row):
            assert set(text.split()) <= set(TOY_WORDS), f"{name}: {text!r} has words outside TOY_WORDS"
            assert tokenizer.unk_token_id not in tokenizer(text)["input_ids"], text


def run_header(config: str, folder: Path) -> list[subprocess.CompletedProcess]:
    """The launch commands at the top of ``examples/<config>``, one by one in ``folder`` (a copy of the repository's
    examples/), with this interpreter's `python` and `dpo-ext` first on PATH, as after ``pip install .``."""
    commands = launch_commands(EXAMPLES / config)
    assert commands[0] == "python -m dpo_ext.testing --save toy-base", commands
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(folder / "hf"), "TQDM_DISABLE": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    results = []
    for command in commands:
        result = subprocess.run(["bash", "-c", command], cwd=folder, env=env, capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == 0, f"{config}: `{command}` exited {result.returncode}:\n{result.stderr[-3000:]}"
        results.append(result)
    return results


@pytest.fixture
def examples_copy(tmp_path) -> Path:
    shutil.copytree(EXAMPLES, tmp_path / "examples", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def test_train_yaml_runs_as_its_header_says(examples_copy):
    results = run_header("train.yaml", examples_copy)
    commands = launch_commands(EXAMPLES / "train.yaml")
    assert [command.split()[1:3] for command in commands[1:]] == [
        ["dpo-ext", "validate"], ["dpo-ext", "train"], ["dpo-ext", "score"]]
    base = examples_copy / "toy-base"
    assert (base / "model.safetensors").exists() and not list(base.glob("*.bin"))
    assert "14 rows, 14 usable for training" in results[1].stdout and "OK: training would accept" in results[1].stdout
    run = examples_copy / "toy-run"
    assert (run / "adapter_model.safetensors").exists() and (run / "adapter_config.json").exists()
    assert json.loads((run / "adapter_config.json").read_text())["peft_type"] == "LORA"
    assert json.loads((run / "training_config.json").read_text())["loss_type"] == "plackett_luce"
    evaluation = json.loads((run / "eval_results.json").read_text())
    assert 0.0 <= evaluation["eval_rewards/accuracies"] <= 1.0, evaluation
    assert "toy-run/eval_results.json" in results[2].stdout  # train says where its results went
    scored = read_jsonl(run / "scored.jsonl")
    test_rows = read_jsonl(EXAMPLES / "ranked_test.jsonl")
    assert [row["prompt"] for row in scored] == [row["prompt"] for row in test_rows]
    rewards = []
    for row, source in zip(scored, test_rows):  # a ranked row gets `rewards`, a pairwise one its own two fields
        row_rewards = row["rewards"] if "completions" in source else [row["chosen_reward"], row["rejected_reward"]]
        assert len(row_rewards) == len(source.get("completions", "cr")), row
        rewards += row_rewards
    assert all(isinstance(r, float) for r in rewards) and any(r != 0.0 for r in rewards), rewards


def test_iterate_yaml_runs_as_its_header_says(examples_copy):
    run_header("iterate.yaml", examples_copy)
    rounds = examples_copy / "toy-rounds"
    for r in (1, 2):
        folder = rounds / f"round-{r}"
        assert (folder / "adapter" / "adapter_model.safetensors").exists()
        labelled = read_jsonl(folder / "labelled.jsonl")
        assert len(labelled) == len(read_jsonl(EXAMPLES / "prompts.jsonl"))
        assert all(len(row["scores"]) == len(row["completions"]) == 3 for row in labelled)
        assert "eval_judge_mean" in json.loads((folder / "eval_results.json").read_text())
