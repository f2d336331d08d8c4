"""The transformers backend of `dpo_ext.sampling`: settings, prompt encoding, shards and the fixed computation of
one shard with ``generate`` (the module docstring of `dpo_ext.sampling` says why it is laid out this way)."""

import copy
from collections import defaultdict
from dataclasses import dataclass

import torch

# Sequences (prompts x K) per shard, and generated per `generate` call inside a shard: the sentiment recipe's values,
# so its samples are those it always drew.
SHARD_SEQUENCES = 1024
BATCH_SEQUENCES = 256
# How a shard's prompts are laid out in `generate` calls (see the module docstring of `dpo_ext.sampling`). The default
# is the faster one as `benchmarks/sampling.py` measured it; the sentiment recipe names "by_length" (its samples).
LAYOUTS = ("padded", "by_length")
LAYOUT = "padded"
DEFAULT_GENERATION = {"do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 1.0, "max_new_tokens": 64}


@dataclass
class Samples:
    """The K samples of one prompt: the prompt's token ids, each sample's token ids (up to and including EOS) and its
    decoded text (special tokens skipped)."""

    prompt_ids: list[int]
    completion_ids: list[list[int]]
    texts: list[str]


def generation_config(tokenizer=None, generation=None):
    """The `GenerationConfig` to sample with: `DEFAULT_GENERATION` updated by ``generation`` (a dict of any
    `GenerationConfig` fields), or a copy of ``generation`` when it is a `GenerationConfig`; EOS and padding ids
    default to the tokenizer's (padding to EOS when it has none)."""
    from transformers import GenerationConfig

    if generation is None or isinstance(generation, dict):
        config = GenerationConfig(**{**DEFAULT_GENERATION, **(generation or {})})
    else:
        config = copy.deepcopy(generation)
    check_generation(config)
    if config.eos_token_id is None and tokenizer is not None:
        config.eos_token_id = tokenizer.eos_token_id
    if config.pad_token_id is None:
        pad = tokenizer.pad_token_id if tokenizer is not None else None
        config.pad_token_id = pad if pad is not None else eos_ids(config)[0] if eos_ids(config) else None
    return config


def check_generation(config) -> None:
    """Refuse sampling settings that cannot sample (`generate` would fail deep inside, or not sample at all), naming
    the field: ``max_new_tokens`` below 1, a temperature that is not above 0, ``top_p`` outside (0, 1], a negative
    ``top_k``.

    Raises:
        `ValueError`: naming the field and its value.
    """
    def bad(value, ok):
        return isinstance(value, bool) or not isinstance(value, (int, float)) or not ok(value)

    problems = [(name, value, rule) for name, value, ok, rule in (
        ("max_new_tokens", config.max_new_tokens, lambda v: int(v) == v and v >= 1, "a whole number >= 1"),
        ("temperature", config.temperature, lambda v: v > 0 and v == v, "above 0 (sampling; 1.0 is the model's own "
                                                                       "distribution)"),
        ("top_p", config.top_p, lambda v: 0 < v <= 1, "in (0, 1] (1.0: off)"),
        ("top_k", config.top_k, lambda v: int(v) == v and v >= 0, "a whole number >= 0 (0: off)"),
    ) if value is not None and bad(value, ok)]
    if problems:
        name, value, rule = problems[0]
        raise ValueError(f"generation setting {name}={value!r}: must be {rule}")


def eos_ids(config) -> list[int]:
    """The EOS token ids of a `GenerationConfig` (one id or a list)."""
    eos = config.eos_token_id
    return [token for token in (eos if isinstance(eos, (list, tuple)) else [eos]) if token is not None]


def encode_prompt(prompt, tokenizer) -> list[int]:
    """Token ids a sampler continues: token ids as given, chat messages rendered with the chat template and the
    generation prompt, or the plain text tokenized."""
    if isinstance(prompt, (list, tuple)) and prompt and all(isinstance(t, int) for t in prompt):
        return list(prompt)
    if isinstance(prompt, list):
        if tokenizer.chat_template is None:
            raise ValueError("a prompt is a list of chat messages but the tokenizer has no chat template")
        encoded = tokenizer.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True, return_dict=True)
        return list(encoded["input_ids"])
    return list(tokenizer(prompt)["input_ids"])


def until_eos(ids: list[int], stop) -> list[int]:
    """``ids`` cut after the first token in ``stop`` (EOS ids; the EOS is part of the completion, as in training)."""
    for j, token in enumerate(ids):
        if token in stop:
            return ids[: j + 1]
    return ids


def shard_seed(seed: int, shard: int) -> int:
    """The seed of shard ``shard`` of a sampling run seeded ``seed`` (a prime stride keeps runs apart)."""
    return seed * 100_003 + shard


def plan_shards(num_prompts: int, k: int, shard_sequences: int = SHARD_SEQUENCES) -> list[range]:
    """Prompt index ranges of the shards: ``max(1, shard_sequences // k)`` prompts each, in order."""
    per_shard = max(1, shard_sequences // k)
    return [range(start, min(start + per_shard, num_prompts)) for start in range(0, num_prompts, per_shard)]


def plan_calls(prompt_ids: list[list[int]], k: int, batch_sequences: int = BATCH_SEQUENCES,
               layout: str = LAYOUT) -> list[list[int]]:
    """The prompt indices of each `generate` call of a shard, in call order: ``max(1, batch_sequences // k)``
    prompts per call, shortest prompts first (ties in input order); ``"by_length"`` never puts two lengths in one
    call, ``"padded"`` fills every call (prompts of one length: the same calls)."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    rows_per_call = max(1, batch_sequences // k)
    order = sorted(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]))  # stable: ties keep input order
    if layout == "padded":
        groups = [order]
    else:
        by_length = defaultdict(list)
        for index in order:
            by_length[len(prompt_ids[index])].append(index)
        groups = list(by_length.values())
    return [group[start : start + rows_per_call] for group in groups for start in range(0, len(group), rows_per_call)]


def left_pad(prompts: list[list[int]], pad_token_id) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)``, both (b, L): the prompts left-padded to the longest, so every row's next
    token is at the same column; ``generate`` derives position ids from the mask (the cumulative sum), so a padded
    prompt is read at the positions it has alone."""
    width = max(len(p) for p in prompts)
    pad = 0 if pad_token_id is None else pad_token_id  # masked out: any id will do
    input_ids = torch.tensor([[pad] * (width - len(p)) + list(p) for p in prompts])  # (b, L)
    attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])  # (b, L)
    return input_ids, attention_mask


@torch.no_grad()
def sample_shard(model, prompt_ids: list[list[int]], k: int, config, seed: int,
                 batch_sequences: int = BATCH_SEQUENCES, layout: str = LAYOUT) -> list[list[list[int]]]:
    """Sample ``k`` completions for each prompt of one shard, as one fixed computation on a stream seeded ``seed``.

    Args:
        model: a causal LM or `PeftModel` (adapters as they are set); put in eval mode meanwhile.
        prompt_ids (`list[list[int]]`): token ids per prompt, none empty.
        k (`int`): completions per prompt.
        config (`GenerationConfig`): see `generation_config`; ``num_return_sequences`` is ignored.
        seed (`int`): the shard's seed; the caller's random state is restored afterwards.
        batch_sequences (`int`): sequences per `generate` call (see the module docstring: part of the result).
        layout (`str`, defaults to `LAYOUT`): ``"padded"`` or ``"by_length"`` (`plan_calls`; part of the result).

    Returns:
        `list[list[list[int]]]`: (P, k) completions as token-id lists.
    """
    calls = plan_calls(prompt_ids, k, batch_sequences, layout)
    config = copy.deepcopy(config)
    config.num_return_sequences = 1  # the K rows are repeated prompts, so each call's layout is ours
    stop = set(eos_ids(config))
    results = [[None] * k for _ in prompt_ids]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            for indices in calls:
                input_ids, attention_mask = left_pad([prompt_ids[i] for i in indices], config.pad_token_id)
                # (b * k, L): a prompt's k rows together
                input_ids = input_ids.repeat_interleave(k, dim=0).to(device)
                attention_mask = attention_mask.repeat_interleave(k, dim=0).to(device)
                output = model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config)
                width = input_ids.shape[1]
                for row, tokens in enumerate(output[:, width:].tolist()):  # (b * k, <= max_new_tokens)
                    results[indices[row // k]][row % k] = until_eos(tokens, stop)
    finally:
        model.train(was_training)
    return results


def sample_token_ids(model, prompt_ids: list[list[int]], k: int, config, seed: int = 0, *,
                     shard_sequences: int = SHARD_SEQUENCES, batch_sequences: int = BATCH_SEQUENCES,
                     layout: str = LAYOUT, shards=None, progress=None) -> list:
    """`sample_shard` over the shards of `plan_shards`, shard ``i`` seeded ``shard_seed(seed, i)``.

    Args:
        shards (`Iterable[int]`, *optional*): run only these shards (a worker's share); the prompts of the others
            get `None`. The samples of a shard never depend on which others run.
        progress (`Callable[[int], None]`, *optional*): called with the number of prompts of each finished shard.
        layout (`str`, defaults to `LAYOUT`): how a shard's prompts share `generate` calls (`plan_calls`).

    Returns:
        `list`: (P, k) completions as token-id lists (`None` rows for shards not run).
    """
    plan = plan_shards(len(prompt_ids), k, shard_sequences)
    chosen = set(range(len(plan)) if shards is None else shards)
    results = [None] * len(prompt_ids)
    for i, indices in enumerate(plan):
        if i not in chosen:
            continue
        results[indices.start : indices.stop] = sample_shard(model, prompt_ids[indices.start : indices.stop], k,
                                                             config, shard_seed(seed, i), batch_sequences, layout)
        if progress is not None:
            progress(len(indices))
    return results
