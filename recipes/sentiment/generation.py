"""Sampling completions for every stage: the package's sampler (`dpo_ext.sampling`; a prompt is token ids, a
completion the sampled ids up to and including the first EOS, never empty) with the recipe's settings and job pool.
Sampling is from the untouched distribution: the KL estimate E_{y~pi}[log pi(y|x) - log pi_ref(y|x)] needs samples
from pi itself.
"""

from dpo_ext import sampling
from dpo_ext.sampling import SHARD_SEQUENCES, shard_seed  # module names: the tests patch and call them

# No temperature, top-k or top-p warping (transformers skips top_k=0 and top_p=1.0).
SAMPLING = {key: sampling.DEFAULT_GENERATION[key] for key in ("do_sample", "temperature", "top_k", "top_p")}


def sample(model, prompts, num_samples, max_new_tokens, eos_token_id, pad_token_id, seed):
    """(P, num_samples) completions as token-id lists, sampled as one shard seeded ``seed``. The caller's random
    state is left as it was, so sampling inside a training loop does not change the run."""
    config = sampling.generation_config(generation={**SAMPLING, "max_new_tokens": max_new_tokens,
                                           "eos_token_id": eos_token_id, "pad_token_id": pad_token_id})
    # 256 sequences per call, "by_length": the layout the recipe's results were drawn with (the default pads)
    return sampling.sample_shard(model, prompts, num_samples, config, seed, batch_sequences=256, layout="by_length")


def sample_job(model_dir, prompts, num_samples, max_new_tokens, seed, use_cpu=True):
    """`sample` from the model and tokenizer saved in ``model_dir``: a `recipe_kit.pool.JobPool` job."""
    import bpe_tokenizer
    import sft_policy

    tokenizer = bpe_tokenizer.load(model_dir)
    return sample(sft_policy.load(model_dir, use_cpu), prompts, num_samples, max_new_tokens, tokenizer.eos_token_id,
                  tokenizer.pad_token_id, seed)


def sample_in_shards(pool, model_dir, prompts, num_samples, max_new_tokens, seed, use_cpu=True):
    """`sample_job` on ``pool`` over the package's shards of `SHARD_SEQUENCES` sequences, shard ``i`` seeded
    ``shard_seed(seed, i)``: the samples do not depend on the number of workers. Returns (P, num_samples) lists."""
    shards = sampling.plan_shards(len(prompts), num_samples, SHARD_SEQUENCES)
    results = pool.run([(sample_job, str(model_dir), prompts[s.start : s.stop], num_samples, max_new_tokens,
                         shard_seed(seed, i), use_cpu) for i, s in enumerate(shards)])
    return [row for shard in results for row in shard]
