"""The fused LM head (`linear_target_logps`): values and gradients of log softmax(hidden @ W.T + b) at targets, computed
tile by tile, against a hand-worked case, against torch's own log_softmax on the whole logits (float64, any tiling),
and in the dtypes a model computes in.
"""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dpo_ext.logps import linear_target_logps

FAST = settings(max_examples=40, deadline=None, derandomize=True, database=None)


def approx(expected):
    return pytest.approx(expected, abs=1e-12)


def test_hand_worked_value_and_gradients():
    """One position, H = 1, hidden = 1, W = (0, ln 2, ln 5): logits (0, ln 2, ln 5), exp-sum 1 + 2 + 5 = 8.

    log p(token 1) = ln 2 - ln 8 = -ln 4. softmax = (1/8, 2/8, 5/8).
    d/d hidden = W_1 - sum_v p_v W_v = ln 2 - (2 ln 2 + 5 ln 5) / 8.
    d/d W_v = hidden * ([v = 1] - p_v) = (-1/8, 6/8, -5/8); d/d b is the same (bias 0).
    """
    hidden = torch.tensor([[1.0]], dtype=torch.float64, requires_grad=True)
    weight = torch.tensor([[0.0], [math.log(2)], [math.log(5)]], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    logp = linear_target_logps(hidden, weight, bias, torch.tensor([0]), torch.tensor([1]))
    logp.sum().backward()
    assert logp.item() == approx(-math.log(4))
    assert hidden.grad.item() == approx(math.log(2) - (2 * math.log(2) + 5 * math.log(5)) / 8)
    assert weight.grad.flatten().tolist() == approx([-1 / 8, 6 / 8, -5 / 8])
    assert bias.grad.tolist() == approx([-1 / 8, 6 / 8, -5 / 8])


@FAST
@given(positions=st.integers(1, 40), vocab=st.integers(2, 300), width=st.integers(1, 8),
       max_elements=st.sampled_from([1, 7, 64, 1000, 2**22]), targets_per_position=st.integers(1, 3),
       with_bias=st.booleans(), seed=st.integers(0, 2**16))
def test_any_tiling_equals_log_softmax_of_the_whole_logits(positions, vocab, width, max_elements,
                                                          targets_per_position, with_bias, seed):
    """Tiles of one entry, of a vocabulary slice, of whole rows, or one tile for everything: the same values and
    gradients as torch's log_softmax over the materialised (M, V) logits, with targets sharing positions and
    repeating (position, label) pairs."""
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(positions, width, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(vocab, width, generator=gen, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(vocab, generator=gen, dtype=torch.float64, requires_grad=True) if with_bias else None
    n_targets = positions * targets_per_position
    rows = torch.randint(0, positions, (n_targets,), generator=gen)
    labels = torch.randint(0, vocab, (n_targets,), generator=gen)
    labels[-1], rows[-1] = labels[0], rows[0]  # one (position, label) pair twice
    upstream = torch.randn(n_targets, generator=gen, dtype=torch.float64)

    fused = linear_target_logps(hidden, weight, bias, rows, labels, max_elements)
    fused_grads = torch.autograd.grad((fused * upstream).sum(), [t for t in (hidden, weight, bias) if t is not None])
    logits = hidden @ weight.T + (0 if bias is None else bias)  # (M, V)
    plain = torch.log_softmax(logits, dim=-1)[rows, labels]
    plain_grads = torch.autograd.grad((plain * upstream).sum(), [t for t in (hidden, weight, bias) if t is not None])

    torch.testing.assert_close(fused, plain, rtol=0, atol=1e-10)
    for got, want in zip(fused_grads, plain_grads):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-9)


def test_targets_keep_their_shape_and_only_needed_gradients_are_computed():
    hidden = torch.randn(4, 3, requires_grad=True)
    weight = torch.randn(10, 3)  # a frozen head: no gradient for it
    rows = torch.tensor([[0, 1, 2], [3, 3, 0]])
    labels = torch.tensor([[1, 2, 3], [4, 5, 6]])
    out = linear_target_logps(hidden, weight, None, rows, labels, max_elements=8)
    assert out.shape == (2, 3) and out.dtype == torch.float32
    out.sum().backward()
    assert hidden.grad is not None and weight.grad is None
    assert torch.all(out < 0)


def test_no_positions_give_no_log_probs_and_a_zero_gradient():
    hidden = torch.zeros(0, 3, requires_grad=True)
    out = linear_target_logps(hidden, torch.randn(5, 3), None, torch.zeros(0, dtype=torch.long),
                              torch.zeros(0, dtype=torch.long))
    assert out.shape == (0,)
    out.sum().backward()
    assert hidden.grad.shape == (0, 3)


def test_bfloat16_head_computes_like_the_plain_head():
    """The tile is projected in the weight's dtype and upcast, as ``nn.Linear`` then ``.float()`` would do, so the
    fused values match the plain bf16 head to float32 rounding, not only to bf16's."""
    torch.manual_seed(0)
    hidden = torch.randn(64, 16).bfloat16()
    weight = torch.randn(500, 16).bfloat16()
    rows, labels = torch.arange(64), torch.randint(0, 500, (64,))
    fused = linear_target_logps(hidden, weight, None, rows, labels, max_elements=2000)
    plain = torch.log_softmax(torch.nn.functional.linear(hidden, weight).float(), dim=-1)[rows, labels]
    torch.testing.assert_close(fused, plain, rtol=0, atol=1e-5)


def test_under_autocast_the_tiles_use_the_autocast_dtype():
    """float32 weights under bf16 autocast: the head would run in bf16, and so do the tiles (values far from the
    float32 result, equal to the autocast one)."""
    torch.manual_seed(0)
    hidden, weight = torch.randn(32, 64), torch.randn(300, 64)
    rows, labels = torch.arange(32), torch.randint(0, 300, (32,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fused = linear_target_logps(hidden, weight, None, rows, labels, max_elements=1000)
        autocast_logits = torch.nn.functional.linear(hidden, weight).float()
    float32 = torch.log_softmax(hidden @ weight.T, dim=-1)[rows, labels]
    plain = torch.log_softmax(autocast_logits, dim=-1)[rows, labels]
    torch.testing.assert_close(fused, plain, rtol=0, atol=1e-5)
    assert (fused - float32).abs().max() > 1e-3
