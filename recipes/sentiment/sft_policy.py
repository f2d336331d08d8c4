"""Stage 3: the SFT policy, which is also every method's reference.

Offline: a tiny GPT-2 built from a config and trained from scratch with a plain torch loop on the first
``context_length`` tokens of each SFT review; prompts are review beginnings, so that is the distribution that matters.
Paper scale: a Hub model (``gpt2-large``) fine-tuned on the reviews with `trl.SFTTrainer`.
"""

import math
import time
from pathlib import Path

import torch


def build_tiny(recipe_model_args, tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=recipe_model_args.context_length,
        n_embd=recipe_model_args.tiny_n_embd,
        n_layer=recipe_model_args.tiny_n_layer,
        n_head=recipe_model_args.tiny_n_head,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        # GPT2Config defaults these to GPT-2's 50256, outside our vocabulary.
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return GPT2LMHeadModel(config)


def train_tiny(out_dir: Path, args, tokenizer, texts: list[str], log) -> None:
    """Next-token training on review beginnings; AdamW, linear warm-up then cosine decay, one progress bar."""
    from tqdm.auto import tqdm

    torch.manual_seed(args.training.seed)
    model = build_tiny(args.recipe_model, tokenizer)
    context = args.recipe_model.context_length
    # Only the first `context` tokens are used: cut each review well past them (no token is 32 characters long)
    # rather than tokenizing whole reviews.
    texts = [text[: 32 * context] for text in texts]
    encoded = tokenizer(texts, truncation=True, max_length=context, padding="max_length", return_tensors="pt")
    input_ids, attention_mask = encoded["input_ids"], encoded["attention_mask"]  # (N, T)
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    num_params = sum(p.numel() for p in model.parameters())
    batch_size = args.run.sft_batch_size
    steps_per_epoch = math.ceil(len(texts) / batch_size)
    total_steps = max(1, int(steps_per_epoch * args.run.sft_epochs))
    warmup = max(1, total_steps // 20)
    log(f"SFT: tiny GPT-2 with {num_params / 1e6:.2f}M parameters, {len(texts)} reviews x {context} tokens, "
        f"{total_steps} steps of {batch_size}")

    optimizer = torch.optim.AdamW(model.parameters(), lr=args.run.sft_learning_rate, weight_decay=0.01)

    def lr_factor(step):
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total_steps - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    generator = torch.Generator().manual_seed(args.training.seed)
    model.train()
    start, order, losses = time.time(), torch.empty(0, dtype=torch.long), []
    progress = tqdm(range(total_steps), desc="SFT", mininterval=2, disable=args.training.disable_tqdm)
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
    log(f"SFT: final loss {sum(losses[-20:]) / len(losses[-20:]):.3f}, "
        f"{total_steps * batch_size * context / seconds:.0f} tokens/s")
    model.eval()
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def train_hub_model(out_dir: Path, args, tokenizer, texts: list[str], log) -> None:
    """Paper scale: fine-tune ``model_name_or_path`` on the reviews with `trl.SFTTrainer` (GPU, needs the Hub)."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    log(f"SFT: fine-tuning {args.model.model_name_or_path} on {len(texts)} reviews")
    training = args.training
    config = SFTConfig(
        output_dir=str(out_dir / "trainer"),
        num_train_epochs=args.run.sft_epochs,
        learning_rate=args.run.sft_learning_rate,
        per_device_train_batch_size=args.run.sft_batch_size,
        gradient_accumulation_steps=training.gradient_accumulation_steps,
        max_length=args.recipe_model.context_length,
        bf16=training.bf16,
        activation_checkpointing=training.activation_checkpointing,
        use_cpu=training.use_cpu,
        seed=training.seed,
        report_to="none",
        save_strategy="no",
    )
    trainer = SFTTrainer(
        model=args.model.model_name_or_path,
        args=config,
        train_dataset=Dataset.from_dict({"text": texts}),
        processing_class=tokenizer,
    )
    trainer.train()
    trainer.save_model(str(out_dir))
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(out_dir)


def load(path: str | Path, use_cpu: bool = True):
    """The saved SFT policy in eval mode, on the GPU when one is there and ``use_cpu`` is off."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path)
    if not use_cpu and torch.cuda.is_available():
        model = model.to("cuda")
    return model.eval()
