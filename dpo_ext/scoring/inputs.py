"""What `ImplicitRewardScorer` takes, checked and turned into token-id groups before any model runs.

Texts follow the row rules (`dpo_ext.data.rows.check_scored`, the rules the trainer applies) and are tokenized as
the trainer tokenizes them (`dpo_ext.data.tokenize.tokenize_ranked`, TRL's convention), or on request as RewardBench
does (`dpo_ext.data.tokenize.tokenize_rewardbench`), where each completion has prompt ids of its own: completions
of one prompt whose prompt ids are equal still share one `Group`. Errors are `PreferenceDataError`s counted in
prompts (``unit="prompt"``: ``"prompt 1, completion 0: ..."``), with the field (``prompt``, ``completions[k]``) and
the completion's position as attributes for callers that name rows their own way.
"""

from dpo_ext.data.lengths import fit_max_length
from dpo_ext.data.messages import is_messages
from dpo_ext.data.rows import COMPLETIONS, PROMPT, PreferenceDataError, check_scored
from dpo_ext.data.tokenize import REWARDBENCH_MAX_LENGTH, tokenize_ranked, tokenize_rewardbench
from dpo_ext.modeling.models import position_limit, vocabulary_problem, vocabulary_size
from dpo_ext.modeling.prompt_cache import Group


def completion_lists(prompts, completions) -> tuple[list[list], bool]:
    """`ImplicitRewardScorer.score`'s arguments as one list of completions per prompt, and whether they were given
    as lists (else one completion per prompt)."""
    if isinstance(prompts, str) or is_messages(prompts):
        raise ValueError("prompts must be a list of prompts (wrap a single prompt in a list, or use rerank)")
    if len(prompts) != len(completions):
        raise ValueError(f"got {len(prompts)} prompts and {len(completions)} completions; pass one completion "
                         "(or one list of completions) per prompt")
    # one completion given as chat messages is a list too: only a list that is not messages is a list of completions
    nested = [isinstance(c, (list, tuple)) and not is_messages(c) for c in completions]
    if any(nested) and not all(nested):
        raise ValueError(f"completion {nested.index(not nested[0])} is {'not ' if nested[0] else ''}a list "
                         "unlike completion 0: give one completion per prompt, or a list for every prompt")
    return [list(c) if flag else [c] for c, flag in zip(completions, nested)], all(nested)


TOKENIZATIONS = ("trl", "rewardbench")


def tokenize_inputs(prompts, lists, tokenizer, allow_empty: bool = False) -> tuple[list, list]:
    """Check each prompt with its completions by the row rules and tokenize them as the trainer does.

    Returns:
        `(prompt_ids, completion_ids)`: B lists of ints, and B lists of K_b lists of ints.
    """
    prompt_ids, completion_ids = [], []
    for i, (prompt, completions) in enumerate(zip(prompts, lists)):
        try:
            completions = check_scored(prompt, completions, allow_empty=allow_empty)
            p, c = tokenize_ranked(prompt, completions, tokenizer)
        except PreferenceDataError as error:
            raise error.located(row=i, unit="prompt") from None
        prompt_ids.append(p)
        completion_ids.append(c)
    return prompt_ids, completion_ids


def tokenize_inputs_rewardbench(prompts, lists, tokenizer, allow_empty: bool = False,
                                max_length: int | None = None) -> tuple[list, list]:
    """Check each prompt with its completions by the row rules and tokenize them as RewardBench does
    (`tokenize_rewardbench`, truncating at ``max_length``, RewardBench's 2048 when `None`).

    Returns:
        `(completion_prompts, completion_ids)`: B lists of K_b prompt-id lists (one per completion), and B lists of
        K_b lists of ints.
    """
    completion_prompts, completion_ids = [], []
    for i, (prompt, completions) in enumerate(zip(prompts, lists)):
        try:
            completions = check_scored(prompt, completions, allow_empty=allow_empty)
            pairs = tokenize_rewardbench(prompt, completions, tokenizer, max_length or REWARDBENCH_MAX_LENGTH)
        except PreferenceDataError as error:
            raise error.located(row=i, unit="prompt") from None
        completion_prompts.append([p for p, _ in pairs])
        completion_ids.append([c for _, c in pairs])
    return completion_prompts, completion_ids


def _error(problem: str, prompt: int, completion: int | None = None) -> PreferenceDataError:
    field = PROMPT if completion is None else f"{COMPLETIONS}[{completion}]"
    return PreferenceDataError(problem, prompt, field, completion=completion, unit="prompt")


def token_groups(prompt_ids, completion_ids, models, max_length: int | None,
                 completion_prompts=None) -> tuple[list[Group], list[int], list[list[int]]]:
    """Token ids -> `Group`s (completions truncated to ``max_length``, as the trainer truncates) with their flat
    slots, each completion's token count, and each prompt's slots.

    Args:
        prompt_ids (`list`): B prompts' ids, each shared by the prompt's completions (one `Group` per prompt).
        completion_ids (`list`): B lists of K_b completions' ids.
        models (`list`): the models that will run (policy, and the reference model when separate): ids must be in
            the first one's vocabulary and rows within every model's positions.
        completion_prompts (`list`, *optional*): B lists of K_b prompt-id lists, one per completion, used instead of
            ``prompt_ids`` (which may then be `None`). A prompt's completions with equal prompt ids share a `Group`,
            so a prompt whose completions disagree is processed once per distinct prompt-id list.

    Returns:
        `(groups, counts, slots)`: ``counts[s]`` the token count of the completion in slot ``s``; ``slots[b]`` the
        slots of prompt b's completions, in their order (slots run over all completions in input order).

    Raises:
        `PreferenceDataError`: for an empty prompt, a token id outside the vocabulary, a prompt of ``max_length``
            tokens or more, a completion with no tokens, or a row longer than a model's positions.
    """
    limit = min((n for n in map(position_limit, models) if n is not None), default=None)
    vocab_size = vocabulary_size(models[0])
    groups, counts, slots = [], [], []
    shared = completion_prompts is None
    for i, (prompts, completions) in enumerate(zip(prompt_ids if shared else completion_prompts, completion_ids)):
        completions, start = [list(c) for c in completions], len(counts)
        parts = [(list(prompts), list(range(len(completions))))] if shared else _same_prompt(prompts)
        counts += [0] * len(completions)
        for prompt, positions in parts:
            kept = _checked(prompt, [completions[k] for k in positions], positions, i, vocab_size, limit, max_length)
            groups.append(Group(prompt, kept, [start + k for k in positions]))
            for k, ids in zip(positions, kept):
                counts[start + k] = len(ids)
        slots.append(list(range(start, len(counts))))
    return groups, counts, slots


def _same_prompt(prompts) -> list[tuple[list[int], list[int]]]:
    """``(prompt_ids, positions)`` for each distinct prompt-id list of a prompt's completions, in order of first use."""
    parts = {}
    for k, prompt in enumerate(prompts):
        parts.setdefault(tuple(prompt), (list(prompt), []))[1].append(k)
    return list(parts.values())


def _checked(prompt, completions, positions, i, vocab_size, limit, max_length) -> list[list[int]]:
    """A group's completions checked and truncated (completions[j] is completion ``positions[j]`` of prompt i)."""
    if not prompt:  # nothing would predict a completion's first token (the row rules refuse it too)
        raise _error("empty prompt_ids: nothing would predict a completion's first token; give at least one "
                     "prompt token (to score without a prompt, use the tokenizer's BOS token)", i)
    for k, ids in [(None, prompt)] + list(zip(positions, completions)):
        problem = vocabulary_problem(ids, vocab_size)
        if problem is not None:
            raise _error(problem, i, k)
    _, completions, dropped = fit_max_length(prompt, completions, max_length)  # the trainer's cut (kept prompt: whole)
    if dropped:
        raise _error(f"{len(prompt)} tokens, not below max_length={max_length}", i)
    for k, c in zip(positions, completions):
        if not c:
            raise _error("no tokens to score", i, k)
        if limit is not None and len(prompt) + len(c) > limit:
            raise _error(f"prompt + completion is {len(prompt) + len(c)} tokens, more than the model's {limit} "
                         "positions; pass max_length= to truncate", i, k)
    return completions
