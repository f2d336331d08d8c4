"""The SFT stage, saved as a complete model folder (safetensors + tokenizer) that the preference stage starts from:

- `train_sft` / `fine_tune`: `trl.SFTTrainer` on ``{"prompt", "completion"}`` rows (the loss is on the completion
  only, TRL's default for such rows) or on ``{"text"}`` rows (the loss is on every token);
- `train_small_causal_lm`: a plain torch loop for a small model built from a config and trained from scratch on CPU
  (one process, one progress bar, no trainer start-up).

The DPO paper had no SFT model for Anthropic HH and fine-tuned on the preferred responses instead (section 6.2);
`sft_rows` builds those rows from preference pairs, and the TL;DR recipe does the same with its comparisons.
"""

import json
import logging
import math
import time
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


def sft_config(training, output_dir, shared=SHARED_SETTINGS, **fields):
    """A `trl.SFTConfig` writing to ``output_dir``, with the ``shared`` settings of ``training`` (the run's
    `PLDPOConfig`) and ``fields``, the SFT's own (``num_train_epochs``, ``learning_rate``, ``max_length``...)."""
    from trl import SFTConfig

    values = {name: getattr(training, name) for name in shared}
    return SFTConfig(output_dir=str(output_dir), save_strategy="no", push_to_hub=False, **{**values, **fields})


def train_sft(run, rows: list[dict]) -> Path:
    """Fine-tune ``run.model.model_name_or_path`` on ``rows`` (`fine_tune`) into ``run.recipe.sft_output_dir``, with
    the SFT fields of ``run.recipe`` and the shared settings of ``run.training``."""
    recipe = run.recipe
    config = sft_config(run.training, recipe.sft_output_dir, num_train_epochs=recipe.sft_num_train_epochs,
                        learning_rate=recipe.sft_learning_rate, max_length=recipe.sft_max_length)
    return fine_tune(run.model, config, rows, Path(recipe.sft_output_dir), use_peft=recipe.sft_use_peft)


def fine_tune(model_args, config, rows: list[dict], out: Path, use_peft: bool = False) -> Path:
    """Fine-tune ``model_args.model_name_or_path`` with `trl.SFTTrainer` and save the complete model (and its
    tokenizer) to ``out``, with ``sft_results.json`` (rows, mean training loss). Under a multi-process launch every
    process trains and the main one writes.

    Args:
        model_args (`trl.ModelConfig`): the model, its revision, dtype and LoRA settings.
        config (`trl.SFTConfig`): see `sft_config`.
        rows (`list[dict]`): ``{"prompt", "completion"}`` rows or ``{"text"}`` rows.
        use_peft (`bool`): train a LoRA (on a 4-bit base with ``load_in_4bit``) and merge it into the base loaded in
            ``dtype``, so the next stage still gets a plain model; otherwise every weight is trained.
    """
    from datasets import Dataset
    from trl import SFTTrainer

    from dpo_ext.cli.train import load_policy, lora_config
    from dpo_ext.modeling.tokenizers import load_tokenizer

    if not use_peft:
        model_args = replace(model_args, use_peft=False, load_in_4bit=False, load_in_8bit=False)
    model = load_policy(model_args, config)
    tokenizer = load_tokenizer(model_args.model_name_or_path, "--model_name_or_path", model_args.model_revision)
    logger.warning("SFT: %s on %d rows -> %s", model_args.model_name_or_path, len(rows), out)
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


def train_small_causal_lm(model, tokenizer, texts: list[str], out: Path, *, max_length: int, batch_size: int,
                          epochs: float, learning_rate: float, seed: int, disable_tqdm: bool = False) -> None:
    """Next-token training of ``model`` on the first ``max_length`` tokens of each text (the rest is cut off), then
    ``model`` (in eval mode) and ``tokenizer`` saved to ``out``. AdamW (weight decay 0.01), linear warm-up over the
    first 5% of the steps then cosine decay to 0, gradients clipped at norm 1; batches drawn without replacement in
    an order seeded by ``seed``, reshuffled whenever fewer than a batch remain. Deterministic given the model's
    initial weights and ``seed`` (with dropout off: the model draws no random numbers itself).

    Args:
        model (`GPT2LMHeadModel` or any causal LM): already initialised, on the CPU.
        tokenizer: pads with its pad token (masked out of the loss).
        epochs (`float`): passes over ``texts``; the steps are ``ceil(len(texts) / batch_size) * epochs``, at least 1.
    """
    import torch
    from tqdm.auto import tqdm

    # Only the first `max_length` tokens are used: cut each text well past them (no BPE token of ours is 32
    # characters long) rather than tokenizing whole texts.
    texts = [text[: 32 * max_length] for text in texts]
    encoded = tokenizer(texts, truncation=True, max_length=max_length, padding="max_length", return_tensors="pt")
    input_ids, attention_mask = encoded["input_ids"], encoded["attention_mask"]  # (N, T)
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    num_params = sum(p.numel() for p in model.parameters())
    total_steps = max(1, int(math.ceil(len(texts) / batch_size) * epochs))
    warmup = max(1, total_steps // 20)
    logger.info(f"SFT: {num_params / 1e6:.2f}M parameters from scratch, {len(texts)} texts x {max_length} tokens, "
                f"{total_steps} steps of {batch_size}")

    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.01)

    def lr_factor(step):
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total_steps - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    start, order, losses = time.time(), torch.empty(0, dtype=torch.long), []
    progress = tqdm(range(total_steps), desc="SFT", mininterval=2, disable=disable_tqdm)
    for _ in progress:
        if len(order) < batch_size:
            order = torch.cat([order, torch.randperm(len(texts), generator=generator)])
        index, order = order[:batch_size], order[batch_size:]
        loss = model(input_ids=input_ids[index], attention_mask=attention_mask[index], labels=labels[index]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        progress.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}")
    seconds = time.time() - start
    logger.info(f"SFT: final loss {sum(losses[-20:]) / len(losses[-20:]):.3f}, "
                f"{total_steps * batch_size * max_length / seconds:.0f} tokens/s")
    model.eval()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


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

