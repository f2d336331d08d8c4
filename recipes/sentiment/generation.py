"""Sampling completions from a policy, for every later stage: the package's sampler (`dpo_ext.sampling`), with the
recipe's settings and its job pool.

Conventions (the package's): a prompt is a list of token ids (no padding), a completion is the list of sampled token
ids up to and including the first EOS (or ``max_new_tokens`` tokens), so never empty. Sampling is from the untouched
distribution (temperature 1, no top-k / top-p) because the KL estimate E_{y~pi}[log pi(y|x) - log pi_ref(y|x)] needs
samples from pi itself.
"""

from dpo_ext.sampling import DEFAULT_GENERATION, SHARD_SEQUENCES, generation_config, sample_shard, shard_seed

# The untouched distribution: no temperature, top-k or top-p warping (transformers skips top_k=0 and top_p=1.0).
SAMPLING = {key: DEFAULT_GENERATION[key] for key in ("do_sample", "temperature", "top_k", "top_p")}

__all__ = ["SAMPLING", "SHARD_SEQUENCES", "sample", "sample_in_shards", "sample_job", "shard_seed"]


def sample(model, prompts, num_samples, max_new_tokens, eos_token_id, pad_token_id, seed, batch_size=256):
    """``num_samples`` completions for every prompt, as one shard seeded ``seed`` (`dpo_ext.sampling.sample_shard`;
    the global RNG state is restored afterwards, so calling this inside a training loop does not change the run).

    Returns:
        `list[list[list[int]]]`: (num_prompts, num_samples) completions as token-id lists.
    """
    config = generation_config(generation={**SAMPLING, "max_new_tokens": max_new_tokens,
                                           "eos_token_id": eos_token_id, "pad_token_id": pad_token_id})
    # "by_length": the layout the recipe's results were drawn with (the package's default pads; other samples)
    return sample_shard(model, prompts, num_samples, config, seed, batch_sequences=batch_size, layout="by_length")


def sample_job(model_dir, prompts, num_samples, max_new_tokens, seed, use_cpu=True):
    """`sample` from the model saved in ``model_dir`` (with its tokenizer): a `parallel.JobPool` job."""
    import bpe_tokenizer
    import sft_policy

    tokenizer = bpe_tokenizer.load(model_dir)
    return sample(sft_policy.load(model_dir, use_cpu), prompts, num_samples, max_new_tokens, tokenizer.eos_token_id,
                  tokenizer.pad_token_id, seed)


def sample_in_shards(pool, model_dir, prompts, num_samples, max_new_tokens, seed, use_cpu=True):
    """`sample` from the model in ``model_dir`` in the package's shards (`dpo_ext.sampling.plan_shards`, of
    `SHARD_SEQUENCES` sequences), run as jobs on ``pool`` (a `parallel.JobPool`); shard ``i`` is seeded with
    ``shard_seed(seed, i)``, so the samples do not depend on the number of workers. Returns (P, num_samples) token
    lists."""
    from dpo_ext.sampling import plan_shards

    shards = plan_shards(len(prompts), num_samples, SHARD_SEQUENCES)
    results = pool.run([(sample_job, str(model_dir), prompts[s.start : s.stop], num_samples, max_new_tokens,
                         shard_seed(seed, i), use_cpu) for i, s in enumerate(shards)])
    return [row for shard in results for row in shard]
