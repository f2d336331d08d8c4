"""The judge interface, and the two judges that wrap something already built: a Python function and an
`ImplicitRewardScorer`."""


class Judge:
    """Scores completions: ``judge(prompts, completions)`` -> B lists of floats, higher = better.

    Attributes:
        name (`str`): how errors name the judge (its spec, ``"rm:models/rm"``...).
    """

    name = "judge"

    def __call__(self, prompts: list, completions: list[list]) -> list[list[float]]:
        """Args:
            prompts (`list`): B prompts, each text or a list of chat messages.
            completions (`list`): B lists of completions (K_b each; text, or assistant messages for chat prompts).

        Returns:
            `list[list[float]]`: ``K_b`` scores for row ``b``, in the order of its completions.
        """
        raise NotImplementedError


class FunctionJudge(Judge):
    """A Python function as a judge: ``fn(prompts, completions) -> list[list[float]]``, called with a batch of rows
    (B prompts and B lists of completions, as `Judge.__call__` describes). A function written for one row,
    ``row_fn(prompt, completions) -> list[float]``, becomes one with
    ``lambda prompts, completions: [row_fn(p, c) for p, c in zip(prompts, completions)]``.

    Args:
        fn (`Callable`): the function.
        name (`str`, *optional*): how errors name it (defaults to ``py:<module>:<name>``).
    """

    def __init__(self, fn, name: str | None = None):
        self.fn = fn
        self.name = name or f"py:{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', repr(fn))}"

    def __call__(self, prompts, completions):
        return self.fn(list(prompts), [list(c) for c in completions])


class ImplicitRewardJudge(Judge):
    """The implicit reward ``beta * log pi(y|x) / pi_ref(y|x)`` of a DPO-trained model as the judge (self-rewarding:
    DICE, Chen et al. 2024, ranks each round's samples this way). Scores are `ImplicitRewardScorer.score`'s rewards
    (summed over tokens), at the beta the adapter was trained with.

    Args:
        scorer (`ImplicitRewardScorer`): the scorer.
        name (`str`, *optional*): how errors name the judge.
    """

    def __init__(self, scorer, name: str | None = None):
        self.scorer = scorer
        self.name = name or "implicit reward"

    @classmethod
    def from_pretrained(cls, adapter: str, name: str | None = None, **kwargs) -> "ImplicitRewardJudge":
        """The judge of a saved adapter (`ImplicitRewardScorer.from_pretrained`, beta from its training record);
        ``kwargs`` go there (``device``, ``base_model``...)."""
        from dpo_ext.scoring.scorer import ImplicitRewardScorer

        return cls(ImplicitRewardScorer.from_pretrained(adapter, **kwargs), name or f"implicit:{adapter}")

    def __call__(self, prompts, completions):
        result = self.scorer.score(list(prompts), [list(c) for c in completions])
        return [result.rewards[b, :len(c)].tolist() for b, c in enumerate(completions)]  # (B, K) NaN-padded
