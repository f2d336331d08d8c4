"""One forward pass of a causal LM over a collated batch of ``prompt + completion`` rows -> completion log-probs."""

import torch

from .logps import gather_token_logps, sequence_logps, shift_for_next_token
from .model_utils import accepts_logits_to_keep
from .prefix_sharing import is_packed, packed_token_logps


def completion_token_logps(model, input_ids, attention_mask, completion_mask, **model_kwargs):
    """Per-token log-probs of completion tokens in one forward pass.

    The LM head is only applied from the first position that predicts a completion token onwards (the prompt
    positions before it never need logits), which saves most of the (N, T, V) logits when prompts are long.

    Returns:
        `(per_token_logps, mask)`: both (N, T - 1); ``per_token_logps`` is float32 and 0 where ``mask`` is 0.
    """
    labels, mask = shift_for_next_token(input_ids, completion_mask)
    seq_len = input_ids.shape[1]
    first = int(mask.any(0).float().argmax()) if bool(mask.any()) else seq_len - 1  # earliest scored position
    keep = seq_len - first  # logits for positions first .. T-1
    if accepts_logits_to_keep(model):
        logits = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=keep,
                       use_cache=False, **model_kwargs).logits  # (N, keep, V)
    else:
        logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **model_kwargs).logits
        logits = logits[:, -keep:]
    # Position first + j predicts label index first + j; the last logit (position T-1) predicts nothing.
    logits = logits[:, :-1]
    token_logps = gather_token_logps(logits, labels[:, first:])  # (N, T-1-first)
    per_token = torch.zeros(labels.shape, dtype=token_logps.dtype, device=token_logps.device)
    per_token = torch.cat([per_token[:, :first], token_logps], dim=1) * mask
    return per_token, mask


def batch_token_logps(model, batch: dict, **model_kwargs):
    """``(per_token_logps, mask)``, one row per completion, for a plain batch or a packed (prefix-shared) one."""
    if is_packed(batch):
        return packed_token_logps(model, batch, **model_kwargs)  # (N, C_max)
    return completion_token_logps(
        model, batch["input_ids"], batch["attention_mask"], batch["completion_mask"], **model_kwargs
    )  # (N, T-1)


def completion_logps(model, batch: dict, **model_kwargs) -> torch.Tensor:
    """Summed completion log-probs (N,) for a collated batch, plain (`RankedCollator`) or packed."""
    return sequence_logps(*batch_token_logps(model, batch, **model_kwargs))
