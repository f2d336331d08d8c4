"""Ranking agreement: top-1 accuracy, pairwise accuracy and Kendall's tau of rewards against K-way rankings."""

import datasets
import evaluate
import torch

from dpo_ext.ranking_metrics import kendall_tau, pairwise_accuracy, top1_accuracy

_DESCRIPTION = """
How well rewards agree with rankings of K responses per prompt (the Plackett-Luce setting of the DPO paper,
section 3 / appendix A.3). Each list contributes one value per metric, and the metrics are averaged over lists:

- top1_accuracy: the highest-reward response is in the best rank group;
- pairwise_accuracy: fraction of strictly ordered pairs (i ranked above j) with reward_i > reward_j (ties in the
  rewards count as wrong, as in RewardBench);
- kendall_tau: Kendall's tau-b between rewards and ranks (0 for a list where either side is constant).

Lists whose responses are all tied in the ranking carry no preference and are skipped.
"""

_KWARGS_DESCRIPTION = """
Args:
    rewards (`list` of `list` of `float`): the rewards of each list's K responses (K may vary between lists).
    ranks (`list` of `list` of `int`): the rank of each response, 0 = best; equal ranks are ties.
Returns:
    top1_accuracy (`float`), pairwise_accuracy (`float`), kendall_tau (`float`): means over lists.
    num_lists (`int`): lists that were scored (lists that are all ties are skipped).
Examples:
    >>> metric = evaluate.load("path/to/dpo_ext/metrics/ranking_agreement")
    >>> metric.compute(rewards=[[3.0, 2.0, 1.0], [0.0, 1.0]], ranks=[[0, 1, 2], [0, 1]])
    {'top1_accuracy': 0.5, 'pairwise_accuracy': 0.5, 'kendall_tau': 0.0, 'num_lists': 2}
"""

_CITATION = """
@inproceedings{rafailov2023direct,
  title={Direct Preference Optimization: Your Language Model is Secretly a Reward Model},
  author={Rafailov, Rafael and Sharma, Archit and Mitchell, Eric and Ermon, Stefano and Manning, Christopher D.
          and Finn, Chelsea},
  booktitle={NeurIPS},
  year={2023}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class RankingAgreement(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"rewards": datasets.Sequence(datasets.Value("float64")),
                 "ranks": datasets.Sequence(datasets.Value("int64"))}
            ),
            reference_urls=["https://arxiv.org/abs/2305.18290"],
        )

    def _compute(self, rewards, ranks):
        for i, (r, k) in enumerate(zip(rewards, ranks)):
            if len(r) != len(k):
                raise ValueError(f"list {i}: {len(r)} rewards for {len(k)} ranks")
            if any(rank < 0 for rank in k):
                raise ValueError(f"list {i}: ranks must be non-negative (0 = best), got {k}")
        kept = [(r, k) for r, k in zip(rewards, ranks) if len(set(k)) > 1]
        if not kept:
            raise ValueError("ranking_agreement needs at least one list with a preference (not all ties)")
        width = max(len(k) for _, k in kept)
        reward_grid = torch.tensor([list(r) + [0.0] * (width - len(r)) for r, _ in kept], dtype=torch.float64)
        rank_grid = torch.tensor([list(k) + [-1] * (width - len(k)) for _, k in kept], dtype=torch.long)  # (B, K)
        return {
            "top1_accuracy": float(top1_accuracy(reward_grid, rank_grid).mean()),
            "pairwise_accuracy": float(pairwise_accuracy(reward_grid, rank_grid).mean()),
            "kendall_tau": float(kendall_tau(reward_grid, rank_grid).mean()),
            "num_lists": len(kept),
        }
