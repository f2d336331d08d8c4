"""Per-token and per-sequence log-probabilities from logits, labels and masks (pure tensor functions).

Shapes: N rows (one per prompt + completion), T tokens, V vocabulary entries. Logits at position t predict the token
at t + 1, so a row of T tokens has T - 1 scorable positions.
"""

import torch


def picked_position_logps(flat_logits: torch.Tensor, positions: torch.Tensor, labels: torch.Tensor,
                          max_elements: int = 2**22) -> torch.Tensor:
    """log softmax(flat_logits[positions])[labels] for any number of targets per kept position.

    The log-normaliser of every kept position is computed once, ``max_elements`` float32 elements at a time, and
    shared by all targets at that position, so no (targets, V) copy of the logits is ever made.

    Args:
        flat_logits (`torch.Tensor`): (M, V) logits of the kept positions, any float dtype.
        positions (`torch.Tensor`): indices into the M positions, any shape S.
        labels (`torch.Tensor`): token ids, shape S.

    Returns:
        `torch.Tensor`: shape S, float32.
    """
    step = max(1, max_elements // flat_logits.shape[-1])
    lse = torch.cat([torch.logsumexp(c.float(), dim=-1) for c in flat_logits.split(step)])  # (M,)
    return flat_logits[positions, labels].float() - lse[positions]


def sequence_logps(per_token_logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum of per-token log-probabilities over masked positions: (N, T) x (N, T) -> (N,)."""
    return (per_token_logps * mask.to(per_token_logps.dtype)).sum(-1)


def to_grid(values: torch.Tensor, slot_index: torch.Tensor, batch_size: int, num_slots: int) -> torch.Tensor:
    """Scatter per-row values (N,) into their (B, K) slots; slots without a row hold 0 (their rank is -1)."""
    grid = values.new_zeros(batch_size * num_slots)
    grid = grid.index_copy(0, slot_index, values)  # differentiable, unlike in-place indexing on a leaf
    return grid.view(batch_size, num_slots)
