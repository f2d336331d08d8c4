"""How well rewards agree with a ranking (pure tensor functions, used by the trainer's logs and by evaluation).

Inputs are (B, K) rewards and (B, K) ranks (0 = best, ties equal, negative = missing). Every function returns one
value per list, shape (B,), so callers can gather across processes before averaging.
"""

import torch


def best_and_worst_slots(ranks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Column of the first completion in the best group and in the worst present group, per list: two (B,) tensors."""
    present = ranks >= 0
    # Missing slots must lose to any real rank, whatever its value (ranks need not be dense): use the long maximum.
    best = torch.where(present, ranks, torch.full_like(ranks, torch.iinfo(torch.long).max)).argmin(-1)
    worst = torch.where(present, ranks, torch.full_like(ranks, -1)).argmax(-1)
    return best, worst


def _pair_masks(ranks: torch.Tensor):
    present = ranks >= 0
    both = present.unsqueeze(-1) & present.unsqueeze(-2)  # (B, K, K)
    better = (ranks.unsqueeze(-1) < ranks.unsqueeze(-2)) & both  # i ranked strictly above j
    return present, both, better


def pairwise_accuracy(rewards: torch.Tensor, ranks: torch.Tensor) -> torch.Tensor:
    """Fraction of strictly ordered pairs (i above j) whose rewards agree strictly (r_i > r_j). (B,)"""
    _, _, better = _pair_masks(ranks)
    agree = (rewards.unsqueeze(-1) > rewards.unsqueeze(-2)) & better
    return agree.sum((-1, -2)).float() / better.sum((-1, -2)).clamp(min=1).float()


def top1_accuracy(rewards: torch.Tensor, ranks: torch.Tensor) -> torch.Tensor:
    """1 where the highest-reward completion is in the best rank group, else 0. (B,)"""
    masked = torch.where(ranks >= 0, rewards, torch.full_like(rewards, float("-inf")))
    best_rank = ranks.gather(-1, best_and_worst_slots(ranks)[0].unsqueeze(-1))
    picked = ranks.gather(-1, masked.argmax(-1, keepdim=True))
    return (picked == best_rank).squeeze(-1).float()


def kendall_tau(rewards: torch.Tensor, ranks: torch.Tensor) -> torch.Tensor:
    """Kendall's tau-b between rewards and the ranking, per list (ties in either handled by tau-b). (B,)

    Lists where either side is constant have no defined tau and get 0.
    """
    _, both, _ = _pair_masks(ranks)
    upper = torch.triu(torch.ones_like(both), diagonal=1) & both  # each unordered pair once
    # The ranking says "i above j" when rank_i < rank_j; rewards say so when r_i > r_j.
    rank_sign = torch.sign(ranks.unsqueeze(-2) - ranks.unsqueeze(-1)).float()  # +1 where i above j
    reward_sign = torch.sign(rewards.unsqueeze(-1) - rewards.unsqueeze(-2)).float()
    rank_sign, reward_sign = rank_sign * upper, reward_sign * upper
    concordance = (rank_sign * reward_sign).sum((-1, -2))
    denominator = torch.sqrt((rank_sign != 0).sum((-1, -2)).float() * (reward_sign != 0).sum((-1, -2)).float())
    return torch.where(denominator > 0, concordance / denominator.clamp(min=1e-12), torch.zeros_like(denominator))


def best_and_worst(values: torch.Tensor, ranks: torch.Tensor):
    """Mean of ``values`` over the best rank group and over the worst present group, per list: two (B,) tensors.

    For K = 2 these are the chosen and rejected values, which is what TRL's ``rewards/chosen`` and
    ``rewards/rejected`` report.
    """
    present = ranks >= 0
    best_slot, worst_slot = best_and_worst_slots(ranks)
    best, worst = ranks.gather(-1, best_slot.unsqueeze(-1)), ranks.gather(-1, worst_slot.unsqueeze(-1))  # (B, 1)
    values = values.float()
    in_best, in_worst = (ranks == best) & present, (ranks == worst) & present
    mean_best = (values * in_best).sum(-1) / in_best.sum(-1).clamp(min=1)
    mean_worst = (values * in_worst).sum(-1) / in_worst.sum(-1).clamp(min=1)
    return mean_best, mean_worst
