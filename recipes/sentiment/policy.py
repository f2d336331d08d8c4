"""The SFT policy, which is also every method's reference: its tokenizer (stage 2), its training (stage 3), loading it
and its adapters, and sampling from it.

- Tokenizer: offline, a byte-level BPE trained on the SFT reviews (`recipe_kit.bpe`); at paper scale the model's own.
  No post-processor adds special tokens: a prompt is a review prefix of at least two tokens, so the model never has to
  predict a review's first token, and ``tokenizer(prompt + completion)`` is the plain concatenation TRL expects.
- Model: offline, a tiny GPT-2 built from a config and trained from scratch (`recipe_kit.sft.train_small_causal_lm`)
  on the first ``context_length`` tokens of each SFT review; prompts are review beginnings, so that is the
  distribution that matters. Paper scale: a Hub model (``gpt2-large``) fine-tuned on the reviews with `trl.SFTTrainer`
  (`recipe_kit.sft.fine_tune`), every weight trained.
- Sampling: the package's sampler (`dpo_ext.sampling`; a prompt is token ids, a completion the sampled ids up to and
  including the first EOS, never empty) with the recipe's settings and job pool. Sampling is from the untouched
  distribution: the KL estimate E_{y~pi}[log pi(y|x) - log pi_ref(y|x)] needs samples from pi itself.
"""

from pathlib import Path

from dpo_ext import sampling
from dpo_ext.sampling import SHARD_SEQUENCES, shard_seed  # module names: the tests patch and call them

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"  # distinct from EOS so that padding after an early EOS can be told apart from the EOS itself
# The settings the Hub model's SFT takes from the trainer config; the rest (optimizer, warm-up...) are DPO's, not SFT's.
HUB_SHARED_SETTINGS = ("seed", "gradient_accumulation_steps", "bf16", "activation_checkpointing", "use_cpu")
# No temperature, top-k or top-p warping (transformers skips top_k=0 and top_p=1.0).
SAMPLING = {key: sampling.DEFAULT_GENERATION[key] for key in ("do_sample", "temperature", "top_k", "top_p")}


def build_tokenizer(out_dir: Path, texts: list[str], vocab_size: int):
    """`recipe_kit.bpe.train_byte_level_bpe` on ``texts``, saved to ``out_dir``."""
    from recipe_kit.bpe import train_byte_level_bpe

    wrapped = train_byte_level_bpe(texts, vocab_size, [EOS_TOKEN, PAD_TOKEN], EOS_TOKEN, PAD_TOKEN)
    wrapped.model_max_length = 1024
    wrapped.save_pretrained(out_dir)
    return wrapped


def load_tokenizer(path: str | Path):
    """The tokenizer at ``path`` (a folder or Hub id), padding with EOS when it has no pad token (GPT-2's has none;
    padding is always masked out)."""
    from dpo_ext.modeling.tokenizers import ensure_pad_token, load_tokenizer

    tokenizer = load_tokenizer(str(path), "--model_name_or_path")
    ensure_pad_token(tokenizer, str(path))
    return tokenizer


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


def load(path: str | Path, use_cpu: bool = True, adapter: str | Path | None = None):
    """The saved SFT policy in eval mode, on the GPU when one is there and ``use_cpu`` is off; with the LoRA
    ``adapter`` folder loaded on it, a `peft.PeftModel`."""
    import torch

    from dpo_ext.modeling.loading import load_causal_lm

    model = load_causal_lm(str(path), what="the SFT policy", hint="delete its folder to train it again")
    if not use_cpu and torch.cuda.is_available():
        model = model.to("cuda")
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model.eval(), str(adapter))
    return model.eval()


def sample(model, prompts, num_samples, max_new_tokens, eos_token_id, pad_token_id, seed):
    """(P, num_samples) completions as token-id lists, sampled as one shard seeded ``seed``. The caller's random
    state is left as it was, so sampling inside a training loop does not change the run."""
    config = sampling.generation_config(generation={**SAMPLING, "max_new_tokens": max_new_tokens,
                                                    "eos_token_id": eos_token_id, "pad_token_id": pad_token_id})
    # 256 sequences per call, "by_length": the layout the recipe's results were drawn with (the default pads)
    return sampling.sample_shard(model, prompts, num_samples, config, seed, batch_sequences=256, layout="by_length")


def sample_job(model_dir, prompts, num_samples, max_new_tokens, seed, use_cpu=True):
    """`sample` from the model and tokenizer saved in ``model_dir``: a `recipe_kit.pool.JobPool` job."""
    tokenizer = load_tokenizer(model_dir)
    return sample(load(model_dir, use_cpu), prompts, num_samples, max_new_tokens, tokenizer.eos_token_id,
                  tokenizer.pad_token_id, seed)


def sample_in_shards(pool, model_dir, prompts, num_samples, max_new_tokens, seed, use_cpu=True):
    """`sample_job` on ``pool`` over the package's shards of `SHARD_SEQUENCES` sequences, shard ``i`` seeded
    ``shard_seed(seed, i)``: the samples do not depend on the number of workers. Returns (P, num_samples) lists."""
    shards = sampling.plan_shards(len(prompts), num_samples, SHARD_SEQUENCES)
    results = pool.run([(sample_job, str(model_dir), prompts[s.start : s.stop], num_samples, max_new_tokens,
                         shard_seed(seed, i), use_cpu) for i, s in enumerate(shards)])
    return [row for shard in results for row in shard]
