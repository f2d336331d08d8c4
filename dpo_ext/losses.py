"""Preference losses as pure functions of log-probabilities.

Conventions for ranked tensors: shape (B, K), axis -1 is the list of K completions of one prompt. Without explicit
``ranks`` column 0 is the best and the order is best-first. With ``ranks``, lower is better (0 is the best), equal
values are ties, only the order of the values matters (they need not be dense nor below K), and negative values
mark missing slots (a padded list shorter than K).

Every loss returns per-example losses of shape (B,), unreduced, computed in float32 (or float64 if given float64),
whatever the input dtype, so that bf16 training does not lose the small differences the losses are made of.
"""

import torch
import torch.nn.functional as F

__all__ = [
    "implicit_rewards",
    "plackett_luce_loss",
    "dpo_loss",
    "preferred_ft_loss",
    "unlikelihood_loss",
    "ranks_from_order",
]


def _upcast(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype == torch.float64 else x.float()


def implicit_rewards(policy_logps: torch.Tensor, ref_logps: torch.Tensor, beta: float) -> torch.Tensor:
    """The DPO implicit reward r = beta * (log pi(y|x) - log pi_ref(y|x)) (paper, section 5), any shape, float32."""
    return beta * (_upcast(policy_logps) - _upcast(ref_logps))


def ranks_from_order(batch_size: int, num_completions: int, device=None) -> torch.Tensor:
    """Ranks of a best-first full ranking: every row is ``[0, 1, ..., K-1]``. Shape (B, K), int64."""
    return torch.arange(num_completions, device=device).expand(batch_size, num_completions)


def plackett_luce_loss(
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    beta: float,
    ranks: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Negative Plackett-Luce log-likelihood of a ranking under the DPO implicit reward (DPO paper, Appendix A.3).

    With rewards r_k = beta * (log pi(y_k|x) - log pi_ref(y_k|x)) and a full ranking y_1 > y_2 > ... > y_K:

        loss = - sum_{k=1}^{K-1} [ r_k - log sum_{j=k}^{K} exp(r_j) ]

    For K = 2 this is exactly the sigmoid DPO loss -log sigmoid(r_1 - r_2) (paper, Eq. 7). With policy equal to
    the reference every reward is 0 and the loss is log(K!).

    Ties use Breslow's rule from the Cox partial likelihood. Rank groups are taken from best to worst; a tied group
    G that is not the last one, with R the completions not yet placed (G included), contributes

        sum_{i in G} r_i - |G| * log sum_{j in R} exp(r_j)

    and the last group contributes nothing, since its members can only come last. Consequently a *top-m partial
    ranking* is written by giving every completion below the top m one shared bottom rank; a list whose members
    are all tied carries no preference and has loss 0.

    Missing slots (negative rank) are left out entirely: a row with one missing slot gives the loss of the
    (K-1)-completion problem, and the gradient with respect to a missing slot is exactly zero.

    Computed in log space with a reverse ``logcumsumexp`` over completions sorted by rank, so large rewards neither
    overflow nor lose precision.

    Args:
        policy_logps (`torch.Tensor`): (B, K) summed log-probabilities of each completion under the policy.
        ref_logps (`torch.Tensor`): (B, K) the same under the reference policy.
        beta (`float`): the KL-penalty coefficient of the DPO objective.
        ranks (`torch.Tensor`, *optional*): (B, K) integer ranks, lower = better, equal = tie, negative =
            missing. Only the order of the values matters: ``[0, 2, 9]`` is the same ranking as ``[0, 1, 2]``,
            whatever K. `None` means every row is a full best-first ranking (column 0 best).

    Returns:
        `torch.Tensor`: (B,) per-example loss in float32 (float64 if the inputs are float64).
    """
    if policy_logps.shape != ref_logps.shape or policy_logps.dim() != 2:
        raise ValueError(
            f"policy_logps and ref_logps must both have shape (B, K); got {tuple(policy_logps.shape)} and "
            f"{tuple(ref_logps.shape)}"
        )
    batch_size, num_completions = policy_logps.shape
    if ranks is None:
        ranks = ranks_from_order(batch_size, num_completions, device=policy_logps.device)
    elif ranks.shape != policy_logps.shape:
        raise ValueError(f"ranks must have shape {tuple(policy_logps.shape)}, got {tuple(ranks.shape)}")

    rewards = implicit_rewards(policy_logps, ref_logps, beta)  # (B, K)
    ranks = ranks.to(device=rewards.device, dtype=torch.long)

    # Missing slots all get key -1 and so sort *before* every real rank. A sentinel after the real ranks would have
    # to exceed the largest one, and any fixed choice (K + 1, say) collides with a legitimate rank value. Placed
    # first, missing slots lie outside every suffix "rest of the list" the normalisers below are taken over.
    sort_key, order = torch.sort(ranks.clamp(min=-1), dim=-1, stable=True)  # (B, K): missing, then best to worst
    sorted_rewards = rewards.gather(-1, order)  # (B, K)
    sorted_present = sort_key >= 0
    # Missing slots also take a finite, hugely negative reward: exp() of it is exactly 0 next to any real reward, a
    # NaN in a missing slot cannot reach logcumsumexp's backward, and unlike -inf it yields no NaN there (inf - inf).
    floor = torch.finfo(rewards.dtype).min / 4
    masked_rewards = torch.where(sorted_present, sorted_rewards, torch.full_like(sorted_rewards, floor))

    # suffix_lse[k] = log sum_{j >= k} exp(r_j): the normaliser of "position k is chosen among the rest".
    suffix_lse = torch.logcumsumexp(masked_rewards.flip(-1), dim=-1).flip(-1)  # (B, K)
    # Every member of a tied group is normalised over the set that starts at the group's first position, found by
    # searching for the first occurrence of its key: this depends only on the order of the rank values.
    group_start = torch.searchsorted(sort_key.contiguous(), sort_key.contiguous(), right=False)  # (B, K)
    normaliser = suffix_lse.gather(-1, group_start)

    # Present slots sort last, so the last column holds the worst present rank: that group can only come last and
    # contributes nothing. In a row with no present slot nothing contributes anyway.
    contributes = sorted_present & (sort_key < sort_key[:, -1:])
    log_likelihood = torch.where(contributes, sorted_rewards - normaliser, torch.zeros_like(sorted_rewards))
    return -log_likelihood.sum(-1)


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    r"""Sigmoid DPO loss (DPO paper, Eq. 7): -log sigmoid(r_chosen - r_rejected).

    Args:
        policy_chosen_logps (`torch.Tensor`): (B,) summed log-probabilities of the preferred completions.
        policy_rejected_logps (`torch.Tensor`): (B,) the same for the dispreferred completions.
        ref_chosen_logps (`torch.Tensor`): (B,) reference log-probabilities of the preferred completions.
        ref_rejected_logps (`torch.Tensor`): (B,) reference log-probabilities of the dispreferred completions.
        beta (`float`): the KL-penalty coefficient.

    Returns:
        `torch.Tensor`: (B,) per-example loss, float32.
    """
    chosen_rewards = implicit_rewards(policy_chosen_logps, ref_chosen_logps, beta)
    rejected_rewards = implicit_rewards(policy_rejected_logps, ref_rejected_logps, beta)
    return -F.logsigmoid(chosen_rewards - rejected_rewards)


def preferred_ft_loss(policy_logps: torch.Tensor, num_tokens: torch.Tensor | None = None) -> torch.Tensor:
    """Preferred-FT baseline (DPO paper, section 6): supervised fine-tuning on the preferred completion only.

    Args:
        policy_logps (`torch.Tensor`): (B,) summed log-probabilities of the preferred completions.
        num_tokens (`torch.Tensor`, *optional*): (B,) their token counts; when given the loss is the per-token
            negative log-likelihood (the usual SFT normalisation), else the per-sequence one.

    Returns:
        `torch.Tensor`: (B,) per-example loss, float32.
    """
    nll = -_upcast(policy_logps)
    if num_tokens is None:
        return nll
    return nll / num_tokens.to(nll.dtype).clamp(min=1)


def unlikelihood_loss(
    chosen_token_logps: torch.Tensor,
    chosen_mask: torch.Tensor,
    rejected_token_logps: torch.Tensor,
    rejected_mask: torch.Tensor,
    alpha: float,
) -> torch.Tensor:
    r"""Unlikelihood baseline (DPO paper, section 6 and Appendix C.3; Welleck et al. 2019).

    Raises the likelihood of the preferred completion and pushes down every token of the dispreferred one:

        loss = - mean_t log p(w_t) - alpha * mean_t log(1 - p(l_t))

    with both means over the completion's tokens. ``log(1 - p)`` is computed as ``log(-expm1(log p))``, which
    stays finite and accurate when p is close to 1 or tiny.

    Args:
        chosen_token_logps (`torch.Tensor`): (B, T) per-token log-probabilities of the preferred completion.
        chosen_mask (`torch.Tensor`): (B, T) 1 on its tokens, 0 on padding.
        rejected_token_logps (`torch.Tensor`): (B, T') per-token log-probabilities of the dispreferred completion.
        rejected_mask (`torch.Tensor`): (B, T') 1 on its tokens, 0 on padding.
        alpha (`float`): weight of the unlikelihood term, in [0, 1] in the paper.

    Returns:
        `torch.Tensor`: (B,) per-example loss, float32.
    """
    chosen_mask = chosen_mask.to(torch.float32)
    rejected_mask = rejected_mask.to(torch.float32)
    chosen_nll = -(_upcast(chosen_token_logps) * chosen_mask).sum(-1) / chosen_mask.sum(-1).clamp(min=1)
    # Clamp just below 0 so expm1 never returns exactly 0 (log 0 = -inf) for a token of probability 1.
    rejected = _upcast(rejected_token_logps).clamp(max=-1e-6)
    log_one_minus_p = torch.log(-torch.expm1(rejected))
    unlikely = (log_one_minus_p * rejected_mask).sum(-1) / rejected_mask.sum(-1).clamp(min=1)
    return chosen_nll - alpha * unlikely
