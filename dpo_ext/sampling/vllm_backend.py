"""The vLLM backend of `dpo_ext.sampling`: K completions per prompt with ``vllm.LLM.generate``.

NOT RUN HERE: vLLM needs a CUDA GPU and was never installed where this package is tested. This glue is written
against vLLM's documented API (``LLM(model=..., enable_lora=..., seed=...)``, ``SamplingParams(n, temperature, top_p,
top_k, seed, max_tokens, stop_token_ids)``, token-id prompts as ``{"prompt_token_ids": [...]}``,
``LoRARequest(name, int_id, path)``, outputs' ``.outputs[j].token_ids``), and its tests check only the arguments we
pass, against a stand-in module. Install with ``pip install 'dpo_ext[vllm]'``.

Determinism: every prompt is its own request with its own seed, ``shard_seed(seed, i)`` for prompt ``i``, so vLLM's
samples do not depend on how it batches requests either; they differ from the transformers backend's samples (other
kernels, other random streams).
"""

from dpo_ext.sampling.generate import eos_ids, shard_seed, until_eos


def _top_k(config) -> int:
    # transformers switches top-k off with 0 (or None); vLLM's documented "off" is -1.
    return -1 if not config.top_k else int(config.top_k)


def sampling_params(config, k: int, seed: int):
    """The ``vllm.SamplingParams`` equivalent of a `GenerationConfig` for one prompt's ``k`` samples."""
    from vllm import SamplingParams

    if config.do_sample is False:
        return SamplingParams(n=k, temperature=0.0, max_tokens=config.max_new_tokens,
                              stop_token_ids=eos_ids(config), seed=seed)
    return SamplingParams(n=k, temperature=float(config.temperature if config.temperature is not None else 1.0),
                          top_p=float(config.top_p if config.top_p is not None else 1.0), top_k=_top_k(config),
                          seed=seed, max_tokens=config.max_new_tokens, stop_token_ids=eos_ids(config))


def sample_with_vllm(llm, prompt_ids: list[list[int]], k: int, config, seed: int = 0, lora_request=None):
    """Sample ``k`` completions per prompt with ``llm`` (a ``vllm.LLM``). Not run here (see the module docstring).

    Args:
        llm (`vllm.LLM`): the engine (for an adapter: built with ``enable_lora=True``; pass ``lora_request``).
        prompt_ids (`list[list[int]]`): token ids per prompt.
        k (`int`): completions per prompt.
        config (`GenerationConfig`): sampling settings (`dpo_ext.sampling.generation_config`).
        seed (`int`): prompt ``i`` is seeded ``shard_seed(seed, i)``.
        lora_request (`vllm.lora.request.LoRARequest`, *optional*): the adapter to sample from.

    Returns:
        `list[list[list[int]]]`: (P, k) completions, each up to and including its first EOS.
    """
    params = [sampling_params(config, k, shard_seed(seed, i)) for i in range(len(prompt_ids))]
    requests = [{"prompt_token_ids": list(ids)} for ids in prompt_ids]
    outputs = llm.generate(requests, params, lora_request=lora_request, use_tqdm=False)
    stop = set(eos_ids(config))
    results = []
    for output in outputs:
        rows = []
        for completion in output.outputs:
            tokens = list(completion.token_ids)
            # vLLM ends a sequence at a stop token; should its ids ever leave that token out, put it back, so a
            # completion ends at its EOS as with the transformers backend.
            if getattr(completion, "finish_reason", None) == "stop" and completion.stop_reason in stop \
                    and (not tokens or tokens[-1] not in stop):
                tokens.append(completion.stop_reason)
            rows.append(until_eos(tokens, stop))
        results.append(rows)
    return results


def load_vllm(model_or_adapter: str, base_model: str | None = None, seed: int = 0, **engine_kwargs):
    """A ``vllm.LLM`` for a model folder / Hub id, or for a PEFT adapter on its base (returned with its
    ``LoRARequest``; otherwise `None`). Not run here (see the module docstring).

    Args:
        model_or_adapter (`str`): the model, or the adapter's folder.
        base_model (`str`, *optional*): the adapter's base (read from its ``adapter_config.json`` by the caller).
        engine_kwargs: passed to ``vllm.LLM`` (``gpu_memory_utilization``, ``dtype``...).
    """
    from vllm import LLM

    if base_model is None:
        return LLM(model=model_or_adapter, seed=seed, **engine_kwargs), None
    from vllm.lora.request import LoRARequest

    llm = LLM(model=base_model, enable_lora=True, seed=seed, **engine_kwargs)
    return llm, LoRARequest("policy", 1, model_or_adapter)
