"""The shipped `evaluate` metric modules, loaded offline from their directories, against hand-computed values."""

import pytest
import torch

from dpo_ext.metrics import METRIC_NAMES, metric_path
from dpo_ext.scoring.evaluation import ranking_metrics_from_rewards


@pytest.fixture
def metrics():
    """Loaded after conftest points HF_HOME at a temp dir (evaluate writes its module cache there); conftest also
    sets HF_HUB_OFFLINE=1, so this proves the modules load without the Hub."""
    import evaluate

    return {name: evaluate.load(metric_path(name)) for name in METRIC_NAMES}


def test_preference_accuracy_counts_ties_as_wrong(metrics):
    """Pairs (1 > 0) yes, (0.5 = 0.5) tie -> no, (2 < 3) no, (-1 > -2) yes: 2 of 4."""
    result = metrics["preference_accuracy"].compute(chosen_rewards=[1.0, 0.5, 2.0, -1.0],
                                                    rejected_rewards=[0.0, 0.5, 3.0, -2.0])
    assert result == {"accuracy": 0.5}


def test_preference_accuracy_accumulates_batches(metrics):
    metric = metrics["preference_accuracy"]
    metric.add_batch(chosen_rewards=[1.0, 2.0], rejected_rewards=[0.0, 3.0])
    metric.add_batch(chosen_rewards=[5.0], rejected_rewards=[4.0])
    assert metric.compute() == {"accuracy": pytest.approx(2 / 3)}


def test_ranking_agreement_by_hand(metrics):
    """List 1: ranks [0, 1, 2], rewards [3, 1, 2]. Top-1: reward 3 is rank 0 -> 1. Ordered pairs (0,1) 3>1 yes,
    (0,2) 3>2 yes, (1,2) 1>2 no -> 2/3. Kendall tau: concordant 2, discordant 1, no ties -> (2-1)/3 = 1/3.

    List 2 (K=2): ranks [1, 0], rewards [0.5, 0.2]: the rank-0 completion has the lower reward. Top-1 0,
    pairwise 0, tau -1.

    List 3: ranks [0, 1, 1] (a tie), rewards [1, 1, 0]. Top-1: argmax picks index 0 (first max) -> rank 0 -> 1.
    Ordered pairs: (0,1) 1>1 no (a reward tie is wrong), (0,2) 1>0 yes -> 1/2. tau-b: pairs (0,1) rank +1,
    reward 0; (0,2) rank +1, reward +1 -> concordant 1; (1,2) rank 0, reward +1. n_rank = 2, n_reward = 2
    -> 1 / sqrt(2 * 2) = 1/2.

    List 4: all tied -> skipped.
    """
    result = metrics["ranking_agreement"].compute(
        rewards=[[3.0, 1.0, 2.0], [0.5, 0.2], [1.0, 1.0, 0.0], [0.3, 0.1]],
        ranks=[[0, 1, 2], [1, 0], [0, 1, 1], [0, 0]],
    )
    assert result["num_lists"] == 3
    assert result["top1_accuracy"] == pytest.approx((1 + 0 + 1) / 3)
    assert result["pairwise_accuracy"] == pytest.approx((2 / 3 + 0 + 1 / 2) / 3)
    assert result["kendall_tau"] == pytest.approx((1 / 3 - 1 + 1 / 2) / 3)


def test_ranking_agreement_rejects_bad_lists(metrics):
    with pytest.raises(ValueError, match="list 0: 2 rewards for 3 ranks"):
        metrics["ranking_agreement"].compute(rewards=[[1.0, 2.0]], ranks=[[0, 1, 2]])
    with pytest.raises(ValueError, match="at least one list with a preference"):
        metrics["ranking_agreement"].compute(rewards=[[1.0, 2.0]], ranks=[[0, 0]])


def test_modules_agree_with_evaluate_preferences_arithmetic(metrics):
    rewards = torch.tensor([[0.2, -0.1, float("nan")], [0.0, 0.4, 0.1], [1.0, 0.5, 0.7]])
    ranks = torch.tensor([[0, 1, -1], [0, 2, 1], [2, 0, 1]])
    ours = ranking_metrics_from_rewards(rewards, ranks)
    lists = [[r for r, k in zip(rw, rk) if k >= 0] for rw, rk in zip(rewards.tolist(), ranks.tolist())]
    theirs = metrics["ranking_agreement"].compute(rewards=lists, ranks=[[k for k in rk if k >= 0]
                                                                        for rk in ranks.tolist()])
    for key in ("top1_accuracy", "pairwise_accuracy", "kendall_tau"):
        assert ours[key] == pytest.approx(theirs[key]), key
    pairs = metrics["preference_accuracy"].compute(chosen_rewards=[0.2], rejected_rewards=[-0.1])
    assert pairs["accuracy"] == ranking_metrics_from_rewards(rewards[:1], ranks[:1])["accuracy"] == 1.0


def test_unknown_metric_name():
    with pytest.raises(ValueError, match="shipped metrics: preference_accuracy, ranking_agreement"):
        metric_path("accuracy")
