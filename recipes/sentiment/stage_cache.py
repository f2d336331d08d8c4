"""Cached stages: each stage writes one sub-folder of the output folder plus a ``.done`` marker that records the
settings it was built with; a re-run loads a marked folder instead of rebuilding it, and warns when the current
settings differ from the recorded ones (delete the folder to rebuild it).
"""

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

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
    "preferences": ("prompt_min_tokens", "prompt_max_tokens", "num_completions", "max_new_tokens", "pairs"),
    "sft_eval": ("eval_samples_per_prompt",),
    "train": (),
    "best_of_n": ("best_of_n_max", "beta"),
}
# Not checked: where outputs go, speed-only and logging knobs, publishing, and what selects runs (beta, alpha and
# method are in run names; loss_type is set by the method).
NOT_SETTINGS = ("output_dir", "workers", "logging_steps", "disable_tqdm", "report_to", "bf16", "use_cpu",
                "gradient_checkpointing", "activation_checkpointing", "methods", "betas", "unlikelihood_alphas",
                "beta", "unlikelihood_alpha", "loss_type", "push_to_hub",
                "hub_model_id", "hub_private_repo", "hub_dry_run")


def stage(index: int, name: str, out_dir: Path, build, load, all_processes: bool = False, settings: dict = None):
    """Run ``build(out_dir)`` unless ``out_dir`` is marked done; either way return ``load(out_dir)``.

    Under a multi-process launch only the main process builds and the others wait for it, unless
    ``all_processes`` (training: every process takes part, the main process writes the files and the marker).
    The marker records ``settings``; a cached stage built with other settings is used anyway, with a warning.
    """
    from accelerate import PartialState

    state = PartialState()
    marker = out_dir / ".done"
    settings = settings or {}
    if marker.is_file():
        logger.info(f"[{index}/{NUM_STAGES}] {name}: cached in {out_dir}")
        recorded = json.loads(marker.read_text()).get("settings", {})
        changed = sorted(k for k in settings if k in recorded and recorded[k] != settings[k])
        if changed:
            logger.warning("%s was built with other settings (%s); delete %s to rebuild it with the current ones",
                           out_dir, ", ".join(f"{k}: {recorded[k]!r} -> {settings[k]!r}" for k in changed), out_dir)
        return load(out_dir)
    start = time.time()
    if all_processes:
        logger.info(f"[{index}/{NUM_STAGES}] {name}: running")
        out_dir.mkdir(parents=True, exist_ok=True)
        build(out_dir)
        state.wait_for_everyone()
    else:
        with state.main_process_first():
            if state.is_main_process:
                logger.info(f"[{index}/{NUM_STAGES}] {name}: running")
                out_dir.mkdir(parents=True, exist_ok=True)
                build(out_dir)
    if state.is_main_process:
        seconds = time.time() - start
        marker.write_text(json.dumps({"seconds": round(seconds, 1), "settings": settings}, default=str))
        logger.info(f"[{index}/{NUM_STAGES}] {name}: done in {seconds:.1f}s")
    state.wait_for_everyone()
    return load(out_dir)


def all_settings(args) -> dict:
    """Every setting by name, as JSON values (what a stage marker records and compares)."""
    values = {}
    for group in (args.model, args.recipe_model, args.data, args.run):
        values.update(asdict(group))
    values.update(args.training.to_dict())  # enums as their values, tokens masked
    return json.loads(json.dumps(values, default=str))


def stage_settings(everything: dict, upto: str) -> dict:
    """The settings a stage depends on: its own and every earlier stage's (see STAGE_SETTINGS)."""
    names = list(STAGE_SETTINGS)
    keys = [k for name in names[: names.index(upto) + 1] for k in STAGE_SETTINGS[name]]
    if upto in ("train", "best_of_n"):
        keys += [k for k in everything if k not in NOT_SETTINGS and k not in keys]
    return {k: everything[k] for k in keys}
