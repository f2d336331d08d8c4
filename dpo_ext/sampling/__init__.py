"""The one sampler of the package: K completions per prompt from a causal LM (Best-of-N, on-policy rounds, recipes).

Conventions: a prompt is text, chat messages (rendered with the chat template and the generation prompt, as
training renders them) or token ids; a completion is the list of sampled token ids up to and including the first
EOS of the generation config's EOS ids, else ``max_new_tokens`` tokens, so never empty. The default generation is
the untouched distribution (``do_sample=True``, temperature 1, no top-k / top-p: transformers skips ``top_k=0`` and
``top_p=1.0``), which a KL estimate E_{y~pi}[log pi(y|x) - log pi_ref(y|x)] needs.

Determinism. `generate` draws from one global random stream, so which sequences share a call, and in what order
the calls run, decides the samples. The sampler therefore fixes that computation from the data alone:

- the prompts are cut, in order, into shards of ``max(1, shard_sequences // k)`` prompts, and shard ``i`` is
  sampled on its own random stream seeded ``shard_seed(seed, i)``; workers (processes, a job pool) can run shards
  anywhere, in any order, and get the same samples (`sample_token_ids`' ``shards`` picks a worker's share);
- inside a shard, prompts are sorted by token length (shortest first, ties in input order) and generated
  ``max(1, batch_sequences // k)`` prompts per call, the K rows of a prompt side by side (`plan_calls`). The
  ``layout`` says how prompts of different lengths share a call: ``"padded"`` (the default) fills every call,
  left-padding its prompts to the longest; ``generate`` derives position ids from the attention mask, so a padded
  prompt is read as it is alone (tested: the log-probs of its samples equal those computed without padding).
  ``"by_length"`` never mixes two lengths in a call, so `generate` never sees padding, at the price of one or more
  calls per distinct length: with mixed lengths, many small calls (`benchmarks/sampling.py` measures both). With
  prompts of one length the two layouts make the same calls and give the same samples.

``shard_sequences``, ``batch_sequences`` and ``layout`` are therefore part of what the samples are, like the seed:
keep them to reproduce a file (any ``batch_sequences`` at least ``shard_sequences`` gives the same samples: one call
per shard, or per length group). The caller's random state (CPU, and CUDA when sampling there) is restored
afterwards.
"""

import sys

import torch

from dpo_ext.sampling.generate import (
    BATCH_SEQUENCES,
    DEFAULT_GENERATION,
    LAYOUT,
    LAYOUTS,
    SHARD_SEQUENCES,
    Samples,
    encode_prompt,
    generation_config,
    left_pad,
    plan_calls,
    plan_shards,
    sample_shard,
    sample_token_ids,
    shard_seed,
    until_eos,
)

BACKENDS = ("auto", "transformers", "vllm")

__all__ = ["BATCH_SEQUENCES", "DEFAULT_GENERATION", "LAYOUT", "LAYOUTS", "SHARD_SEQUENCES", "Samples",
           "encode_prompt", "generation_config", "left_pad", "plan_calls", "plan_shards", "sample_completions",
           "sample_shard", "sample_token_ids", "shard_seed", "until_eos", "vllm_available"]


def vllm_available() -> bool:
    """Whether the vLLM backend can run: `vllm` importable and a CUDA GPU present."""
    import importlib.util

    return importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()


def sample_completions(model, tokenizer, prompts, k: int, generation=None, seed: int = 0, *, backend: str = "auto",
                       shard_sequences: int = SHARD_SEQUENCES, batch_sequences: int = BATCH_SEQUENCES,
                       layout: str = LAYOUT, lora_request=None, progress=None) -> list[Samples]:
    """Sample ``k`` completions for each prompt; the same samples whatever the worker count.

    Args:
        model: a causal LM or `PeftModel` (transformers backend), or a `vllm.LLM` (vLLM backend).
        tokenizer: the model's tokenizer (encodes text and chat prompts, decodes the samples).
        prompts (`list`): text, chat messages or token ids, one per prompt; none may encode to no tokens.
        k (`int`): completions per prompt (at least 1).
        generation (`dict` or `GenerationConfig`, *optional*): `DEFAULT_GENERATION` (the untouched distribution,
            64 new tokens) with any `GenerationConfig` field overridden.
        seed (`int`, defaults to 0): the run's seed; shard ``i`` draws from ``shard_seed(seed, i)``.
        backend (`str`, defaults to ``"auto"``): ``"transformers"`` (`generate`), ``"vllm"``
            (`dpo_ext.sampling.vllm_backend`, not run here), or ``"auto"``: vLLM when ``model`` is a `vllm.LLM`. The
            two backends give different samples.
        shard_sequences, batch_sequences (`int`): see the module docstring (part of the result, like the seed).
        layout (`str`, defaults to `LAYOUT`, ``"padded"``): ``"padded"`` or ``"by_length"``, how a shard's prompts
            share `generate` calls (see the module docstring; part of the result). Ignored by vLLM.
        lora_request (*optional*): vLLM only, the `LoRARequest` of an adapter to sample from.
        progress (`Callable[[int], None]`, *optional*): called with a count of prompts done.

    Returns:
        `list[Samples]`: one per prompt, in order.

    Example:
        ```python
        >>> from dpo_ext.sampling import sample_completions
        >>> samples = sample_completions(model, tokenizer, ["The movie was"], k=4, generation={"max_new_tokens": 8})
        >>> len(samples[0].texts)
        4
        ```
    """
    if k < 1:
        raise ValueError(f"k must be at least 1 (completions per prompt), got {k}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    config = generation_config(tokenizer, generation)
    prompt_ids = []
    for i, prompt in enumerate(prompts):
        ids = encode_prompt(prompt, tokenizer)
        if not ids:
            raise ValueError(f"prompt {i}: no tokens (an empty prompt and a tokenizer without BOS); nothing to "
                             "condition on")
        prompt_ids.append(ids)
    vllm = sys.modules.get("vllm")  # a `vllm.LLM` exists only once vllm is imported: no import needed to check
    is_vllm = vllm is not None and isinstance(model, getattr(vllm, "LLM", ()))
    if backend == "vllm" or (backend == "auto" and is_vllm):
        from dpo_ext.sampling.vllm_backend import sample_with_vllm

        completions = sample_with_vllm(model, prompt_ids, k, config, seed, lora_request=lora_request)
        if progress is not None:
            progress(len(prompt_ids))
    else:
        completions = sample_token_ids(model, prompt_ids, k, config, seed, shard_sequences=shard_sequences,
                                       batch_sequences=batch_sequences, layout=layout, progress=progress)
    return [Samples(ids, rows, [tokenizer.decode(c, skip_special_tokens=True) for c in rows])
            for ids, rows in zip(prompt_ids, completions)]
