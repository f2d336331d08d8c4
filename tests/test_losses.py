"""Loss identities: hand-computed values, brute-force enumeration of the Plackett-Luce model, gradients."""

import itertools
import math

import pytest
import torch

from dpo_ext.losses import dpo_loss, plackett_luce_loss, preferred_ft_loss, unlikelihood_loss


def test_three_completions_by_hand():
    """r = beta * (policy - ref) = [1, 0, 0] with beta = 1, ranking 0 > 1 > 2.

    loss = -(r0 - log(e^1 + e^0 + e^0)) - (r1 - log(e^0 + e^0))
         = -1 + log(e + 2) + log 2 = -1 + 1.5514447 + 0.6931472 = 1.2445919
    """
    loss = plackett_luce_loss(torch.tensor([[1.0, 0.0, 0.0]]), torch.zeros(1, 3), beta=1.0)
    assert loss.item() == pytest.approx(1.2445919, abs=1e-6)


def test_three_completions_with_tie_by_hand():
    """r = [2, 0, 1] (policy [20, 0, 10], beta 0.1), ranks [0, 1, 1]: the best one, then a tied bottom group.

    Only the first group contributes: -(2 - log(e^2 + e^0 + e^1)) = -2 + log(11.1073379) = 0.4076059.
    """
    loss = plackett_luce_loss(torch.tensor([[20.0, 0.0, 10.0]]), torch.zeros(1, 3), 0.1, torch.tensor([[0, 1, 1]]))
    assert loss.item() == pytest.approx(0.4076059, abs=1e-6)


def test_two_completions_is_sigmoid_dpo():
    torch.manual_seed(0)
    policy, ref = torch.randn(16, 2) * 5, torch.randn(16, 2) * 5
    expected = dpo_loss(policy[:, 0], policy[:, 1], ref[:, 0], ref[:, 1], beta=0.3)
    torch.testing.assert_close(plackett_luce_loss(policy, ref, 0.3), expected)
    # a tie-free pair given with explicit ranks in the other order
    swapped = plackett_luce_loss(policy.flip(-1), ref.flip(-1), 0.3, torch.tensor([[1, 0]]).expand(16, 2))
    torch.testing.assert_close(swapped, expected)


@pytest.mark.parametrize("k", [2, 3, 4, 5, 6])
def test_policy_equal_to_reference_gives_log_k_factorial(k):
    logps = torch.randn(3, k)
    loss = plackett_luce_loss(logps, logps.clone(), beta=0.5)
    torch.testing.assert_close(loss, torch.full((3,), math.log(math.factorial(k))))


def _pl_log_prob(rewards, order):
    """log P(order) under Plackett-Luce, by the definition, in float64."""
    remaining, total = list(order), 0.0
    for item in order:
        total += rewards[item] - math.log(sum(math.exp(rewards[j]) for j in remaining))
        remaining.remove(item)
    return total


@pytest.mark.parametrize("k", [2, 3, 4, 5])
def test_matches_brute_force_enumeration(k):
    gen = torch.Generator().manual_seed(k)
    policy = torch.randn(1, k, generator=gen, dtype=torch.float64) * 3
    ref = torch.randn(1, k, generator=gen, dtype=torch.float64) * 3
    rewards = (0.7 * (policy - ref))[0].tolist()
    total_probability = 0.0
    for order in itertools.permutations(range(k)):
        ranks = torch.empty(1, k, dtype=torch.long)
        ranks[0, list(order)] = torch.arange(k)
        loss = plackett_luce_loss(policy, ref, 0.7, ranks).item()
        assert loss == pytest.approx(-_pl_log_prob(rewards, order), abs=1e-10)
        total_probability += math.exp(-loss)
    assert total_probability == pytest.approx(1.0, abs=1e-10)  # a distribution over the K! rankings


@pytest.mark.parametrize("k,top", [(3, 1), (4, 1), (4, 2), (5, 2), (5, 3)])
def test_top_m_partial_ranking_is_the_exact_marginal(k, top):
    """Tying everything below the top m gives the PL probability summed over all orders of the bottom group."""
    gen = torch.Generator().manual_seed(10 * k + top)
    policy = torch.randn(1, k, generator=gen, dtype=torch.float64) * 2
    ref = torch.zeros(1, k, dtype=torch.float64)
    rewards = policy[0].tolist()
    ranks = torch.tensor([list(range(top)) + [top] * (k - top)])
    marginal = sum(
        math.exp(_pl_log_prob(rewards, list(range(top)) + list(rest)))
        for rest in itertools.permutations(range(top, k))
    )
    assert plackett_luce_loss(policy, ref, 1.0, ranks).item() == pytest.approx(-math.log(marginal), abs=1e-10)


def _breslow_by_loops(rewards, ranks):
    """Breslow's rule written out group by group, in float64, with none of the vectorised tricks."""
    present = [i for i, r in enumerate(ranks) if r >= 0]
    groups = sorted({ranks[i] for i in present})
    loglik = 0.0
    for g in groups[:-1]:
        members = [i for i in present if ranks[i] == g]
        at_risk = [i for i in present if ranks[i] >= g]
        lse = math.log(sum(math.exp(rewards[i]) for i in at_risk))
        loglik += sum(rewards[i] for i in members) - len(members) * lse
    return -loglik


@pytest.mark.parametrize("seed", range(6))
def test_ties_and_missing_slots_match_loop_implementation(seed):
    gen = torch.Generator().manual_seed(seed)
    k = 5
    policy = torch.randn(4, k, generator=gen, dtype=torch.float64) * 4
    ref = torch.randn(4, k, generator=gen, dtype=torch.float64)
    ranks = torch.randint(-1, 3, (4, k), generator=gen)
    ranks[:, 0], ranks[:, 1] = 0, 1  # at least two present, distinct groups
    loss = plackett_luce_loss(policy, ref, 0.5, ranks)
    rewards = 0.5 * (policy - ref)
    for b in range(4):
        assert loss[b].item() == pytest.approx(_breslow_by_loops(rewards[b].tolist(), ranks[b].tolist()), abs=1e-10)


def test_rank_values_above_k_are_only_an_order():
    """Ranks carry only their order: a value K+1 or larger is a real rank, not a missing slot.

    With K = 4, [0, 1, 2, 5] is the full ranking [0, 1, 2, 3] and [0, 0, 5, 5] is the tie pattern [0, 0, 1, 1];
    [7, -1, 5, 100] is [1, missing, 0, 2]. Checked against the loop implementation, gradients included.
    """
    torch.manual_seed(3)
    policy = torch.randn(4, 4, dtype=torch.float64) * 2
    ref = torch.randn(4, 4, dtype=torch.float64)
    sparse = torch.tensor([[0, 1, 2, 5], [0, 0, 5, 5], [7, -1, 5, 100], [6, 5, 5, 9]])
    dense = torch.tensor([[0, 1, 2, 3], [0, 0, 1, 1], [1, -1, 0, 2], [1, 0, 0, 2]])
    rewards = 0.5 * (policy - ref)
    expected = [_breslow_by_loops(rewards[b].tolist(), dense[b].tolist()) for b in range(4)]
    assert all(e > 0 for e in expected)  # no row is trivially zero, so a dropped slot cannot hide
    sparse_policy = policy.clone().requires_grad_(True)
    dense_policy = policy.clone().requires_grad_(True)
    sparse_loss = plackett_luce_loss(sparse_policy, ref, 0.5, sparse)
    dense_loss = plackett_luce_loss(dense_policy, ref, 0.5, dense)
    torch.testing.assert_close(sparse_loss, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-10)
    torch.testing.assert_close(sparse_loss, dense_loss, rtol=0, atol=0)
    sparse_loss.sum().backward()
    dense_loss.sum().backward()
    torch.testing.assert_close(sparse_policy.grad, dense_policy.grad, rtol=0, atol=0)
    assert sparse_policy.grad[2, 1] == 0  # the one missing slot


def test_missing_slot_equals_smaller_problem_and_gets_zero_gradient():
    torch.manual_seed(1)
    policy = torch.randn(2, 4, requires_grad=True)
    ref = torch.randn(2, 4)
    ranks = torch.tensor([[0, -1, 1, 2], [2, 0, -1, 1]])
    loss = plackett_luce_loss(policy, ref, 1.0, ranks)
    keep = [[0, 2, 3], [0, 1, 3]]
    for b in range(2):
        small = plackett_luce_loss(policy[b, keep[b]][None], ref[b, keep[b]][None], 1.0,
                                   ranks[b, keep[b]][None])
        torch.testing.assert_close(loss[b], small[0])
    loss.sum().backward()
    assert torch.isfinite(policy.grad).all()
    assert policy.grad[0, 1] == 0 and policy.grad[1, 2] == 0
    assert (policy.grad[0, [0, 2, 3]] != 0).all()


def test_garbage_in_missing_slots_does_not_leak():
    ranks = torch.tensor([[0, 1, -1]])
    clean = plackett_luce_loss(torch.tensor([[1.0, 2.0, 0.0]]), torch.zeros(1, 3), 1.0, ranks)
    policy = torch.tensor([[1.0, 2.0, float("nan")]], requires_grad=True)
    dirty = plackett_luce_loss(policy, torch.zeros(1, 3), 1.0, ranks)
    torch.testing.assert_close(dirty, clean)
    dirty.sum().backward()
    assert torch.isfinite(policy.grad[0, :2]).all()


def test_all_tied_list_has_zero_loss_and_gradient():
    policy = torch.randn(1, 3, requires_grad=True)
    loss = plackett_luce_loss(policy, torch.zeros(1, 3), 1.0, torch.zeros(1, 3, dtype=torch.long))
    loss.sum().backward()
    assert loss.item() == 0.0 and (policy.grad == 0).all()


def test_stable_for_large_rewards_and_bf16_inputs():
    policy = torch.tensor([[-1000.0, -4000.0, -2500.0, -9000.0]], dtype=torch.float64, requires_grad=True)
    ref = torch.tensor([[-3000.0, -1000.0, -2600.0, -100.0]], dtype=torch.float64)
    loss = plackett_luce_loss(policy, ref, 1.0)
    rewards = (policy - ref)[0].tolist()
    assert loss.item() == pytest.approx(-_pl_log_prob_stable(rewards), rel=1e-12)
    loss.backward()
    assert torch.isfinite(policy.grad).all()
    bf16 = plackett_luce_loss(policy.detach().bfloat16(), ref.bfloat16(), 1.0)
    assert bf16.dtype == torch.float32 and torch.isfinite(bf16).all()


def _pl_log_prob_stable(rewards):
    total = 0.0
    for k in range(len(rewards) - 1):
        rest = rewards[k:]
        m = max(rest)
        total += rewards[k] - (m + math.log(sum(math.exp(r - m) for r in rest)))
    return total


def test_gradcheck_with_ties_and_missing():
    policy = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    ref = torch.randn(3, 4, dtype=torch.float64)
    ranks = torch.tensor([[0, 1, 1, 2], [1, 0, -1, 0], [3, 2, 1, 0]])
    assert torch.autograd.gradcheck(lambda p: plackett_luce_loss(p, ref, 0.8, ranks), (policy,))


def test_shape_errors_are_clear():
    with pytest.raises(ValueError, match="shape"):
        plackett_luce_loss(torch.zeros(2, 3), torch.zeros(2, 4), 0.1)
    with pytest.raises(ValueError, match="ranks must have shape"):
        plackett_luce_loss(torch.zeros(2, 3), torch.zeros(2, 3), 0.1, torch.zeros(2, 2, dtype=torch.long))


def test_dpo_loss_by_hand():
    """beta 0.5, chosen ratio 2 - 1 = 1, rejected ratio 0 - 1 = -1:
    -log sigmoid(0.5 * 2) = log(1 + e^-1) = 0.3132617."""
    loss = dpo_loss(torch.tensor([2.0]), torch.tensor([0.0]), torch.tensor([1.0]), torch.tensor([1.0]), 0.5)
    assert loss.item() == pytest.approx(0.3132617, abs=1e-6)


def test_preferred_ft_loss_is_per_token_nll():
    loss = preferred_ft_loss(torch.tensor([-6.0, -3.0]), torch.tensor([3, 0]))
    torch.testing.assert_close(loss, torch.tensor([2.0, 3.0]))  # 0 tokens is clamped to 1
    torch.testing.assert_close(preferred_ft_loss(torch.tensor([-6.0])), torch.tensor([6.0]))


def test_unlikelihood_loss_by_hand():
    """Chosen tokens log p = [log 0.5, log 0.25] -> NLL mean (0.6931 + 1.3863) / 2 = 1.0397.
    Rejected tokens p = [0.5, 0.9, (padding)] -> mean log(1 - p) = (log 0.5 + log 0.1) / 2 = -1.4979.
    With alpha 0.5: 1.0397 + 0.5 * 1.4979 = 1.7887."""
    chosen = torch.log(torch.tensor([[0.5, 0.25]]))
    rejected = torch.log(torch.tensor([[0.5, 0.9, 0.7]]))
    loss = unlikelihood_loss(chosen, torch.ones(1, 2), rejected, torch.tensor([[1, 1, 0]]), alpha=0.5)
    assert loss.item() == pytest.approx(1.0397208 + 0.5 * 1.4978661, abs=1e-5)


def test_unlikelihood_is_finite_when_rejected_token_is_certain():
    rejected = torch.zeros(1, 2, requires_grad=True)  # p = 1
    loss = unlikelihood_loss(torch.zeros(1, 2), torch.ones(1, 2), rejected, torch.ones(1, 2), alpha=1.0)
    loss.backward()
    assert torch.isfinite(loss).all() and torch.isfinite(rejected.grad).all()
