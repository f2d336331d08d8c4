"""The recipe's cached stages (`recipe_kit.cached_stages`): each writes one sub-folder of the output folder and a
``.done`` marker recording the settings below; a re-run skips it, with a warning if they changed. Jobs of the pool
(`recipe_kit.pool.JobPool`) start from the finished stages' folders (`outputs`): nothing but paths and settings crosses
a process boundary.
"""

import json
import logging
from functools import partial
from pathlib import Path
from types import SimpleNamespace

from recipe_kit import cached_stages

logger = logging.getLogger("sentiment")
NUM_STAGES = 8
# Settings each stage reads, in stage order; a stage depends on its own and every earlier stage's. Training and
# Best-of-N depend on everything but NOT_SETTINGS. Recorded in each stage's marker to flag stale caches.
STAGE_SETTINGS = {
    "data": ("dataset_name", "sft_reviews", "classifier_reviews", "preference_prompts", "eval_prompts",
             "best_of_n_prompts", "seed"),
    "tokenizer": ("model_name_or_path", "tokenizer_vocab_size"),
    "sft": ("tiny_n_layer", "tiny_n_embd", "tiny_n_head", "context_length", "sft_epochs", "sft_learning_rate",
            "sft_batch_size"),
    "reward": ("reward_model_name",),
    "preferences": ("prompt_min_tokens", "prompt_max_tokens", "num_completions", "max_new_tokens", "pairs",
                    "run_seed"),
    "sft_eval": ("eval_samples_per_prompt",),
    "train": (),
    "best_of_n": ("best_of_n_max", "beta"),
}
# Not checked: where outputs go, speed-only and logging knobs, publishing, and what selects runs (beta, alpha and
# method are in run names; loss_type is set by the method).
NOT_SETTINGS = ("output_dir", "workers", "logging_steps", "disable_tqdm", "report_to", "bf16", "use_cpu",
                "gradient_checkpointing", "activation_checkpointing", "methods", "betas", "unlikelihood_alphas",
                "beta", "unlikelihood_alpha", "loss_type", "push_to_hub", "fixed_kls", "rounds_beta",
                "hub_model_id", "hub_private_repo", "hub_dry_run")

stage = partial(cached_stages.stage, total=NUM_STAGES, log=logger)


def all_settings(args) -> dict:
    """Every setting by name, as JSON values (what a stage marker records and compares)."""
    return cached_stages.all_settings(args.model, args.recipe_model, args.data, args.run, args.training)


def stage_settings(everything: dict, upto: str) -> dict:
    """The settings a stage depends on: its own and every earlier stage's; training and Best-of-N, every setting but
    NOT_SETTINGS."""
    return cached_stages.stage_settings(everything, upto, STAGE_SETTINGS, NOT_SETTINGS, every_setting_from="train")


def outputs(out: Path, args) -> SimpleNamespace:
    """The finished stages' outputs: ``sft_dir``, ``tokenizer``, ``reward`` (texts -> list of floats), ``prefs``."""
    import bpe_tokenizer
    import preference_data
    import sentiment_reward

    return SimpleNamespace(sft_dir=out / "sft", tokenizer=bpe_tokenizer.load(out / "tokenizer"),
                           reward=sentiment_reward.load(out / "reward", args.recipe_model.reward_model_name),
                           prefs=preference_data.load(out / "preferences"))


def read_json(path: Path):
    return json.loads(Path(path).read_text())
