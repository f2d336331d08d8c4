"""Sampling N completions per prompt for Best-of-N (the sampler is any causal LM with ``generate``)."""

import copy
from dataclasses import dataclass

import torch


@dataclass
class Samples:
    """The n samples of one prompt: the prompt's token ids, each sample's token ids (up to and including EOS)
    and its decoded text."""

    prompt_ids: list[int]
    completion_ids: list[list[int]]
    texts: list[str]


def _generation_config(model, tokenizer, generation_config):
    from transformers import GenerationConfig

    defaults = dict(do_sample=True, top_k=0, top_p=1.0, temperature=1.0, max_new_tokens=64)
    if generation_config is None:
        config = GenerationConfig(**defaults)
    elif isinstance(generation_config, dict):
        config = GenerationConfig(**{**defaults, **generation_config})
    else:
        config = copy.deepcopy(generation_config)
    if config.eos_token_id is None:
        config.eos_token_id = tokenizer.eos_token_id
    if config.pad_token_id is None:
        config.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else config.eos_token_id
    return config


def encode_prompt(prompt, tokenizer) -> list[int]:
    """Token ids a sampler continues: the chat template with the generation prompt, or the plain text."""
    if isinstance(prompt, list):
        if tokenizer.chat_template is None:
            raise ValueError("a prompt is a list of chat messages but the tokenizer has no chat template")
        encoded = tokenizer.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True, return_dict=True)
        return list(encoded["input_ids"])
    return list(tokenizer(prompt)["input_ids"])


def _until_eos(ids: list[int], eos_ids: set) -> list[int]:
    for j, token in enumerate(ids):
        if token in eos_ids:
            return ids[: j + 1]  # the EOS is part of the completion, as in training
    return ids


@torch.inference_mode()
def sample_completions(model, tokenizer, prompts, n: int, generation_config=None) -> list[Samples]:
    """Sample ``n`` completions for each prompt (one ``generate`` call per prompt, ``num_return_sequences=n``)."""
    config = _generation_config(model, tokenizer, generation_config)
    config.num_return_sequences = n
    eos = config.eos_token_id
    eos_ids = set(eos if isinstance(eos, (list, tuple)) else [eos]) - {None}
    device = next(model.parameters()).device
    out = []
    for i, prompt in enumerate(prompts):
        prompt_ids = encode_prompt(prompt, tokenizer)
        if not prompt_ids:
            raise ValueError(f"prompt {i}: no tokens (an empty prompt and a tokenizer without BOS); nothing to "
                             "condition on")
        input_ids = torch.tensor([prompt_ids], device=device)
        generated = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                   generation_config=config)
        completions = [_until_eos(row.tolist(), eos_ids) for row in generated[:, len(prompt_ids):]]
        texts = [tokenizer.decode(c, skip_special_tokens=True) for c in completions]
        out.append(Samples(prompt_ids, completions, texts))
    return out
