"""The one rule on what a row keeps under ``max_length`` (and ``max_prompt_length``), in token ids.

Training (`dpo_ext.data.tokenize.prepare_ranked_dataset` and both collators), the scorer
(`dpo_ext.scoring.inputs.token_groups`) and `dpo-ext validate` (`dpo_ext.data.validation.validate_rows`) all ask
these functions, so that a row is cut (or dropped) the same way wherever it goes. RewardBench's own completion cut
(`dpo_ext.data.tokenize.tokenize_rewardbench`) is a different convention, kept only to reproduce its numbers.
"""

from typing import NamedTuple

from dpo_ext.settings import SettingError, as_number


class KeptRow(NamedTuple):
    """What a prompt and its completions keep under ``max_length`` (`fit_max_length`)."""

    prompt_ids: list[int]
    completion_ids: list[list[int]]
    dropped: bool  # the prompt alone reaches max_length: no completion token would be left to score


def fit_max_length(prompt_ids, completion_ids, max_length: int | None) -> KeptRow:
    """Cut a prompt and its completions to ``max_length`` the way TRL does: each ``prompt + completion`` keeps its
    first ``max_length`` ids, so the prompt survives and a completion loses its tail. A row whose prompt alone has
    ``max_length`` ids or more is ``dropped`` (training drops it, the scorer refuses it); its cut ids are still
    returned (the prompt's first ``max_length`` ids, empty completions) for callers that meet such a row anyway.

    Args:
        prompt_ids (`list[int]`): the prompt's ids (after `keep_prompt_end`, where ``max_prompt_length`` is set).
        completion_ids (`list[list[int]]`): the K completions' ids.
        max_length (`int`, *optional*): `None` keeps everything.

    Returns:
        `KeptRow`: ``(prompt_ids, completion_ids, dropped)``, as new lists.
    """
    prompt = list(prompt_ids)
    if max_length is None:
        return KeptRow(prompt, [list(c) for c in completion_ids], False)
    prompt = prompt[:max_length]
    room = max_length - len(prompt)
    return KeptRow(prompt, [list(c)[:room] for c in completion_ids], len(prompt_ids) >= max_length)


def keep_prompt_end(prompt_ids: list[int], completion_ids: list[list[int]], max_length: int | None,
                    max_prompt_length: int | None) -> list[int]:
    """The prompt ids a row trains with under ``max_prompt_length``: where the prompt and the row's longest completion
    together exceed ``max_length``, the prompt keeps its last ``max_prompt_length`` ids (its end, where the turn to
    answer is), as the DPO paper's code does for Anthropic HH (``truncation_mode`` keep_end). Otherwise, or with
    either setting `None`, the prompt is returned as it is. A leading BOS id is among the first to go.
    """
    if max_prompt_length is None or max_length is None:
        return prompt_ids
    if len(prompt_ids) + max(len(ids) for ids in completion_ids) <= max_length:
        return prompt_ids
    return prompt_ids[-max_prompt_length:]


def check_length_settings(max_length, max_prompt_length, names: tuple[str, str] = ("max_length",
                                                                                  "max_prompt_length")) -> None:
    """The one rule on ``max_length`` and ``max_prompt_length``, for training (`PLDPOConfig`) and `dpo-ext validate`:
    ``max_length`` an integer of at least 2, ``max_prompt_length`` an integer of at least 1 and below ``max_length``
    (either may be `None`, but ``max_prompt_length`` needs a ``max_length``). ``names`` name the two settings in the
    message (``("--max-length", "--max-prompt-length")`` for a command line).

    Raises:
        `dpo_ext.settings.SettingError`: naming the setting and what to do.
    """
    length_name, prompt_name = names
    if max_length is not None:
        as_number(length_name, max_length, int, minimum=2)
    if max_prompt_length is None:
        return
    as_number(prompt_name, max_prompt_length, int, minimum=1)
    if max_length is None or max_prompt_length >= max_length:
        raise SettingError(f"{prompt_name} ({max_prompt_length}) must be below {length_name} ({max_length}): it is "
                           f"what a prompt keeps so that a completion still fits; lower it, "
                           f"{'give' if max_length is None else 'raise'} {length_name}, or leave {prompt_name} unset")
