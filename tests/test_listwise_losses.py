"""The all-pairs DPO and LiPO-lambda losses: hand-worked values, slow loop implementations written from the
definitions, K = 2 reductions, missing slots and ties, and properties over random inputs (hypothesis)."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dpo_ext.losses import all_pairs_loss, dpo_loss, lipo_lambda_loss, rank_labels

FAST = settings(max_examples=40, deadline=None, derandomize=True, database=None)


def test_all_pairs_by_hand():
    """r = [1, 0, 0.5] (beta 1, reference 0), ranking 0 > 1 > 2: pairs (0,1), (0,2), (1,2) with margins 1, 0.5, -0.5.

    -log sigmoid(m) = log(1 + e^-m): 0.3132617, 0.4740770, 0.9740770; mean 1.7614157 / 3 = 0.5871386.
    """
    loss = all_pairs_loss(torch.tensor([[1.0, 0.0, 0.5]]), torch.zeros(1, 3), beta=1.0)
    assert loss.item() == pytest.approx(0.5871386, abs=1e-6)


def test_lipo_lambda_by_hand():
    """r = [1, 0, 0.5], ranks [0, 1, 2] -> labels psi = [1, 0.5, 0] (`rank_labels`), gains 2^psi - 1 =
    [1, 0.4142136, 0]. The reward order is slot 0, slot 2, slot 1, so tau = [1, 3, 2] and 1/log2(1 + tau) =
    [1, 0.5, 0.6309298].

    Delta_01 = 0.5857864 * 0.5       = 0.2928932, times log(1 + e^-1)   = 0.3132617
    Delta_02 = 1         * 0.3690702 = 0.3690702, times log(1 + e^-0.5) = 0.4740770
    Delta_12 = 0.4142136 * 0.1309298 = 0.0542329, times log(1 + e^0.5)  = 0.9740770
    loss = 0.0917524 + 0.1749677 + 0.0528271 = 0.3195469
    """
    loss = lipo_lambda_loss(torch.tensor([[1.0, 0.0, 0.5]]), torch.zeros(1, 3), beta=1.0)
    assert loss.item() == pytest.approx(0.3195469, abs=1e-6)


def test_lipo_lambda_uses_the_labels_not_only_their_order():
    """Labels [0.9, 0.1] against [0.6, 0.4]: same order, gains 2^psi - 1 differ, so the K=2 loss scales with
    G_1 - G_2: (0.8660660 - 0.0717735) vs (0.5157166 - 0.3195079)."""
    policy, ref = torch.tensor([[0.3, 0.1], [0.3, 0.1]]), torch.zeros(2, 2)
    loss = lipo_lambda_loss(policy, ref, 1.0, labels=torch.tensor([[0.9, 0.1], [0.6, 0.4]]))
    dpo = dpo_loss(policy[:, 0], policy[:, 1], ref[:, 0], ref[:, 1], 1.0)
    gaps = torch.tensor([2 ** 0.9 - 2 ** 0.1, 2 ** 0.6 - 2 ** 0.4])
    torch.testing.assert_close(loss, gaps * (1 - 1 / math.log2(3)) * dpo)


def test_rank_labels():
    ranks = torch.tensor([[0, 1, 2, 3], [0, 1, 1, -1], [2, 0, 2, 2], [0, 0, -1, -1]])
    expected = torch.tensor([[1, 2 / 3, 1 / 3, 0], [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]])
    torch.testing.assert_close(rank_labels(ranks), expected)


# -- slow implementations, written from the definitions ------------------------------------------------------------

def _all_pairs_by_loops(rewards, ranks):
    terms = [-math.log(1 / (1 + math.exp(-(rewards[i] - rewards[j]))))
             for i in range(len(ranks)) for j in range(len(ranks)) if 0 <= ranks[i] < ranks[j]]
    return sum(terms) / len(terms) if terms else 0.0


def _lipo_by_loops(rewards, ranks, labels):
    present = [k for k in range(len(ranks)) if ranks[k] >= 0]
    by_reward = sorted(present, key=lambda k: (-rewards[k], k))
    tau = {k: by_reward.index(k) + 1 for k in present}
    total = 0.0
    for i in present:
        for j in present:
            if labels[i] > labels[j]:
                delta = abs((2 ** labels[i] - 1) - (2 ** labels[j] - 1)) * \
                    abs(1 / math.log2(1 + tau[i]) - 1 / math.log2(1 + tau[j]))
                total += delta * math.log1p(math.exp(-(rewards[i] - rewards[j])))
    return total


def _random_problem(seed, k=5):
    gen = torch.Generator().manual_seed(seed)
    policy = torch.randn(4, k, generator=gen, dtype=torch.float64) * 3
    ref = torch.randn(4, k, generator=gen, dtype=torch.float64) * 3
    ranks = torch.randint(0, 3, (4, k), generator=gen)  # ties
    ranks[torch.rand(4, k, generator=gen) < 0.2] = -1  # missing slots
    labels = torch.rand(4, k, generator=gen, dtype=torch.float64)
    labels[:, 1] = labels[:, 0]  # a tied label pair in every list
    return policy, ref, ranks, labels


@pytest.mark.parametrize("seed", range(6))
def test_match_loop_implementations(seed):
    policy, ref, ranks, labels = _random_problem(seed)
    beta = 0.7
    rewards = (beta * (policy - ref)).tolist()
    expected_pairs = [_all_pairs_by_loops(r, k) for r, k in zip(rewards, ranks.tolist())]
    torch.testing.assert_close(all_pairs_loss(policy, ref, beta, ranks), torch.tensor(expected_pairs,
                                                                                       dtype=torch.float64))
    by_labels = [_lipo_by_loops(r, k, psi) for r, k, psi in zip(rewards, ranks.tolist(), labels.tolist())]
    torch.testing.assert_close(lipo_lambda_loss(policy, ref, beta, ranks, labels),
                               torch.tensor(by_labels, dtype=torch.float64))
    from_ranks = [_lipo_by_loops(r, k, psi) for r, k, psi in zip(rewards, ranks.tolist(), rank_labels(ranks).tolist())]
    torch.testing.assert_close(lipo_lambda_loss(policy, ref, beta, ranks), torch.tensor(from_ranks,
                                                                                        dtype=torch.float64))


def test_k2_reductions():
    torch.manual_seed(0)
    policy, ref = torch.randn(16, 2) * 5, torch.randn(16, 2) * 5
    dpo = dpo_loss(policy[:, 0], policy[:, 1], ref[:, 0], ref[:, 1], beta=0.3)
    torch.testing.assert_close(all_pairs_loss(policy, ref, 0.3), dpo)
    # rank-only K=2: labels 1 and 0, gains 1 and 0, discounts 1 and 1/log2(3) whatever the reward order
    torch.testing.assert_close(lipo_lambda_loss(policy, ref, 0.3), (1 - 1 / math.log2(3)) * dpo)


def test_missing_slots_get_zero_gradient_and_garbage_does_not_leak():
    policy = torch.tensor([[2.0, float("nan"), 0.5, 1.0]], requires_grad=True)
    ref = torch.tensor([[0.0, float("inf"), 0.1, 0.3]])
    ranks = torch.tensor([[0, -1, 1, 2]])
    labels = torch.tensor([[0.9, float("nan"), 0.5, 0.1]])
    for loss_fn, kwargs in ((all_pairs_loss, {}), (lipo_lambda_loss, {"labels": labels})):
        loss = loss_fn(policy, ref, 1.0, ranks, **kwargs)
        smaller = loss_fn(policy.detach()[:, [0, 2, 3]], ref[:, [0, 2, 3]], 1.0, ranks[:, [0, 2, 3]],
                          **{k: v[:, [0, 2, 3]] for k, v in kwargs.items()})
        torch.testing.assert_close(loss.detach(), smaller)
        (grad,) = torch.autograd.grad(loss.sum(), policy)
        assert grad[0, 1] == 0 and torch.isfinite(grad).all(), grad


def test_ties_contribute_nothing():
    policy = torch.randn(1, 3, requires_grad=True)
    ref = torch.zeros(1, 3)
    for loss in (all_pairs_loss(policy, ref, 1.0, torch.tensor([[1, 1, 1]])),
                 lipo_lambda_loss(policy, ref, 1.0, labels=torch.tensor([[0.4, 0.4, 0.4]]))):
        assert loss.item() == 0
        (grad,) = torch.autograd.grad(loss.sum(), policy)
        assert (grad == 0).all()
    # a tied label pair: the same loss as with the pair's labels moved apart by nothing else
    tied = lipo_lambda_loss(policy.detach(), ref, 1.0, labels=torch.tensor([[0.8, 0.8, 0.1]]))
    expected = _lipo_by_loops(policy.detach()[0].tolist(), [0, 0, 1], [0.8, 0.8, 0.1])
    assert tied.item() == pytest.approx(expected, abs=1e-6)


def test_lipo_weights_carry_no_gradient():
    """The gradient is that of sum Delta_ij * -log sigmoid(s_i - s_j) with Delta held fixed."""
    policy = torch.tensor([[0.3, -0.2, 0.9]], dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([[0.7, 0.2, 0.4]], dtype=torch.float64)
    (grad,) = torch.autograd.grad(lipo_lambda_loss(policy, torch.zeros_like(policy), 2.0, labels=labels).sum(),
                                  policy)
    eps, numeric = 1e-6, []
    for k in range(3):  # central differences move s by 2e-6: not enough to reorder the rewards
        up, down = policy.detach().clone(), policy.detach().clone()
        up[0, k] += eps
        down[0, k] -= eps
        numeric.append((lipo_lambda_loss(up, torch.zeros_like(up), 2.0, labels=labels)
                        - lipo_lambda_loss(down, torch.zeros_like(down), 2.0, labels=labels)).item() / (2 * eps))
    torch.testing.assert_close(grad[0], torch.tensor(numeric, dtype=torch.float64), atol=1e-6, rtol=1e-6)


def test_shape_errors_are_clear():
    with pytest.raises(ValueError, match="labels must have shape"):
        lipo_lambda_loss(torch.zeros(2, 3), torch.zeros(2, 3), 1.0, labels=torch.zeros(2, 2))
    with pytest.raises(ValueError, match="ranks must have shape"):
        all_pairs_loss(torch.zeros(2, 3), torch.zeros(2, 3), 1.0, torch.zeros(2, 2))


# -- properties ------------------------------------------------------------------------------------------------------

LISTS = st.integers(2, 6).flatmap(lambda k: st.tuples(
    st.lists(st.floats(-50, 50, allow_nan=False), min_size=k, max_size=k),
    st.lists(st.integers(-1, 3), min_size=k, max_size=k),
    st.lists(st.floats(0, 1, allow_nan=False), min_size=k, max_size=k),
    st.permutations(range(k)),
))


@FAST
@given(LISTS, st.floats(0.01, 5.0))
def test_properties(problem, beta):
    logps, ranks, labels, permutation = problem
    policy = torch.tensor([logps], dtype=torch.float64)
    ref = torch.zeros_like(policy)
    ranks, labels = torch.tensor([ranks]), torch.tensor([labels], dtype=torch.float64)
    pairs = all_pairs_loss(policy, ref, beta, ranks)
    lipo = lipo_lambda_loss(policy, ref, beta, ranks, labels)
    assert pairs.item() >= 0 and lipo.item() >= 0
    # the order of the slots is not information: permuting every input together changes nothing
    # (up to ties in the reward order, which keep slot order: only checked where the rewards are distinct)
    p = list(permutation)
    torch.testing.assert_close(all_pairs_loss(policy[:, p], ref, beta, ranks[:, p]), pairs)
    if len(set(logps)) == len(logps):
        torch.testing.assert_close(lipo_lambda_loss(policy[:, p], ref, beta, ranks[:, p], labels[:, p]), lipo)
    # the loop implementations agree on every input
    rewards = (beta * policy[0]).tolist()
    assert pairs.item() == pytest.approx(_all_pairs_by_loops(rewards, ranks[0].tolist()), rel=1e-9, abs=1e-12)
    assert lipo.item() == pytest.approx(_lipo_by_loops(rewards, ranks[0].tolist(), labels[0].tolist()), rel=1e-9,
                                        abs=1e-12)
