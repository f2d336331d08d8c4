"""Model cards and publishing, through `dpo_ext.hub`, for a recipe that trains its own base model (an SFT policy) and
several LoRA adapters on it, one folder per run in ``adapters_dir``.

Every adapter's base model is then the recipe's, not a Hub checkpoint, so with ``--push_to_hub`` the base is
published too, as ``<prefix>-sft``, and each adapter goes to ``<prefix>-<run name>`` naming it as base. Without a
prefix (no ``hub_model_id``) the cards name a local placeholder. ``card_arguments(run_dir)`` gives a run's card
inputs as `dpo_ext.push_adapter` takes them (``training_config``, ``eval_results``, ``plots``...).
"""

from pathlib import Path

# Trainer settings copied into training_config.json (what a model card shows).
RECORDED = (
    "learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps",
    "lr_scheduler_type", "warmup_steps", "weight_decay", "optim", "max_length", "bf16", "seed", "beta",
    "loss_type", "unlikelihood_alpha", "num_generations", "max_completion_length", "reference", "prefix_sharing",
    "precompute_ref_log_probs",
)
BASE_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
              "special_tokens_map.json", "vocab.json", "merges.txt")


def write_training_config(run_dir: Path, trainer_args: dict, trained, model_args, seconds: float, **facts) -> None:
    """training_config.json, which the card reads: the trainer's own settings as it used them (its `RECORDED` ones),
    ``facts`` (what the run used: data, reward, base model...), the LoRA settings of ``model_args`` (a
    `trl.ModelConfig`) with the modules ``trained`` (the PEFT config the trainer really adapted) names, the time."""
    import json

    lora = {name: getattr(model_args, name) for name in ("lora_r", "lora_alpha", "lora_dropout", "lora_target_modules")}
    lora.update(lora_target_modules=sorted(trained.target_modules), modules_to_save=trained.modules_to_save)
    config = {**{k: v for k, v in trainer_args.items() if k in RECORDED}, **facts, "lora": lora,
              "train_seconds": round(seconds, 1)}
    (run_dir / "training_config.json").write_text(json.dumps(config, indent=2, default=str))


def check_access(prefix: str, dry_run: bool) -> None:
    """Fail at start-up, not after training, when the token cannot write to the target namespace."""
    if not dry_run:
        from dpo_ext import check_hub_access

        check_hub_access(f"{prefix}-sft")


def write_cards(adapters_dir: Path, names, prefix: str, card_arguments, log) -> None:
    """Write README.md (the model card) and plots/ into every adapter folder, as they would be published."""
    from dpo_ext import build_model_card
    from dpo_ext.hub.staged_folder import copy_file

    for name in names:
        run_dir = adapters_dir / name
        arguments = card_arguments(run_dir)
        card = build_model_card(run_dir, f"{prefix}-{name}", base_model=f"{prefix}-sft", **arguments)
        for plot in arguments["plots"]:
            copy_file(run_dir, plot, f"plots/{plot.name}")
        card.save(run_dir / "README.md")
    log(f"cards: README.md written in {len(names)} adapter folders (base model named {prefix}-sft)")


def push_all(base_dir: Path, base_description: str, adapters_dir: Path, names, prefix: str, card_arguments, *,
             private: bool, dry_run: Path | None, log) -> None:
    """Publish the base model (its `BASE_FILES` and a README: its repository id, then ``base_description``), then
    every adapter with its card, results and plots; ``dry_run``: stage them in that folder instead."""
    from dpo_ext import push_adapter
    from dpo_ext.hub.publish import publish_folder  # not public; the base is a full model, not an adapter
    from dpo_ext.hub.staged_folder import copy_file, list_folder, write_file

    def stage_base(staging_dir: Path, repo_id: str, secrets) -> list:
        for name in BASE_FILES:
            if (base_dir / name).is_file():
                copy_file(staging_dir, base_dir / name, name)
        write_file(staging_dir, "README.md", f"# {repo_id}\n\n{base_description}\n")
        return list_folder(staging_dir)

    def logged(result) -> None:
        log(f"hub: {result.repo_id}: {result.commit_url or 'dry run, staged in ' + str(result.staging_dir)}")

    logged(publish_folder(stage_base, f"{prefix}-sft", repo_type="model", token=None, private=private,
                          dry_run=dry_run / "sft" if dry_run else False, endpoint=None, max_attempts=4,
                          retry_delay=2.0, commit_message="Upload SFT base model"))
    for name in names:
        logged(push_adapter(adapters_dir / name, f"{prefix}-{name}", private=private, base_model=f"{prefix}-sft",
                            dry_run=dry_run / name if dry_run else False, **card_arguments(adapters_dir / name)))
