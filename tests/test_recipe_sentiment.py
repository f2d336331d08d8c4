"""The controlled-sentiment recipe (recipes/sentiment): configs, small pure helpers, and the --quick run end to end.

The end-to-end test runs the recipe as `make demo` does (a subprocess, offline), at test size, then runs it again
and checks that every cached stage is skipped.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "sentiment"
sys.path.insert(0, str(RECIPE))

import best_of_n  # noqa: E402
import preference_data  # noqa: E402
import recipe_config  # noqa: E402
from fixtures import TOKEN  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json", "eval_results.json", "training_config.json",
                 "tokenizer.json")


def embedded_defaults() -> dict:
    values = {}
    for cls in recipe_config.ARGUMENT_CLASSES:
        values.update({k: v for k, v in vars(cls()).items()})
    return values


def test_default_yaml_is_the_embedded_default():
    config = yaml.safe_load((RECIPE / "configs" / "default.yaml").read_text())
    defaults = embedded_defaults()
    defaults.pop("output_dir")  # given on the command line
    assert config == defaults


@pytest.mark.parametrize("name", ["default.yaml", "quick.yaml", "paper_gpt2_large.yaml"])
def test_config_starts_with_its_command_and_parses(name):
    path = RECIPE / "configs" / name
    first = path.read_text().splitlines()[0]
    assert first.startswith("# ") and "recipes/sentiment/run.py" in first
    assert name in first or (name == "quick.yaml" and "--quick" in first)
    unknown = set(yaml.safe_load(path.read_text())) - set(embedded_defaults())
    assert not unknown, f"{name} sets fields the recipe does not have: {unknown}"


def test_accelerate_configs_start_with_their_command():
    for path in sorted((RECIPE.parent / "accelerate").glob("*.yaml")):
        first = path.read_text().splitlines()[0]
        assert first.startswith("# accelerate launch --config_file recipes/accelerate/" + path.name), path
        assert yaml.safe_load(path.read_text())["distributed_type"]


def test_quick_and_config_are_exclusive():
    with pytest.raises(ValueError, match="--quick"):
        recipe_config.parse_args(["--quick", "--config", "x.yaml"])


def test_split_is_disjoint_and_growing_one_part_moves_no_other():
    import imdb_data

    reviews = [{"text": f"review {i}", "label": i % 2} for i in range(1000)]
    small = recipe_config.DataArguments(sft_reviews=300, classifier_reviews=200, preference_prompts=100,
                                        eval_prompts=50, best_of_n_prompts=20)
    big = recipe_config.DataArguments(**{**vars(small), "preference_prompts": 300})
    a, b = imdb_data.split_reviews(reviews, small, seed=0), imdb_data.split_reviews(reviews, big, seed=0)
    texts = [r["text"] for part in a.values() for r in part]
    assert len(texts) == len(set(texts)) == 300 + 200 + 170
    assert a["sft"] == b["sft"] and a["classifier"] == b["classifier"]
    assert b["prompts"][: len(a["prompts"])] == a["prompts"]
    with pytest.raises(ValueError, match="cannot hold"):
        imdb_data.split_reviews(reviews[:500], small, seed=0)


def test_clean_strips_html_breaks():
    import imdb_data

    assert imdb_data.clean("Great.<br /><br />Really<br/>great.  ") == "Great. Really great."


def test_stage_skips_a_done_folder_and_flags_changed_settings(tmp_path, caplog):
    import logging

    import run

    built = []

    def build(folder):
        built.append(folder)
        (folder / "x.json").write_text("1")

    def load(folder):
        return (folder / "x.json").read_text()

    assert run.stage(1, "demo", tmp_path / "s", build, load, settings={"lr": 1, "seed": 0}) == "1"
    with caplog.at_level(logging.WARNING, logger="sentiment"):
        assert run.stage(1, "demo", tmp_path / "s", build, load, settings={"lr": 2, "seed": 0}) == "1"
    assert len(built) == 1
    assert "lr: 1 -> 2" in caplog.text and "seed" not in caplog.text


def test_every_setting_is_checked_by_some_stage_or_deliberately_not():
    import run

    fields = {k for cls in recipe_config.ARGUMENT_CLASSES[:4] for k in cls.__dataclass_fields__}
    staged = {k for keys in run.STAGE_SETTINGS.values() for k in keys}
    assert staged <= fields and set(run.NOT_SETTINGS) <= fields


def test_pairwise_rows_best_worst_and_adjacent():
    completions, scores = ["a", "b", "c", "d"], [0.2, 0.9, 0.1, 0.5]
    assert preference_data.pairwise_rows("p", completions, scores, "best_worst") == [
        {"prompt": "p", "chosen": "b", "rejected": "c"}]
    adjacent = preference_data.pairwise_rows("p", completions, scores, "adjacent")
    assert [(r["chosen"], r["rejected"]) for r in adjacent] == [("b", "d"), ("d", "a"), ("a", "c")]


def test_best_of_n_picks_by_disjoint_groups():
    """Two prompts, N_max = 4. Truth row 0: [0, 1, 2, 3]; scores favour index 0 in the first pair, 3 in the second.

    N=1: every sample is a group, mean of truth = (0+1+2+3 + 4+5+6+7) / 8 = 3.5.
    N=2: groups (0,1),(2,3) per row; picks by score: row 0 -> truth 0 and 3; row 1 -> truth 4 and 7: mean 3.5.
    N=4: one group per row; argmax score is index 3 in both rows: truth 3 and 7, mean 5.
    """
    truth = torch.tensor([[0.0, 1, 2, 3], [4, 5, 6, 7]])
    scores = torch.tensor([[9.0, 1, 2, 10], [9, 1, 2, 10]])
    assert best_of_n.picks_mean(scores, truth, 1) == pytest.approx(3.5)
    assert best_of_n.picks_mean(scores, truth, 2) == pytest.approx(3.5)
    assert best_of_n.picks_mean(scores, truth, 4) == pytest.approx(5.0)
    assert best_of_n.pair_agreement(truth, truth) == 1.0
    assert best_of_n.pair_agreement(-truth, truth) == 0.0


def test_sampling_is_from_the_untouched_distribution():
    """The KL estimate needs samples from pi itself: the processed scores generate samples from must equal the raw
    logits (no top-k, top-p or temperature warping)."""
    import generation
    from dpo_ext.testing import tiny_model, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    model = tiny_model(tokenizer).eval()
    ids = torch.tensor([tokenizer("the movie was")["input_ids"]] * 3)
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=4,
                         pad_token_id=tokenizer.pad_token_id, output_scores=True, output_logits=True,
                         return_dict_in_generate=True, **generation.SAMPLING)
    assert torch.equal(torch.stack(out.scores), torch.stack(out.logits))


def test_fresh_adapter_has_zero_kl_and_zero_implicit_reward():
    import evaluation
    import generation
    from peft import get_peft_model

    import train_methods
    from dpo_ext.testing import tiny_model, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    lora = recipe_config.LoraArguments(lora_r=4, lora_alpha=8)
    model = get_peft_model(tiny_model(tokenizer), train_methods.lora_config(lora))
    prompts = [tokenizer("the movie was")["input_ids"], tokenizer("i liked it")["input_ids"]]
    point = evaluation.evaluate_policy(model, tokenizer, lambda texts: [0.5] * len(texts), prompts,
                                       samples_per_prompt=3, max_new_tokens=5, seed=0)
    assert point["kl"] == 0.0 and point["num_samples"] == 6 and point["reward"] == 0.5
    completions = [c for row in generation.sample(model, prompts, 2, 5, tokenizer.eos_token_id,
                                                  tokenizer.pad_token_id, seed=1) for c in row]
    rewards = generation.implicit_rewards(model, [p for p in prompts for _ in range(2)], completions, 0.1,
                                          tokenizer.pad_token_id)
    assert torch.equal(rewards, torch.zeros(4))


def test_sequence_logps_match_a_manual_sum():
    """Right padding and the prompt/completion boundary: compare with log-softmax summed by hand, row by row."""
    import generation
    from dpo_ext.testing import tiny_model, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    model = tiny_model(tokenizer).eval()
    prompts = [tokenizer("the movie")["input_ids"], tokenizer("i really liked")["input_ids"]]
    completions = [tokenizer(" was good and fun")["input_ids"], tokenizer(" it")["input_ids"]]
    got = generation.sequence_logps(model, prompts, completions, tokenizer.pad_token_id)
    for row, (prompt, completion) in enumerate(zip(prompts, completions)):
        ids = torch.tensor([prompt + completion])
        with torch.no_grad():
            logps = torch.log_softmax(model(input_ids=ids).logits[0, :-1], -1)  # (T-1, V)
        expected = sum(logps[len(prompt) - 1 + t, tok].item() for t, tok in enumerate(completion))
        assert got[row].item() == pytest.approx(expected, abs=1e-4)


def run_recipe(out: Path, tmp_path: Path, *extra: str, check: bool = True):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"), TOKENIZERS_PARALLELISM="false",
               MPLCONFIGDIR=str(tmp_path / "mpl"))
    result = subprocess.run(
        [sys.executable, str(RECIPE / "run.py"), "--quick", "--output_dir", str(out), *extra],
        env=env, capture_output=True, text=True, timeout=600,
    )
    if check:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return result


def test_push_to_hub_fails_before_any_stage_when_offline(tmp_path):
    out = tmp_path / "sentiment"
    result = run_recipe(out, tmp_path, "--push_to_hub", "--hub_model_id", "my-org/imdb", check=False)
    assert result.returncode != 0
    assert "HF_HUB_OFFLINE" in result.stderr and "Traceback" not in result.stderr
    assert not (out / "data").exists()


def test_quick_run_end_to_end_and_cached_rerun(tmp_path, hub, monkeypatch, capsys):
    # ~25 s on 2 free cores (quick run ~16 s, cached re-run ~8 s), so not marked slow.
    out = tmp_path / "sentiment"
    run_recipe(out, tmp_path)

    results = json.loads((out / "results.json").read_text())
    methods = {r["method"] for r in results["runs"].values()}
    assert methods == set(recipe_config.PREFERENCE_METHODS)
    for name, run in results["runs"].items():
        assert isinstance(run["ground_truth_reward"], float) and 0.0 <= run["ground_truth_reward"] <= 1.0, name
        assert isinstance(run["kl"], float), name
        assert run["checkpoints"] and all({"step", "reward", "kl"} <= set(p) for p in run["checkpoints"]), name
    assert 0.5 < results["reward_model"]["held_out_accuracy"] <= 1.0
    assert set(results["best_of_n"]["picks"]) >= {"ground_truth", "random", "implicit_dpo_beta0.1",
                                                   "implicit_pl_dpo_beta0.1"}
    for plot in ("frontier.png", "best_of_n.png"):
        assert (out / plot).read_bytes()[:8] == PNG_MAGIC, plot
    assert "| run | method |" in (out / "results.md").read_text()
    assert "no explicit license" in (out / "README.md").read_text()
    for name in results["runs"]:
        folder = out / "adapters" / name
        for file in ADAPTER_FILES:
            assert (folder / file).is_file(), f"{folder} lacks {file}"
        assert not (folder / "training_args.bin").exists()
        eval_results = json.loads((folder / "eval_results.json").read_text())
        assert {"ground_truth_reward", "kl"} <= set(eval_results)
        if (folder / "README.md").exists():  # the model card, written through dpo_ext.hub.staging
            assert "ground_truth_reward" in (folder / "README.md").read_text()

    weights = out / "adapters" / "pl_dpo_beta0.1" / "adapter_model.safetensors"
    before = weights.stat().st_mtime_ns
    # The re-run also stages the Hub upload (dry run: no network), which needs only the finished folders.
    result = run_recipe(out, tmp_path, "--push_to_hub", "--hub_model_id", "my-org/imdb", "--hub_dry_run")
    log = result.stdout + result.stderr
    for index, name in [(1, "data"), (2, "tokenizer"), (3, "SFT policy"), (4, "ground-truth reward"),
                        (5, "preference data"), (7, "Best-of-N")]:
        assert f"[{index}/8] {name}: cached" in log, name
    assert "running" not in log
    assert weights.stat().st_mtime_ns == before
    assert json.loads((out / "results.json").read_text())["runs"].keys() == results["runs"].keys()
    staged = out / "hub_dry_run"
    assert (staged / "sft" / "model.safetensors").is_file()
    for name in results["runs"]:
        assert {"adapter_model.safetensors", "adapter_config.json", "README.md"} <= {
            p.name for p in (staged / name).iterdir()}
        assert json.loads((staged / name / "adapter_config.json").read_text())["base_model_name_or_path"] == (
            "my-org/imdb-sft")

    # Publishing a demo-trained adapter is one command; its dry run stages exactly the files the push commits.
    from huggingface_hub import ModelCard

    from dpo_ext.cli import main

    push = ["push", str(out / "adapters" / "pl_dpo_beta0.1"), "--repo-id", "alice/imdb-pl-dpo",
            "--base-model", "alice/imdb-sft", "--endpoint", hub.url]
    assert main(push + ["--dry-run", str(tmp_path / "staged")]) == 0
    dry_run = {p.relative_to(tmp_path / "staged").as_posix(): p.read_bytes()
               for p in (tmp_path / "staged").rglob("*") if p.is_file()}
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert main(push) == 0
    assert hub.files("alice/imdb-pl-dpo") == dry_run
    assert {"eval_results.json", "plots/frontier.png", "README.md"} <= set(dry_run)
    card = ModelCard(dry_run["README.md"].decode())
    metrics = {m["type"] for r in card.data.to_dict()["model-index"][0]["results"] for m in r["metrics"]}
    assert {"ground_truth_reward", "kl"} <= metrics
