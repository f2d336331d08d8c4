"""What `ImplicitRewardScorer` returns: rewards with their parts, and scored candidates for reranking."""

from dataclasses import dataclass

import torch


@dataclass
class ScoreResult:
    """Implicit rewards and what they are made of.

    Shapes: (B,) when each prompt had one completion, (B, K) when completions were given as lists (K = the longest
    list; missing slots hold NaN, and 0 in ``num_tokens``).

    Attributes:
        rewards (`torch.Tensor`): ``beta * (policy_logps - ref_logps)`` (divided by ``num_tokens`` for "mean").
        policy_logps (`torch.Tensor`): summed log-probs of the completion tokens under the policy.
        ref_logps (`torch.Tensor` or `None`): the same under the reference; `None` when reference-free.
        num_tokens (`torch.Tensor`): completion tokens scored.
    """

    rewards: torch.Tensor
    policy_logps: torch.Tensor
    ref_logps: torch.Tensor | None
    num_tokens: torch.Tensor
    beta: float
    normalize: str
    reference_free: bool

    def tolist(self) -> list:
        """Rewards as nested Python lists, missing slots dropped."""
        if self.rewards.dim() == 1:
            return self.rewards.tolist()
        return [[r for r, n in zip(row, count) if n > 0] for row, count in
                zip(self.rewards.tolist(), self.num_tokens.tolist())]


@dataclass
class ScoredCandidate:
    """One candidate completion with its implicit reward; ``index`` is its position in the input list."""

    completion: object
    reward: float
    policy_logps: float
    ref_logps: float | None
    num_tokens: int
    index: int


@dataclass
class BestOfN:
    """Best-of-N result for one prompt: ``candidates`` in sampling order, ``best`` the highest-reward one."""

    prompt: object
    candidates: list[ScoredCandidate]

    @property
    def best(self) -> ScoredCandidate:
        return max(self.candidates, key=lambda c: c.reward)

    @property
    def ranked(self) -> list[ScoredCandidate]:
        return sorted(self.candidates, key=lambda c: -c.reward)


def candidates_of(result: ScoreResult, row: int, completions: list) -> list[ScoredCandidate]:
    """Row ``row`` of a (B, K) result as `ScoredCandidate`s, in input order."""
    ref = result.ref_logps
    return [ScoredCandidate(c, float(result.rewards[row, k]), float(result.policy_logps[row, k]),
                            None if ref is None else float(ref[row, k]), int(result.num_tokens[row, k]), k)
            for k, c in enumerate(completions)]
