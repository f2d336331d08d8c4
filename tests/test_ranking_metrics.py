"""Agreement between rewards and rankings: hand-computed cases and scipy's Kendall tau-b."""

import pytest
import torch
from scipy.stats import kendalltau

from dpo_ext.ranking_metrics import best_and_worst, kendall_tau, pairwise_accuracy, top1_accuracy


def test_hand_computed_list():
    """Ranks [0, 1, 2] (a > b > c), rewards [3, 1, 2]: pairs a>b yes, a>c yes, b>c no -> 2/3 agree.
    Best is a with the top reward -> top-1 = 1. Kendall tau = (2 - 1) / 3 = 1/3."""
    rewards, ranks = torch.tensor([[3.0, 1.0, 2.0]]), torch.tensor([[0, 1, 2]])
    assert pairwise_accuracy(rewards, ranks).item() == pytest.approx(2 / 3)
    assert top1_accuracy(rewards, ranks).item() == 1.0
    assert kendall_tau(rewards, ranks).item() == pytest.approx(1 / 3)


def test_ties_and_missing_slots():
    """Ranks [0, 0, 1, -1]: ordered pairs (a, c), (b, c) only; rewards [1, 5, 2, 99]: a>c no, b>c yes -> 1/2.
    The top reward (b) is in the best group -> top-1 = 1; the missing slot's 99 is ignored."""
    rewards, ranks = torch.tensor([[1.0, 5.0, 2.0, 99.0]]), torch.tensor([[0, 0, 1, -1]])
    assert pairwise_accuracy(rewards, ranks).item() == pytest.approx(0.5)
    assert top1_accuracy(rewards, ranks).item() == 1.0
    chosen, rejected = best_and_worst(rewards, ranks)
    assert (chosen.item(), rejected.item()) == (3.0, 2.0)


def test_sparse_ranks_and_a_missing_first_slot():
    """Ranks [-1, 5, 6, 6]: the best group is slot 1 (rank 5), not the missing slot 0; worst is {2, 3}."""
    rewards, ranks = torch.tensor([[50.0, 1.0, 2.0, 4.0]]), torch.tensor([[-1, 5, 6, 6]])
    chosen, rejected = best_and_worst(rewards, ranks)
    assert (chosen.item(), rejected.item()) == (1.0, 3.0)
    assert top1_accuracy(rewards, ranks).item() == 0.0  # the top present reward (4.0) is in the worst group


def test_equal_rewards_are_not_counted_as_correct():
    rewards, ranks = torch.tensor([[1.0, 1.0]]), torch.tensor([[0, 1]])
    assert pairwise_accuracy(rewards, ranks).item() == 0.0  # RewardBench counts strictly greater only


@pytest.mark.parametrize("seed", range(5))
def test_kendall_tau_b_matches_scipy(seed):
    gen = torch.Generator().manual_seed(seed)
    ranks = torch.randint(0, 3, (6, 5), generator=gen)
    rewards = torch.randint(0, 4, (6, 5), generator=gen).float()  # ties on both sides
    ours = kendall_tau(rewards, ranks)
    for b in range(6):
        expected = kendalltau(-ranks[b].numpy(), rewards[b].numpy()).statistic
        expected = 0.0 if expected != expected else expected  # scipy gives NaN for a constant side
        assert ours[b].item() == pytest.approx(expected, abs=1e-6)
