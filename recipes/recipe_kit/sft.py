"""The SFT stage: `trl.SFTTrainer` on ``{"prompt", "completion"}`` rows (the loss is on the completion only, TRL's
default for such rows), saved as a complete model folder (safetensors + tokenizer) that the DPO stage starts from.

The DPO paper had no SFT model for Anthropic HH and fine-tuned on the preferred responses instead (section 6.2);
`sft_rows` builds those rows from preference pairs, and the TL;DR recipe does the same with its comparisons.
"""

import json
import logging
from dataclasses import replace
from pathlib import Path

from recipe_kit import free_memory

logger = logging.getLogger(__name__)

SFT_RESULTS = "sft_results.json"
# Trainer settings the SFT stage takes from the run's PLDPOConfig (the launch, precision and batch, not the DPO
# learning rate, epochs or steps, which have SFT fields of their own).
SHARED_SETTINGS = ("seed", "per_device_train_batch_size", "gradient_accumulation_steps", "optim", "weight_decay",
                   "warmup_steps", "lr_scheduler_type", "max_grad_norm", "bf16", "fp16", "activation_checkpointing",
                   "use_cpu", "logging_steps", "report_to", "disable_tqdm", "ddp_find_unused_parameters", "ddp_timeout")


def sft_rows(pairs: list[dict]) -> tuple[list[dict], dict]:
    """``{"prompt", "completion"}`` rows from preference pairs: each pair's preferred response, once per
    (prompt, response), since one response often wins several comparisons. Returns the rows and counts."""
    seen, out = set(), []
    for row in pairs:
        if (row["prompt"], row["chosen"]) not in seen:
            seen.add((row["prompt"], row["chosen"]))
            out.append({"prompt": row["prompt"], "completion": row["chosen"]})
    return out, {"pairs": len(pairs), "kept": len(out), "left_out": {"repeated": len(pairs) - len(out)}}


def sft_config(run):
    """A `trl.SFTConfig` with the SFT fields of ``run.recipe`` and the shared settings of ``run.training``."""
    from trl import SFTConfig

    shared = {name: getattr(run.training, name) for name in SHARED_SETTINGS}
    return SFTConfig(output_dir=run.recipe.sft_output_dir, num_train_epochs=run.recipe.sft_num_train_epochs,
                     learning_rate=run.recipe.sft_learning_rate, max_length=run.recipe.sft_max_length,
                     save_strategy="no", push_to_hub=False, **shared)


def train_sft(run, rows: list[dict]) -> Path:
    """Fine-tune ``run.model.model_name_or_path`` on ``rows`` and save the complete model (and its tokenizer) to
    ``run.recipe.sft_output_dir``, with ``sft_results.json`` (rows, mean training loss). Every weight is trained,
    unless ``sft_use_peft``: then a LoRA (on a 4-bit base with ``load_in_4bit``) is trained and merged into the base
    loaded in ``dtype``, so the DPO stage still gets a plain model."""
    from datasets import Dataset
    from trl import SFTTrainer

    from dpo_ext.cli.train import load_policy, lora_config
    from dpo_ext.modeling.tokenizers import load_tokenizer

    out = Path(run.recipe.sft_output_dir)
    use_peft = run.recipe.sft_use_peft
    model_args = run.model if use_peft else replace(run.model, use_peft=False, load_in_4bit=False, load_in_8bit=False)
    config = sft_config(run)
    model = load_policy(model_args, config)
    tokenizer = load_tokenizer(model_args.model_name_or_path, "--model_name_or_path", model_args.model_revision)
    logger.warning("SFT: %s on %d prompt/response rows -> %s", model_args.model_name_or_path, len(rows), out)
    trainer = SFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                         peft_config=lora_config(model_args) if use_peft else None)
    train_loss = trainer.train().training_loss
    trainer.save_model(str(out / "adapter") if use_peft else str(out))
    if trainer.accelerator.is_main_process:
        if use_peft:
            _merge(model_args, out)
        (out / SFT_RESULTS).write_text(json.dumps(
            {"model": model_args.model_name_or_path, "train_rows": len(rows), "train_loss": train_loss}, indent=2))
    trainer.accelerator.wait_for_everyone()
    del trainer, model
    free_memory()
    return out


def _merge(model_args, out: Path) -> None:
    """The adapter in ``out/adapter`` merged into the base loaded unquantized, saved to ``out``."""
    from peft import PeftModel

    from dpo_ext.cli.train import load_policy
    from dpo_ext.modeling.tokenizers import load_tokenizer

    plain = replace(model_args, use_peft=False, load_in_4bit=False, load_in_8bit=False)
    base = load_policy(plain, None)
    tokenizer = load_tokenizer(plain.model_name_or_path, "--model_name_or_path", plain.model_revision)
    PeftModel.from_pretrained(base, str(out / "adapter")).merge_and_unload().save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))

