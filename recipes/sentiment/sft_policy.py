"""Stage 3: the SFT policy, which is also every method's reference.

Offline: a tiny GPT-2 built from a config and trained from scratch with a plain torch loop on the first
``context_length`` tokens of each SFT review; prompts are review beginnings, so that is the distribution that matters.
Paper scale: a Hub model (``gpt2-large``) fine-tuned on the reviews with `trl.SFTTrainer`.
"""

import json
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


# Data-parallel processes of the tiny model's SFT, one torch thread each. Fixed, not taken from the machine: the
# model (and so every later number) must not depend on how many cores happen to be free.
SFT_RANKS = 2


def train_tiny(out_dir: Path, args, tokenizer, texts: list[str], log) -> None:
    """Next-token training on review beginnings, data-parallel over `SFT_RANKS` processes (gloo): each rank takes its
    share of every batch, the gradients are summed, and every rank takes the same optimizer step. Rank 0 saves."""
    import tempfile

    import torch.multiprocessing

    with tempfile.TemporaryDirectory() as rendezvous:
        torch.multiprocessing.spawn(
            _train_rank, args=(out_dir, args, tokenizer, texts, f"file://{rendezvous}/init"), nprocs=SFT_RANKS)
    log(json.loads((Path(out_dir) / "sft_log.json").read_text())["summary"])


def _train_rank(rank: int, out_dir: Path, args, tokenizer, texts: list[str], init_method: str) -> None:
    """One SFT rank: AdamW, linear warm-up then cosine decay, loss = mean token NLL over the whole global batch."""
    import torch.distributed as dist
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    import parallel

    parallel.set_up_cpu_process()
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=SFT_RANKS)
    torch.manual_seed(args.training.seed)  # the same initial weights on every rank
    model = build_tiny(args.recipe_model, tokenizer)
    context = args.recipe_model.context_length
    encoded = tokenizer(texts, truncation=True, max_length=context, padding="max_length", return_tensors="pt")
    input_ids, attention_mask = encoded["input_ids"], encoded["attention_mask"]  # (N, T)
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    batch_size = args.run.sft_batch_size
    steps_per_epoch = math.ceil(len(texts) / batch_size)
    total_steps = max(1, int(steps_per_epoch * args.run.sft_epochs))
    warmup = max(1, total_steps // 20)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.run.sft_learning_rate, weight_decay=0.01)

    def lr_factor(step):
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total_steps - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    generator = torch.Generator().manual_seed(args.training.seed)  # every rank draws the same global batches
    parameters = list(model.parameters())
    model.train()
    start, order, losses = time.time(), torch.empty(0, dtype=torch.long), []
    progress = tqdm(range(total_steps), desc="SFT", mininterval=2, disable=rank != 0 or args.training.disable_tqdm)
    for _ in progress:
        if len(order) < batch_size:
            order = torch.cat([order, torch.randperm(len(texts), generator=generator)])
        index, order = order[:batch_size], order[batch_size:]
        tokens = (labels[index][:, 1:] != -100).sum()  # predicted tokens in the whole global batch
        mine = index[rank::SFT_RANKS]
        logits = model(input_ids=input_ids[mine], attention_mask=attention_mask[mine]).logits[:, :-1]
        nll = F.cross_entropy(logits.flatten(0, 1), labels[mine][:, 1:].flatten(), ignore_index=-100,
                              reduction="sum")
        (nll / tokens).backward()
        flat = torch.cat([p.grad.flatten() for p in parameters])
        dist.all_reduce(flat)  # sum over ranks: the gradient of the global batch's mean NLL
        offset = 0
        for p in parameters:
            p.grad.copy_(flat[offset : offset + p.numel()].view_as(p))
            offset += p.numel()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        total = nll.detach().clone()
        dist.all_reduce(total)
        losses.append((total / tokens).item())
        progress.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}")
    seconds = time.time() - start
    if rank == 0:
        num_params = sum(p.numel() for p in parameters)
        summary = (f"SFT: tiny GPT-2 with {num_params / 1e6:.2f}M parameters, {len(texts)} reviews x {context} "
                   f"tokens, {total_steps} steps of {batch_size} on {SFT_RANKS} processes; final loss "
                   f"{sum(losses[-20:]) / len(losses[-20:]):.3f}, {total_steps * batch_size * context / seconds:.0f} "
                   "tokens/s")
        model.eval()
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
        (Path(out_dir) / "sft_log.json").write_text(json.dumps({"summary": summary, "losses": losses}))
    dist.destroy_process_group()


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
