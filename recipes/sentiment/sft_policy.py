"""Stage 3: the SFT policy, which is also every method's reference.

Offline: a tiny GPT-2 built from a config and trained from scratch (`recipe_kit.sft.train_small_causal_lm`) on the
first ``context_length`` tokens of each SFT review; prompts are review beginnings, so that is the distribution that
matters. Paper scale: a Hub model (``gpt2-large``) fine-tuned on the reviews with `trl.SFTTrainer`
(`recipe_kit.sft.fine_tune`), every weight trained.
"""

from pathlib import Path

# The settings the Hub model's SFT takes from the trainer config; the rest (optimizer, warm-up...) are DPO's, not SFT's.
HUB_SHARED_SETTINGS = ("seed", "gradient_accumulation_steps", "bf16", "activation_checkpointing", "use_cpu")


def train(out_dir: Path, args, tokenizer, texts: list[str]) -> None:
    """Train the SFT policy on ``texts`` (the SFT reviews) and save it, with its tokenizer, to ``out_dir``:
    the tiny GPT-2 when ``model_name_or_path`` is None (``tokenizer``: the stage-2 BPE), else the Hub model (with its
    own tokenizer)."""
    from recipe_kit.sft import fine_tune, sft_config, train_small_causal_lm

    run, context = args.run, args.recipe_model.context_length
    if args.model.model_name_or_path is None:
        from dpo_ext.testing import tiny_model

        model = tiny_model(tokenizer, seed=args.training.seed, n_layer=args.recipe_model.tiny_n_layer,
                           n_embd=args.recipe_model.tiny_n_embd, n_head=args.recipe_model.tiny_n_head,
                           n_positions=context, dropout=0.0)
        train_small_causal_lm(model, tokenizer, texts, out_dir, max_length=context, batch_size=run.sft_batch_size,
                              epochs=run.sft_epochs, learning_rate=run.sft_learning_rate, seed=args.training.seed,
                              disable_tqdm=args.training.disable_tqdm)
        return
    config = sft_config(args.training, out_dir / "trainer", shared=HUB_SHARED_SETTINGS, report_to="none",
                        num_train_epochs=run.sft_epochs, learning_rate=run.sft_learning_rate,
                        per_device_train_batch_size=run.sft_batch_size, max_length=context)
    fine_tune(args.model, config, [{"text": text} for text in texts], out_dir)


def load(path: str | Path, use_cpu: bool = True):
    """The saved SFT policy in eval mode, on the GPU when one is there and ``use_cpu`` is off."""
    import torch

    from dpo_ext.modeling.loading import load_causal_lm

    model = load_causal_lm(str(path), what="the SFT policy", hint="delete its folder to train it again")
    if not use_cpu and torch.cuda.is_available():
        model = model.to("cuda")
    return model.eval()
