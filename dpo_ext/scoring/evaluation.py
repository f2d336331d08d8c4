"""Preference accuracy of the implicit reward on pairwise or ranked rows (what RewardBench reports for DPO models).

Metrics (each a mean over rows). Rows follow the trainer's row rules (`dpo_ext.data`): identical completions within a
row are scored once, and rows left with no preference (all completions identical, or all tied) are skipped, not
counted as wrong answers.

- ``accuracy``: the best rank group's mean reward is strictly above the worst group's. For pairwise rows this is
  RewardBench's accuracy (chosen strictly above rejected; a tie counts as wrong).
- ``pairwise_accuracy``, ``top1_accuracy``, ``kendall_tau``: see `dpo_ext.ranking_metrics`.
- ``rewards/chosen``, ``rewards/rejected``, ``rewards/margins``: as TRL and `PLDPOTrainer` log them.

The same numbers come from the shipped `evaluate` modules (`dpo_ext.metrics`), given the rewards this returns.
"""

import logging
import math
from collections import Counter

import torch

from dpo_ext.data.rows import COMPLETIONS, PreferenceDataError, normalize_row
from dpo_ext.data.summary import summarize_counts
from dpo_ext.ranking_metrics import best_and_worst, kendall_tau, pairwise_accuracy, top1_accuracy

logger = logging.getLogger(__name__)


def ranking_metrics_from_rewards(rewards: torch.Tensor, ranks: torch.Tensor) -> dict:
    """Metric dict from (B, K) rewards and (B, K) ranks (0 = best, -1 = missing)."""
    rewards = torch.nan_to_num(rewards.float(), nan=0.0)  # missing slots are ignored through their rank of -1
    chosen, rejected = best_and_worst(rewards, ranks)
    metrics = {
        "accuracy": (chosen > rejected).float(),
        "pairwise_accuracy": pairwise_accuracy(rewards, ranks),
        "top1_accuracy": top1_accuracy(rewards, ranks),
        "kendall_tau": kendall_tau(rewards, ranks),
        "rewards/chosen": chosen,
        "rewards/rejected": rejected,
        "rewards/margins": chosen - rejected,
    }
    out = {k: float(v.mean()) if v.numel() else math.nan for k, v in metrics.items()}
    out["num_rows"] = int(ranks.shape[0])
    return out


def evaluate_preferences(scorer, dataset, *, beta=None, normalize="sum", reference_free=None, progress=False,
                         return_rewards=False) -> dict:
    """Score every row of a preference dataset and measure how often the implicit reward agrees with it.

    Args:
        scorer ([`ImplicitRewardScorer`]): the model to evaluate.
        dataset: rows in any format `dpo_ext.data.rows.normalize_row` accepts (pairwise, ranked, scored; text or chat):
            a `datasets.Dataset` or any iterable of dicts.
        beta, normalize, reference_free: as in `ImplicitRewardScorer.score`.
        progress (`bool`): show a progress bar.
        return_rewards (`bool`): also return ``"rewards"``, one list of rewards per kept row (input order), for the
            row's distinct completions (an identical copy is scored once, at its first position).

    Returns:
        `dict`: ``accuracy``, ``pairwise_accuracy``, ``top1_accuracy``, ``kendall_tau``, ``rewards/chosen``,
        ``rewards/rejected``, ``rewards/margins``, ``num_rows`` (rows scored) and ``num_skipped`` (rows with no
        preference).

    Raises:
        `PreferenceDataError`: for an invalid row, naming the row (its position in ``dataset``) and the field.
    """
    rows = [normalize_row(row, i) for i, row in enumerate(dataset)]
    kept_index = [i for i, r in enumerate(rows) if r.no_preference is None]
    kept = [rows[i] for i in kept_index]
    no_preference = Counter(r.no_preference for r in rows if r.no_preference)
    collapsed, repeats = sum(r.num_collapsed for r in rows), len(kept) - len({r.key() for r in kept})
    for line in summarize_counts(len(rows), no_preference, collapsed, repeats, verb="skipped"):
        logger.warning("Evaluation: %s.", line)
    if not kept:
        raise ValueError("no row with a preference to evaluate (empty dataset, or no row has two distinct "
                         "completions ranked differently)")
    try:
        result = scorer.score([r.prompt for r in kept], [r.completions for r in kept], beta=beta,
                              normalize=normalize, reference_free=reference_free, progress=progress)
    except PreferenceDataError as error:  # the scorer counts kept rows and distinct completions: name the dataset's
        if error.row is None:
            raise
        completion = None if error.completion is None else kept[error.row].positions[error.completion]
        field = error.field if completion is None else f"{COMPLETIONS}[{completion}]"
        raise PreferenceDataError(error.problem, kept_index[error.row], field, completion=completion) from error
    width = result.rewards.shape[1]
    ranks = torch.tensor([r.ranks + [-1] * (width - len(r.ranks)) for r in kept], dtype=torch.long)
    metrics = ranking_metrics_from_rewards(result.rewards, ranks)
    metrics["num_skipped"] = len(rows) - len(kept)
    if return_rewards:
        metrics["rewards"] = result.tolist()
    return metrics
