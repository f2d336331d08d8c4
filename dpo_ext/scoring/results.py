"""What `ImplicitRewardScorer` returns: rewards with their parts, and scored candidates for reranking."""

import dataclasses
import math
from dataclasses import dataclass

import torch

from dpo_ext.data.rows import PreferenceDataError


def check_finite_logps(slots: list[list[int]], policy_logps: torch.Tensor, ref_logps: torch.Tensor | None) -> None:
    """Refuse NaN or infinite log-probs (N,) before they become rewards: counted as wrong answers, they would turn a
    broken model into an accuracy of 0.0. ``slots[b]`` are the positions of prompt b's completions.

    Raises:
        `PreferenceDataError`: at the first prompt and completion concerned (callers name it their own way).
    """
    bad = ~torch.isfinite(policy_logps)
    if ref_logps is not None:
        bad |= ~torch.isfinite(ref_logps)
    if not bad.any():
        return
    flat = int(bad.nonzero()[0])
    prompt, completion = next((b, positions.index(flat)) for b, positions in enumerate(slots) if flat in positions)
    model, value = (("policy", policy_logps[flat]) if not torch.isfinite(policy_logps[flat]) else
                    ("reference", ref_logps[flat]))
    raise PreferenceDataError(
        f"the {model} model gives a non-finite log-prob ({float(value)}) for this completion, so its reward means "
        f"nothing ({int(bad.sum())} of {bad.numel()} completions): check the model's weights for NaN or infinite "
        "values, or load it in float32 if its dtype overflows", prompt, completion=completion, unit="prompt")


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

    @classmethod
    def from_slots(cls, slots: list[list[int]], rewards, policy_logps, ref_logps, num_tokens,
                   **settings) -> "ScoreResult":
        """(B, K) results from flat per-completion values, ``slots[b]`` the positions of prompt b's completions."""
        width = max(map(len, slots), default=0)

        def grid(values, fill):
            out = torch.full((len(slots), width), fill, dtype=values.dtype)
            for b, positions in enumerate(slots):
                out[b, : len(positions)] = values[positions]
            return out

        return cls(grid(rewards, math.nan), grid(policy_logps, math.nan),
                   None if ref_logps is None else grid(ref_logps, math.nan), grid(num_tokens, 0), **settings)

    def first_column(self) -> "ScoreResult":
        """(B,) results of a (B, K) one with one completion per prompt."""
        ref = None if self.ref_logps is None else self.ref_logps[:, 0]
        return dataclasses.replace(self, rewards=self.rewards[:, 0], policy_logps=self.policy_logps[:, 0],
                                   ref_logps=ref, num_tokens=self.num_tokens[:, 0])

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
