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


def _tile_shape(positions: int, vocab: int, max_elements: int, min_rows: int = 256) -> tuple[int, int]:
    """(rows, vocab entries) of one logits tile of at most ``max_elements``: whole vocabulary rows when at least
    ``min_rows`` of them (or all positions) fit, else ``min_rows`` rows and a slice of the vocabulary, so that the
    projection stays a matrix product of useful height."""
    rows = max(1, max_elements // vocab)
    min_rows = max(1, min(min_rows, positions))  # never 0 rows, even without positions
    if rows >= min_rows:
        return max(1, min(rows, positions)), vocab
    return min_rows, max(1, max_elements // min_rows)


class _LinearTargetLogps(torch.autograd.Function):
    """See `linear_target_logps`. Forward keeps, per position, only the log-normaliser; backward recomputes each tile
    of logits and turns it into its gradient at once."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, positions, labels, max_elements):
        compute = weight.dtype if not torch.is_autocast_enabled(hidden.device.type) else \
            torch.get_autocast_dtype(hidden.device.type)
        rows, cols = _tile_shape(hidden.shape[0], weight.shape[0], max_elements)
        upcast = torch.promote_types(compute, torch.float32)  # float32, or float64 for float64 weights
        log_norm = hidden.new_full((hidden.shape[0],), float("-inf"), dtype=upcast)  # (M,)
        target_logits = hidden.new_zeros(positions.shape, dtype=upcast)  # (S,)
        for r0, v0, logits in _logit_tiles(hidden, weight, bias, compute, upcast, rows, cols):
            log_norm[r0:r0 + logits.shape[0]] = torch.logaddexp(log_norm[r0:r0 + logits.shape[0]],
                                                                 torch.logsumexp(logits, dim=-1))
            hit, row, col = _targets_in_tile(positions, labels, r0, v0, logits.shape)
            target_logits[hit] = logits[row, col]
            del logits  # before the next tile is computed: one tile alive at a time
        ctx.save_for_backward(hidden, weight, bias, positions, labels, log_norm)
        ctx.tiling = (compute, upcast, rows, cols)
        return target_logits - log_norm[positions]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):  # grad: (S,) float32
        hidden, weight, bias, positions, labels, log_norm = ctx.saved_tensors
        compute, upcast, rows, cols = ctx.tiling
        want_hidden, want_weight, want_bias = ctx.needs_input_grad[:3]
        # d logp_s / d logit[m, v] = [m = m_s][v = label_s] - [m = m_s] softmax[m, v]: every target at a position
        # takes that position's softmax once, weighted by the sum of their gradients.
        grad = grad.to(upcast)
        grad_per_position = torch.zeros_like(log_norm).index_add_(0, positions, grad)  # (M,)
        grad_hidden = torch.empty_like(hidden) if want_hidden else None  # filled one row tile at a time
        grad_weight = torch.zeros(weight.shape, dtype=upcast, device=weight.device) if want_weight else None
        grad_bias = torch.zeros(bias.shape, dtype=upcast, device=bias.device) if want_bias else None
        row_grad = None  # the current row tile's hidden-state gradient, summed over its vocabulary slices
        for r0, v0, logits in _logit_tiles(hidden, weight, bias, compute, upcast, rows, cols):
            r1, v1 = r0 + logits.shape[0], v0 + logits.shape[1]
            # in place: the tile becomes its own gradient
            grad_logits = logits.sub_(log_norm[r0:r1, None]).exp_().mul_(-grad_per_position[r0:r1, None])
            hit, row, col = _targets_in_tile(positions, labels, r0, v0, logits.shape)
            grad_logits.index_put_((row, col), grad[hit], accumulate=True)  # several targets may share an entry
            if grad_hidden is not None:
                part = (grad_logits.to(compute) @ weight[v0:v1].to(compute)).to(upcast)  # (rows, H)
                row_grad = part if v0 == 0 else row_grad + part
                if v1 == weight.shape[0]:
                    grad_hidden[r0:r1] = row_grad
            if grad_weight is not None:
                grad_weight[v0:v1] += grad_logits.to(compute).T @ hidden[r0:r1].to(compute)
            if grad_bias is not None:
                grad_bias[v0:v1] += grad_logits.sum(0)
            del logits, grad_logits  # before the next tile is computed
        return (grad_hidden,
                None if grad_weight is None else grad_weight.to(weight.dtype),
                None if grad_bias is None else grad_bias.to(bias.dtype), None, None, None)


def _logit_tiles(hidden, weight, bias, compute: torch.dtype, upcast: torch.dtype, rows: int, cols: int):
    """(first row, first vocabulary entry, logits tile in ``upcast``) over the (M, V) logits, one tile at a time."""
    with torch.autocast(hidden.device.type, enabled=False):
        for r0 in range(0, hidden.shape[0], rows):
            block = hidden[r0:r0 + rows].to(compute)  # (rows, H)
            for v0 in range(0, weight.shape[0], cols):
                part = None if bias is None else bias[v0:v0 + cols].to(compute)
                yield r0, v0, torch.nn.functional.linear(block, weight[v0:v0 + cols].to(compute), part).to(upcast)


def _targets_in_tile(positions, labels, r0: int, v0: int, shape) -> tuple:
    """The targets whose (position, label) fall in the tile at (r0, v0): their mask and in-tile coordinates."""
    hit = (positions >= r0) & (positions < r0 + shape[0]) & (labels >= v0) & (labels < v0 + shape[1])
    return hit, positions[hit] - r0, labels[hit] - v0


def linear_target_logps(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                        positions: torch.Tensor, labels: torch.Tensor, max_elements: int = 2**22) -> torch.Tensor:
    """log softmax(hidden @ weight.T + bias)[positions, labels] without the (M, V) logits: the LM head and the
    log-probs fused, for vocabularies where the logits would dominate memory.

    The logits are computed ``max_elements`` at a time (rows of positions by a slice of the vocabulary), in the
    dtype the plain head would use (autocast's, else the weight's), and upcast to float32 (float64 stays float64)
    per tile. Forward keeps one log-normaliser per position; backward recomputes each tile, so the peak is a few
    tiles whatever M and V. Gradients reach ``hidden``, ``weight`` and ``bias`` (accumulated in the upcast dtype).

    Args:
        hidden (`torch.Tensor`): (M, H) final hidden states of the kept positions.
        weight (`torch.Tensor`): (V, H) output embedding; ``bias``: (V,) or `None`.
        positions (`torch.Tensor`): (S,) long, row of ``hidden`` per target (several targets may share one).
        labels (`torch.Tensor`): (S,) long, the token id per target.

    Returns:
        `torch.Tensor`: (S,) float32 (float64 for float64 weights).
    """
    return _LinearTargetLogps.apply(hidden, weight, bias, positions.reshape(-1), labels.reshape(-1),
                                    max_elements).view(positions.shape)
