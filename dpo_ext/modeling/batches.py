"""Completion log-probs of a collated training batch in one forward pass: plain ``prompt + completion`` rows
(`dpo_ext.data.collate.RankedCollator`) or packed prefix-shared rows (`PackedRankedCollator`).
"""

import torch

from dpo_ext.data.collate import SEGMENT_IDS, is_packed
from dpo_ext.logps import sequence_logps
from dpo_ext.modeling.forward import block_attention_mask, on_token_grid, plain_rows_logps, target_logps
from dpo_ext.modeling.models import compute_dtype


def packed_token_logps(model, batch: dict):
    """Per-token log-probs of every completion of a packed batch, in one forward pass.

    Returns:
        `(per_token_logps, mask)`: both (N, C_max), one row per completion in `RankedCollator`'s row order;
        ``per_token_logps`` is float32 and 0 where ``mask`` is 0.
    """
    input_ids, mask = batch["input_ids"], batch["token_mask"]  # (B, L), (N, C)
    length = input_ids.shape[1]
    completion, token = mask.nonzero(as_tuple=True)
    predictor = batch["predictor_index"][completion, token]  # (n,) flat into B * L
    labels = input_ids.reshape(-1)[batch["token_index"][completion, token]]  # (n,)
    inputs = dict(input_ids=input_ids, attention_mask=block_attention_mask(batch[SEGMENT_IDS], compute_dtype(model)),
                  position_ids=batch["position_ids"], use_cache=False)
    logps = target_logps(model, inputs, predictor // length, predictor % length, labels)  # (1, n)
    return on_token_grid(logps, mask, completion, token)[0], mask  # (N, C)


def batch_token_logps(model, batch: dict):
    """``(per_token_logps, mask)``, one row per completion, for a plain batch or a packed (prefix-shared) one:
    (N, T - 1) each for plain rows, (N, C_max) for packed ones; float32 log-probs, 0 where the mask is 0."""
    if is_packed(batch):
        return packed_token_logps(model, batch)
    per_token, mask = plain_rows_logps(model, batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
    return per_token[0], mask


def completion_logps(model, batch: dict) -> torch.Tensor:
    """Summed completion log-probs (N,) for a collated batch, plain (`RankedCollator`) or packed."""
    return sequence_logps(*batch_token_logps(model, batch))
