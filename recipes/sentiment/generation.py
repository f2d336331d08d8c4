"""Sampling completions and scoring them with sequence log-probabilities; used by every later stage.

Conventions: a prompt is a list of token ids (no padding), a completion is the list of sampled token ids up to and
including the first EOS (or ``max_new_tokens`` tokens). Sampling is from the untouched distribution (temperature 1,
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


@torch.no_grad()
def sequence_logps(model, prompts, completions, pad_token_id, batch_size=64):
    """Sum over completion tokens of log p(token | prefix) under ``model`` as it is (adapters as set).

    Args:
        prompts (`list[list[int]]`): (N,) prompt token ids.
        completions (`list[list[int]]`): (N,) completion token ids.

    Returns:
        `torch.Tensor`: (N,) float32 on CPU.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    for pairs in _chunks(list(zip(prompts, completions)), batch_size):
        width = max(len(p) + len(c) for p, c in pairs)
        input_ids = torch.full((len(pairs), width), pad_token_id, dtype=torch.long)  # (B, T), right-padded
        completion_mask = torch.zeros((len(pairs), width), dtype=torch.bool)
        attention_mask = torch.zeros((len(pairs), width), dtype=torch.long)
        for row, (prompt, completion) in enumerate(pairs):
            ids = prompt + completion
            input_ids[row, : len(ids)] = torch.tensor(ids)
            attention_mask[row, : len(ids)] = 1
            completion_mask[row, len(prompt) : len(ids)] = True
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1].float()  # (B, T-1, V)
        # log p(target) = logit(target) - logsumexp(logits): one (B, T-1, V) temporary fewer than log_softmax,
        # which with small batches keeps the CPU out of page-fault (system) time.
        targets = input_ids[:, 1:, None]
        token_logps = logits.gather(-1, targets).squeeze(-1) - torch.logsumexp(logits, dim=-1)  # (B, T-1)
        mask = completion_mask[:, 1:].to(device)  # token t+1 is predicted at position t
        out.append((token_logps * mask).sum(-1).cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0)


def policy_and_reference_logps(peft_model, prompts, completions, pad_token_id, batch_size=64):
    """(policy, reference) sequence log-probs; the reference is the same model with its adapters disabled."""
    policy = sequence_logps(peft_model, prompts, completions, pad_token_id, batch_size)
    with peft_model.disable_adapter():
        reference = sequence_logps(peft_model, prompts, completions, pad_token_id, batch_size)
    return policy, reference


def implicit_rewards(peft_model, prompts, completions, beta, pad_token_id, batch_size=64):
    """The DPO implicit reward beta * (log pi(y|x) - log pi_ref(y|x)) of each completion, shape (N,).

    Integration point: a small local stand-in for `dpo_ext.ImplicitRewardScorer` (being written elsewhere); swap this
    body for the scorer once it lands, the signature is all the Best-of-N stage relies on.
    """
    policy, reference = policy_and_reference_logps(peft_model, prompts, completions, pad_token_id, batch_size)
    return beta * (policy - reference)
