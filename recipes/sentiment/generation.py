"""Sampling completions from a policy; used by every later stage (`dpo_ext.ImplicitRewardScorer` scores them).

Conventions: a prompt is a list of token ids (no padding), a completion is the list of sampled token ids up to and
including the first EOS (or ``max_new_tokens`` tokens), so never empty. Sampling is from the untouched distribution (temperature 1,
no top-k / top-p) because the KL estimate E_{y~pi}[log pi(y|x) - log pi_ref(y|x)] needs samples from pi itself.

Prompts are batched by length, so generation never sees padding and position ids need no care.
"""

from collections import defaultdict

import torch

# The untouched distribution: no temperature, top-k or top-p warping (transformers skips top_k=0 and top_p=1.0).
SAMPLING = {"do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 1.0}


def _chunks(items, size):
    for start in range(0, len(items), size):
        yield items[start : start + size]


@torch.no_grad()
def sample(model, prompts, num_samples, max_new_tokens, eos_token_id, pad_token_id, seed, batch_size=256):
    """Sample ``num_samples`` completions for every prompt.

    Args:
        model: a causal LM or PeftModel (adapters as they are set).
        prompts (`list[list[int]]`): token ids per prompt.
        num_samples (`int`): completions per prompt.
        seed (`int`): sampling seed; the global RNG state is restored afterwards, so calling this from inside a
            training loop does not change the training run.

    Returns:
        `list[list[list[int]]]`: (num_prompts, num_samples) completions as token-id lists.
    """
    by_length = defaultdict(list)
    for index, prompt in enumerate(prompts):
        by_length[len(prompt)].append(index)
    results = [[None] * num_samples for _ in prompts]
    was_training = model.training
    model.eval()
    rows_per_chunk = max(1, batch_size // num_samples)
    device = next(model.parameters()).device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for length in sorted(by_length):
            for indices in _chunks(by_length[length], rows_per_chunk):
                input_ids = torch.tensor([prompts[i] for i in indices], device=device)  # (b, L)
                input_ids = input_ids.repeat_interleave(num_samples, dim=0)  # (b * S, L)
                output = model.generate(
                    input_ids=input_ids,
                    attention_mask=torch.ones_like(input_ids),
                    **SAMPLING,
                    max_new_tokens=max_new_tokens,
                    eos_token_id=eos_token_id,
                    pad_token_id=pad_token_id,
                )
                new_tokens = output[:, length:].tolist()  # (b * S, <= max_new_tokens)
                for row, tokens in enumerate(new_tokens):
                    if eos_token_id in tokens:
                        tokens = tokens[: tokens.index(eos_token_id) + 1]
                    results[indices[row // num_samples]][row % num_samples] = tokens
    model.train(was_training)
    return results


# Sequences sampled per job of `sample_in_shards`. Fixed, so that the shards, their seeds and therefore the samples
# do not depend on how many workers run them.
SHARD_SEQUENCES = 1024


def shard_seed(seed: int, shard: int) -> int:
    return seed * 100_003 + shard


def sample_job(model_dir, prompts, num_samples, max_new_tokens, seed, use_cpu=True):
    """`sample` from the model saved in ``model_dir`` (with its tokenizer): a `parallel.JobPool` job."""
    import bpe_tokenizer
    import sft_policy

    tokenizer = bpe_tokenizer.load(model_dir)
    return sample(sft_policy.load(model_dir, use_cpu), prompts, num_samples, max_new_tokens, tokenizer.eos_token_id,
                  tokenizer.pad_token_id, seed)


def sample_in_shards(pool, model_dir, prompts, num_samples, max_new_tokens, seed, use_cpu=True):
    """`sample` from the model in ``model_dir``, split into jobs of about `SHARD_SEQUENCES` sequences on ``pool`` (a
    `parallel.JobPool`); shard ``i`` is seeded with ``shard_seed(seed, i)``. Returns (P, num_samples) token lists."""
    per_shard = max(1, SHARD_SEQUENCES // num_samples)
    shards = list(_chunks(prompts, per_shard))
    results = pool.run([(sample_job, str(model_dir), shard, num_samples, max_new_tokens, shard_seed(seed, i), use_cpu)
                        for i, shard in enumerate(shards)])
    return [row for shard in results for row in shard]
