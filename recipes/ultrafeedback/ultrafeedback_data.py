"""UltraFeedback (``openbmb/UltraFeedback``) as ranked rows, and as the two pairwise baselines built from the same rows.

A published record (one split, ``train``; the dataset card and the datasets-server schema) is::

    {"source": str, "instruction": str, "models": [str], "correct_answers": [str], "incorrect_answers": [str],
     "completions": [{"model": str, "principle": str, "custom_system_prompt": str, "response": str,
                      "critique": str, "overall_score": float, "fine-grained_score": float or null,
                      "annotations": {"helpfulness": {"Rating", "Rationale", "Rationale For Rating", "Type"},
                                      "honesty": {"Rating", "Rationale"},
                                      "instruction_following": {"Rating", "Rationale"},
                                      "truthfulness": {"Rating", "Rationale", "Rationale For Rating", "Type"}}}]}

Every ``Rating`` is a string, ``"1"`` to ``"5"`` or ``"N/A"``; ``Type`` is a list of strings. ``overall_score`` is
GPT-4's 1-10 score given with the ``critique`` (corrected upstream on 2023-12-29, after a bug had given some bad
completions 10); ``fine-grained_score`` is the mean of the four ratings that are not ``"N/A"``, null when all are.
``correct_answers``/``incorrect_answers`` hold ``["None"]`` except for TruthfulQA and FLAN prompts. There are four
completions per prompt; nothing here assumes it.

The recipe compares, on the same prompts: Plackett-Luce DPO on each prompt's whole ranking (`to_ranked_rows`), DPO on
one pair per prompt, the best completion against a random worse one (`binarized_pairs`, the rule of
``HuggingFaceH4/ultrafeedback_binarized``), and DPO on every pair with different scores (`all_pairs`). UltraFeedback
has no test split: `split_by_prompt` holds prompts out by a hash of their text, so the same prompt falls on the same
side in all three.
"""

import hashlib
import math
import random
from numbers import Real

from dpo_ext import PreferenceDataError

DATASET = "openbmb/UltraFeedback"
# The revision HuggingFaceH4/ultrafeedback_binarized pinned: the one with the corrected overall_score
REVISION = "40b436560ca83a8dba36114c22ab3c66e43f6d5e"
ASPECTS = ("helpfulness", "honesty", "instruction_following", "truthfulness")
RATINGS = ("fine_grained", "overall") + ASPECTS
NOT_RATED = "N/A"
MIN_RATING, MAX_RATING = 1, 5  # every aspect's scale (the annotation prompts'); a rating off it is a broken record
SPLIT_SALT = "ultrafeedback-heldout"

# Why a record gives no row, and why a completion is left out of its row (keys of the counts `to_ranked_rows` returns)
EMPTY_PROMPT, TOO_FEW, ALL_TIED = "empty_prompt", "fewer_than_2_scored", "all_tied"
UNSCORED, EMPTY_RESPONSE, IDENTICAL = "unscored", "empty_response", "identical_response"


def _field(container: dict, key: str, where: str):
    """``container[key]``; a key that is absent (not null) means the record is not in the published schema."""
    if not isinstance(container, dict):
        raise PreferenceDataError(f"expected an object, got {type(container).__name__}; give the record in the "
                                  f"published schema of {DATASET}", field=where)
    if key not in container:
        raise PreferenceDataError(f"missing; every record of {DATASET} has this field: give the records in the "
                                  "published schema", field=f"{where}.{key}" if where else key)
    return container[key]


def _rating(annotations: dict, aspect: str) -> float | None:
    """One aspect's rating as a number, or `None` for ``"N/A"`` or null."""
    where = f"annotations.{aspect}"
    value = _field(annotations, aspect, "annotations")
    if value is None:
        return None
    rating = _field(value, "Rating", where)
    if rating is None or rating == NOT_RATED:
        return None
    number = rating
    if isinstance(rating, str):
        try:
            number = float(rating)
        except ValueError:
            number = None
    if isinstance(number, bool) or not isinstance(number, Real) or not math.isfinite(number):
        raise PreferenceDataError(f"expected a rating such as '4' (a number in a string) or 'N/A', got {rating!r}; fix "
                                  "the record, or write 'N/A' to leave this rating out", field=f"{where}.Rating")
    if not MIN_RATING <= number <= MAX_RATING:
        raise PreferenceDataError(f"off the 1-5 scale: got {rating!r}; the ratings of {DATASET} are '1' to '5' or "
                                  "'N/A': fix the record, or write 'N/A' to leave this rating out",
                                  field=f"{where}.Rating")
    return float(number)


def score(completion: dict, rating: str = "fine_grained") -> float | None:
    """One completion's score (higher is better) under ``rating``, or `None` when it has none.

    Args:
        completion (`dict`): one entry of a record's ``completions``, in the published schema.
        rating (`str`): ``"fine_grained"``: the mean of the aspect ratings that are numbers (how upstream computes
            ``fine-grained_score``), `None` when all four are ``"N/A"``; ``"overall"``: ``overall_score`` (what
            ``HuggingFaceH4/ultrafeedback_binarized`` ranks by), `None` when null or NaN; or one aspect of `ASPECTS`:
            its ``Rating``, `None` for ``"N/A"``.

    Raises:
        `ValueError`: for a ``rating`` not in `RATINGS`.
        `PreferenceDataError`: naming the field (relative to the completion) when it is absent or of the wrong type.
    """
    if rating not in RATINGS:
        raise ValueError(f"unknown rating {rating!r}; choose one of {', '.join(RATINGS)}")
    if rating == "overall":
        value = _field(completion, "overall_score", "")
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return None
        if isinstance(value, bool) or not isinstance(value, Real) or math.isinf(value):
            raise PreferenceDataError(f"expected a number, got {value!r}; fix the record, or give null to leave the "
                                      "completion out", field="overall_score")
        return float(value)
    annotations = _field(completion, "annotations", "")
    if annotations is None:
        return None
    aspects = ASPECTS if rating == "fine_grained" else (rating,)
    ratings = [r for r in (_rating(annotations, aspect) for aspect in aspects) if r is not None]
    return sum(ratings) / len(ratings) if ratings else None


def _read_record(record: dict, rating: str, left_out: dict) -> tuple[str, list[tuple[str, float]]]:
    """A record's instruction, and ``(response, score)`` of its usable completions in the published order; counts the
    others in ``left_out``. Errors name the field, not yet the record."""
    prompt = _field(record, "instruction", "")
    if not isinstance(prompt, str):
        raise PreferenceDataError(f"expected a string, got {type(prompt).__name__}", field="instruction")
    completions = _field(record, "completions", "")
    if not isinstance(completions, list):
        raise PreferenceDataError(f"expected a list of completions, got {type(completions).__name__}",
                                  field="completions")
    kept = {}  # response -> best score among its copies; dicts keep the first copy's position
    for k, completion in enumerate(completions):
        try:
            response = _field(completion, "response", "")
            if not isinstance(response, str):
                raise PreferenceDataError(f"expected a string, got {type(response).__name__}", field="response")
            value = score(completion, rating)
        except PreferenceDataError as error:
            field = f"completions[{k}]" + (f".{error.field}" if error.field else "")
            raise PreferenceDataError(error.problem, field=field, completion=k) from None
        if value is None:
            left_out[UNSCORED] += 1
        elif not response.strip():
            left_out[EMPTY_RESPONSE] += 1
        elif response in kept:
            # The same text twice is one completion, compared with nothing; it keeps its best score (as dpo_ext does)
            left_out[IDENTICAL] += 1
            kept[response] = max(kept[response], value)
        else:
            kept[response] = value
    return prompt, list(kept.items())


def to_ranked_rows(records, rating: str = "fine_grained") -> tuple[list[dict], dict]:
    """Scored rows ``{"prompt", "completions", "scores"}`` (higher is better, equal scores tie), one per prompt with
    something to rank, and the counts of what was left out.

    A row keeps every completion with a score under ``rating`` (see `score`), in the published order. Left out, and
    counted: completions with no score (``"unscored"``), with an empty response (``"empty_response"``), or repeating an
    earlier response of the same prompt (``"identical_response"``: the copy that stays keeps the higher score);
    records whose instruction is empty (``"empty_prompt"``), or left with fewer than 2 completions
    (``"fewer_than_2_scored"``) or with all scores equal (``"all_tied"``).

    Returns:
        `tuple`: the rows, and ``{"records", "kept", "left_out": {reason: records}, "completions_left_out":
        {reason: completions}}``.

    Raises:
        `PreferenceDataError`: naming the record's position and the field (``completions[2].overall_score``) for a
            record that is not in the published schema (a field absent or of the wrong type).
    """
    records, rows = list(records), []
    left_out = {EMPTY_PROMPT: 0, TOO_FEW: 0, ALL_TIED: 0}
    completions_left_out = {UNSCORED: 0, EMPTY_RESPONSE: 0, IDENTICAL: 0}
    for index, record in enumerate(records):
        try:
            prompt, scored = _read_record(record, rating, completions_left_out)
        except PreferenceDataError as error:
            raise error.located(row=index) from None
        if not prompt.strip():
            left_out[EMPTY_PROMPT] += 1
        elif len(scored) < 2:
            left_out[TOO_FEW] += 1
        elif len({value for _, value in scored}) == 1:
            left_out[ALL_TIED] += 1
        else:
            rows.append({"prompt": prompt, "completions": [response for response, _ in scored],
                         "scores": [value for _, value in scored]})
    return rows, {"records": len(records), "kept": len(rows), "left_out": left_out,
                  "completions_left_out": completions_left_out}


def _merits(row: dict, index: int) -> list[float]:
    """A scored or ranked row's completions as numbers where higher is better."""
    if row.get("scores") is not None:
        return [float(s) for s in row["scores"]]
    if row.get("ranks") is not None:
        return [-float(r) for r in row["ranks"]]
    raise PreferenceDataError("expected a scored row ('scores') or a ranked row ('ranks'), as to_ranked_rows gives",
                              index, "scores")


def binarized_pairs(rows, seed: int) -> list[dict]:
    """One pair ``{"prompt", "chosen", "rejected"}`` per row: the best completion against one drawn at random among
    those with a strictly lower score.

    The best is the highest score; among completions tied for it, the first in the row (the published order), as
    Python's ``max`` picks in ``HuggingFaceH4/ultrafeedback_binarized``'s ``create_dataset.py``. That script drew the
    rejected completion among all the others, so it could draw one tied with the best and keep the tie as a pair;
    here a tie is never a pair. A row with no lower completion gives no pair (`to_ranked_rows` keeps none such).

    The draw is seeded by ``seed`` and the prompt's text (not by the row's position), so a prompt gets the same pair
    whatever rows come before it: in a subset, a shuffled list or a held-out split.
    """
    pairs = []
    for index, row in enumerate(rows):
        merits = _merits(row, index)
        best = merits.index(max(merits))
        lower = [k for k, merit in enumerate(merits) if merit < merits[best]]
        if not lower:
            continue
        # A str seed is hashed with SHA-512 by `random`, the same on every machine and run (unlike hash())
        draw = random.Random(f"{seed}\n{row['prompt']}").choice(lower)
        pairs.append({"prompt": row["prompt"], "chosen": row["completions"][best],
                      "rejected": row["completions"][draw]})
    return pairs


def all_pairs(rows) -> list[dict]:
    """Every pair ``{"prompt", "chosen", "rejected"}`` of a row's completions whose scores differ, the higher scored
    one chosen; tied completions give no pair. Per row, in the row's order of the first completion of each pair."""
    pairs = []
    for index, row in enumerate(rows):
        merits, completions = _merits(row, index), row["completions"]
        for i in range(len(completions)):
            for j in range(i + 1, len(completions)):
                if merits[i] != merits[j]:
                    high, low = (i, j) if merits[i] > merits[j] else (j, i)
                    pairs.append({"prompt": row["prompt"], "chosen": completions[high], "rejected": completions[low]})
    return pairs


def in_test_split(prompt: str, test_fraction: float, salt: str = SPLIT_SALT) -> bool:
    """Whether ``prompt`` is held out: the first 8 bytes of SHA-256 of ``salt`` and the prompt, read as a fraction
    of 2**64, fall below ``test_fraction``. It depends on the prompt's text alone, never on what else is loaded."""
    if not 0.0 <= test_fraction <= 1.0:
        raise ValueError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    digest = hashlib.sha256(f"{salt}\n{prompt}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") < test_fraction * 2**64


def split_by_prompt(rows, test_fraction: float = 0.05, salt: str = SPLIT_SALT,
                    key: str = "prompt") -> tuple[list[dict], list[dict]]:
    """``(train, test)``: rows or pairs split by `in_test_split` of their ``key`` (``"instruction"`` for published
    records), each side in the given order.

    The ranked rows, both sets of pairs made from them and the records they came from fall on the same sides, prompt
    by prompt."""
    train, test = [], []
    for row in rows:
        (test if in_test_split(row[key], test_fraction, salt) else train).append(row)
    return train, test


def load_records(split: str = "train", data_files: str | list[str] | None = None,
                 revision: str | None = REVISION) -> list[dict]:
    """The records of ``openbmb/UltraFeedback`` (at ``revision``; it has only a ``train`` split), or of local JSON
    lines files in its published schema (``data_files``)."""
    from datasets import load_dataset

    if data_files is not None:
        return list(load_dataset("json", data_files=data_files, split="train"))
    return list(load_dataset(DATASET, split=split, revision=revision))


def load_rows(split: str = "train", data_files: str | list[str] | None = None, rating: str = "fine_grained",
              revision: str | None = REVISION) -> tuple[list[dict], dict]:
    """`to_ranked_rows` of `load_records`."""
    return to_ranked_rows(load_records(split, data_files, revision), rating)
