"""Completion log-probs of a collated training batch in one forward pass: plain ``prompt + completion`` rows
(`dpo_ext.data.collate.RankedCollator`) or packed prefix-shared rows (`PackedRankedCollator`).
"""

import torch

from dpo_ext.data.collate import SEGMENT_IDS, is_packed
from dpo_ext.logps import gather_token_logps, picked_position_logps, sequence_logps, shift_for_next_token
from dpo_ext.modeling.models import accepts_logits_to_keep, compute_dtype


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


def block_attention_mask(segment_ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive 4-D mask (B, 1, L, L): 0 where query i may attend to key j, the dtype's minimum elsewhere.

    A token attends causally to the prompt (segment 0) and to earlier tokens of its own segment. Padding (segment
    -1) is hidden from everyone; a padding query attends to itself only, so no row of the softmax is empty.
    """
    length = segment_ids.shape[1]
    index = torch.arange(length, device=segment_ids.device)
    causal = index[:, None] >= index[None, :]  # (L, L)
    query, key = segment_ids[:, :, None], segment_ids[:, None, :]  # (B, L, 1), (B, 1, L)
    allowed = causal & (query >= 0) & (key >= 0) & ((key == 0) | (key == query))  # (B, L, L)
    allowed |= torch.eye(length, dtype=torch.bool, device=segment_ids.device)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=segment_ids.device)
    return mask.masked_fill_(~allowed, torch.finfo(dtype).min)[:, None]  # (B, 1, L, L)


def packed_token_logps(model, batch: dict, **model_kwargs):
    """Per-token log-probs of every completion of a packed batch, in one forward pass.

    Returns:
        `(per_token_logps, mask)`: both (N, C_max), one row per completion in `RankedCollator`'s row order;
        ``per_token_logps`` is float32 and 0 where ``mask`` is 0.
    """
    input_ids, mask = batch["input_ids"], batch["token_mask"]  # (B, L), (N, C)
    length = input_ids.shape[1]
    predictor = batch["predictor_index"]  # (N, C), flat into B * L
    # Logits only at positions that predict some completion token (the union over the batch's lists).
    keep = torch.unique(predictor[mask.bool()] % length) if bool(mask.any()) else predictor.new_zeros(1)
    attention = block_attention_mask(batch[SEGMENT_IDS], compute_dtype(model))
    kwargs = dict(input_ids=input_ids, attention_mask=attention, position_ids=batch["position_ids"], use_cache=False)
    if accepts_logits_to_keep(model):
        logits = model(**kwargs, logits_to_keep=keep, **model_kwargs).logits  # (B, len(keep), V)
    else:
        logits = model(**kwargs, **model_kwargs).logits[:, keep]
    flat = logits.reshape(-1, logits.shape[-1])  # (B * len(keep), V)
    # Where each predictor's logits landed: list b, column = its rank among the kept positions.
    column = torch.searchsorted(keep, predictor % length).clamp_max(keep.numel() - 1)  # (N, C)
    rows = (predictor // length) * keep.numel() + column
    labels = input_ids.reshape(-1)[batch["token_index"]]  # (N, C)
    # float32 copies of at most 2**26 elements (256 MiB) at a time
    return picked_position_logps(flat, rows, labels, max_elements=2**26) * mask, mask  # (N, C)


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
