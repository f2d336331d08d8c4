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
    "all_pairs_loss",
    "lipo_lambda_loss",
    "rank_labels",
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


def _ranked_inputs(policy_logps, ref_logps, ranks):
    """Check shapes; the (B, K) rewards' inputs and int64 ranks (a full best-first ranking when ``ranks`` is None)."""
    if policy_logps.shape != ref_logps.shape or policy_logps.dim() != 2:
        raise ValueError(
            f"policy_logps and ref_logps must both have shape (B, K); got {tuple(policy_logps.shape)} and "
            f"{tuple(ref_logps.shape)}"
        )
    if ranks is None:
        return ranks_from_order(*policy_logps.shape, device=policy_logps.device)
    if ranks.shape != policy_logps.shape:
        raise ValueError(f"ranks must have shape {tuple(policy_logps.shape)}, got {tuple(ranks.shape)}")
    return ranks.to(device=policy_logps.device, dtype=torch.long)


def _present_rewards(rewards: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """``rewards`` with missing slots set to 0 *before* any pair is formed: a NaN or inf there would otherwise reach
    the present slots' gradients through the masked-out pairs (0 * NaN is NaN in backward)."""
    return torch.where(present, rewards, torch.zeros((), dtype=rewards.dtype))


def _pair_margins(rewards: torch.Tensor) -> torch.Tensor:
    """(B, K, K) reward margins ``r_i - r_j`` of every ordered pair (i, j) of each list."""
    return rewards.unsqueeze(-1) - rewards.unsqueeze(-2)


def all_pairs_loss(
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    beta: float,
    ranks: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""The sigmoid DPO loss (DPO paper, Eq. 7) averaged over every strictly ordered pair of each list.

    With rewards r_k = beta * (log pi(y_k|x) - log pi_ref(y_k|x)) and P the pairs (i, j) where y_i is ranked
    strictly above y_j (both present):

        loss = (1 / |P|) * sum_{(i, j) in P} -log sigmoid(r_i - r_j)

    This is pairwise DPO trained on every pair the list implies, in one forward of the list: the pairwise baseline
    that sees the same data as the listwise losses. Averaging over the list's pairs keeps one list's weight equal to
    one DPO pair's, so a batch of lists with the same number of pairs each has exactly the loss (and gradient) of
    ``trl.DPOTrainer`` on the expanded pairs. K = 2 is exactly `dpo_loss`. Tied completions form no pair; a list with
    no strict pair (all tied) has loss 0 and no gradient. Missing slots (negative rank) are in no pair.

    Args:
        policy_logps (`torch.Tensor`): (B, K) summed log-probabilities of each completion under the policy.
        ref_logps (`torch.Tensor`): (B, K) the same under the reference policy.
        beta (`float`): the KL-penalty coefficient.
        ranks (`torch.Tensor`, *optional*): (B, K) ranks as in `plackett_luce_loss` (lower = better, equal = tie,
            negative = missing); `None`: a full best-first ranking.

    Returns:
        `torch.Tensor`: (B,) per-example loss in float32 (float64 if the inputs are float64).
    """
    ranks = _ranked_inputs(policy_logps, ref_logps, ranks)
    present = ranks >= 0
    rewards = _present_rewards(implicit_rewards(policy_logps, ref_logps, beta), present)  # (B, K)
    # pairs[b, i, j]: y_i strictly above y_j, both present
    pairs = (ranks.unsqueeze(-1) < ranks.unsqueeze(-2)) & present.unsqueeze(-1) & present.unsqueeze(-2)  # (B, K, K)
    pair_losses = torch.where(pairs, -F.logsigmoid(_pair_margins(rewards)), torch.zeros((), dtype=rewards.dtype))
    return pair_losses.sum((-2, -1)) / pairs.sum((-2, -1)).clamp(min=1)


def rank_labels(ranks: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Label values for lists that carry ranks only: the fraction of the list's other present completions that a
    completion is ranked strictly above, in [0, 1].

    A full ranking of K gets ``1, (K-2)/(K-1), ..., 0`` best first (evenly spaced, like labels from a reward on the
    same scale); tied completions get equal labels; a top-m partial ranking gives its shared bottom group 0.
    Missing slots (negative rank) get 0 and are never compared.

    Args:
        ranks (`torch.Tensor`): (B, K) ranks (lower = better, equal = tie, negative = missing).
        dtype (`torch.dtype`, defaults to `torch.float32`): of the labels.

    Returns:
        `torch.Tensor`: (B, K) labels of ``dtype``.
    """
    present = ranks >= 0
    beats = (ranks.unsqueeze(-1) < ranks.unsqueeze(-2)) & present.unsqueeze(-1) & present.unsqueeze(-2)  # (B, K, K)
    others = (present.sum(-1, keepdim=True) - 1).clamp(min=1)  # (B, 1)
    labels = beats.sum(-1).to(dtype) / others.to(dtype)
    return torch.where(present, labels, torch.zeros((), dtype=dtype))


def lipo_lambda_loss(
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    beta: float,
    ranks: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""LiPO-lambda (Liu et al. 2024, "LiPO: Listwise Preference Optimization through Learning-to-Rank", arXiv
    2402.01878, section 4): a pairwise logistic loss over every pair with different labels, each pair weighted by its
    LambdaLoss weight (Wang et al. 2018).

    With s_i = beta * (log pi(y_i|x) - log pi_ref(y_i|x)) and label values psi_i:

        loss = - sum_{i, j: psi_i > psi_j} Delta_ij * log sigmoid(s_i - s_j)
        Delta_ij = |G_i - G_j| * |1 / D(tau(i)) - 1 / D(tau(j))|,   G_i = 2^psi_i - 1,   D(tau) = log2(1 + tau)

    where tau(i) is the 1-based position of y_i when the list's present completions are sorted by s_i, highest
    first (the current implicit-reward order; ties in s keep slot order). The weights are constants of the step:
    tau comes from a sort and carries no gradient. The discount's base only scales the loss (log2 is the NDCG
    convention of LambdaLoss). The sum is over pairs, as in the paper, not a mean.

    Pairs with equal labels contribute nothing. For K = 2 with psi_1 > psi_2 the loss is
    ``(G_1 - G_2) * (1 - 1/log2(3)) * dpo_loss``: DPO weighted by the label gap.

    Args:
        policy_logps (`torch.Tensor`): (B, K) summed log-probabilities of each completion under the policy.
        ref_logps (`torch.Tensor`): (B, K) the same under the reference policy.
        beta (`float`): the KL-penalty coefficient.
        ranks (`torch.Tensor`, *optional*): (B, K) ranks; only their sign is used when ``labels`` is given
            (negative = missing slot). `None`: every slot present, a full best-first ranking.
        labels (`torch.Tensor`, *optional*): (B, K) label values psi (higher = better; the paper's are in [0, 1],
            and gains grow as 2^psi, so rescale wider scales first). `None`: `rank_labels` of ``ranks``. Values in
            missing slots are ignored.

    Returns:
        `torch.Tensor`: (B,) per-example loss in float32 (float64 if the inputs are float64).
    """
    ranks = _ranked_inputs(policy_logps, ref_logps, ranks)
    present = ranks >= 0
    rewards = _present_rewards(implicit_rewards(policy_logps, ref_logps, beta), present)  # (B, K)
    if labels is None:
        labels = rank_labels(ranks, rewards.dtype)
    elif labels.shape != rewards.shape:
        raise ValueError(f"labels must have shape {tuple(rewards.shape)}, got {tuple(labels.shape)}")
    labels = torch.where(present, labels.to(device=rewards.device, dtype=rewards.dtype), torch.zeros(()))
    with torch.no_grad():
        # Positions in the current reward order, missing slots last (they take no position among present ones).
        key = torch.where(present, rewards, torch.full_like(rewards, -torch.inf))
        order = torch.sort(key, dim=-1, descending=True, stable=True).indices  # (B, K)
        position = torch.empty_like(order).scatter_(-1, order, torch.arange(1, order.shape[-1] + 1).expand_as(order))
        inverse_discount = 1.0 / torch.log2(1.0 + position.to(rewards.dtype))  # (B, K)
        gains = torch.exp2(labels) - 1.0
        weights = (gains.unsqueeze(-1) - gains.unsqueeze(-2)).abs() * \
            (inverse_discount.unsqueeze(-1) - inverse_discount.unsqueeze(-2)).abs()  # (B, K, K)
    pairs = (labels.unsqueeze(-1) > labels.unsqueeze(-2)) & present.unsqueeze(-1) & present.unsqueeze(-2)
    pair_losses = torch.where(pairs, -weights * F.logsigmoid(_pair_margins(rewards)),
                              torch.zeros((), dtype=rewards.dtype))
    return pair_losses.sum((-2, -1))


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
