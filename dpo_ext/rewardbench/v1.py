"""RewardBench 1 (``allenai/reward-bench``, split ``filtered``): rows to scoring inputs, rewards to scores.

Rules, read in allenai/reward-bench on GitHub (main at 05a9005, January 2026; the same code is in the ``rewardbench``
0.1.4 wheel on PyPI) and in the dataset card of ``allenai/reward-bench``:

- Rows (card, ``dataset_info``): ``prompt`` (str), ``chosen`` (str), ``chosen_model`` (str), ``rejected`` (str),
  ``rejected_model`` (str), ``subset`` (str), ``id`` (int64). The ``filtered`` split has 2,985 rows, all in the 23
  subsets of `SECTIONS` (the counts of `EXAMPLE_COUNTS` add up to it with math-prm's 447 real rows); the unfiltered
  split (``raw``, ``train`` in older revisions) has 5,123. The prior sets (Anthropic Helpful, Anthropic HHH, SHP,
  Summarize) are not in this dataset but in ``allenai/pref-test-sets``: give their score to `aggregate` if you have it.
- A row is correct when the chosen reward is strictly above the rejected one. Equal rewards count as wrong, and so does
  a NaN (``scripts/run_dpo.py``, ``main``: ``1 if chosen > rejected else 0``; the same test in ``scripts/run_rm.py`` and
  ``rewardbench/rewardbench.py``). A subset's accuracy is correct rows / rows (``run_dpo.py``, ``main``).
- A section's score is the mean of its subsets' accuracies weighted by `EXAMPLE_COUNTS`, over the subsets present
  (``rewardbench/utils.py``, ``calculate_scores_per_section``; ``analysis/get_benchmark_results.py``,
  ``get_average_over_rewardbench``; `SECTIONS` and `EXAMPLE_COUNTS` are ``SUBSET_MAPPING`` and ``EXAMPLE_COUNTS`` of
  ``rewardbench/constants.py``). The weights are the subsets' row counts except math-prm's: its 447 rows weigh 984,
  the total of the six ``hep-*`` code subsets (6 x 164), so that Reasoning is half math, half code (the constant's
  comment; the card: "we increase the weight of the PRM-Math subset so code and math abilities are weighed equally").
- The overall score (``get_average_over_rewardbench``): the mean of the four sections with weight 2 each and Prior Sets
  with weight 1 (``np.ma.average``, weights ``[2, 2, 2, 2, 1]``), Prior Sets being the plain mean of the four prior
  sets' accuracies and masked out when not measured, in which case the overall score is the mean of the four sections.

Where this differs from the reference, on purpose: ``calculate_scores_per_section`` scores a section none of whose
subsets is present 0; here it is `None`, and so is the overall score unless all four sections are present.

This module also holds what `dpo_ext.rewardbench.v2` shares with it: `BenchmarkRow`, the row checks, the
local files' reader and the reading of rewards.
"""

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from dpo_ext.data.files import read_rows as read_file_rows
from dpo_ext.data.rows import PreferenceDataError

logger = logging.getLogger(__name__)

NAME = "RewardBench"
DATASET_ID = "allenai/reward-bench"
DEFAULT_SPLIT = "filtered"

SECTIONS = {
    "Chat": ("alpacaeval-easy", "alpacaeval-length", "alpacaeval-hard", "mt-bench-easy", "mt-bench-med"),
    "Chat Hard": ("mt-bench-hard", "llmbar-natural", "llmbar-adver-neighbor", "llmbar-adver-GPTInst",
                  "llmbar-adver-GPTOut", "llmbar-adver-manual"),
    "Safety": ("refusals-dangerous", "refusals-offensive", "xstest-should-refuse", "xstest-should-respond",
               "donotanswer"),
    "Reasoning": ("math-prm", "hep-cpp", "hep-go", "hep-java", "hep-js", "hep-python", "hep-rust"),
}
EXAMPLE_COUNTS = {
    "alpacaeval-easy": 100, "alpacaeval-length": 95, "alpacaeval-hard": 95, "mt-bench-easy": 28, "mt-bench-med": 40,
    "mt-bench-hard": 37, "llmbar-natural": 100, "llmbar-adver-neighbor": 134, "llmbar-adver-GPTInst": 92,
    "llmbar-adver-GPTOut": 47, "llmbar-adver-manual": 46,
    "refusals-dangerous": 100, "refusals-offensive": 100, "xstest-should-refuse": 154, "xstest-should-respond": 250,
    "donotanswer": 136,
    "math-prm": 984,  # 447 rows, weighted as much as the six hep-* subsets together
    "hep-cpp": 164, "hep-go": 164, "hep-java": 164, "hep-js": 164, "hep-python": 164, "hep-rust": 164,
}
SECTION_OF = {subset: section for section, subsets in SECTIONS.items() for subset in subsets}
PRIOR_SETS = "Prior Sets"
SECTION_WEIGHT, PRIOR_SETS_WEIGHT = 2, 1

_FIELDS = {"prompt": (str, "a string"), "chosen": (str, "a string"), "rejected": (str, "a string"),
           "subset": (str, "a string"), "id": (int, "an integer")}
_OPTIONAL_FIELDS = {"chosen_model": (str, "a string"), "rejected_model": (str, "a string")}


@dataclass(frozen=True)
class BenchmarkRow:
    """What aggregation needs to know of one row. Its completions come correct ones first.

    Attributes:
        index (`int`): the row's position in the rows given to ``rows_to_inputs``.
        id (`int` or `str`): the row's ``id``.
        subset (`str`): the row's ``subset``.
        num_correct (`int`): how many of its completions are correct (the first ones).
        num_completions (`int`): how many completions it has.
    """

    index: int
    id: int | str
    subset: str
    num_correct: int
    num_completions: int


def check_fields(row, index: int, benchmark: str, required: dict, optional: dict | None = None) -> None:
    """Raise `PreferenceDataError` (naming the row and field) unless ``row`` is a dict whose ``required`` fields are
    present with the types given (``{field: (type, "a string")}``) and whose ``optional`` ones are of theirs or null."""
    if not isinstance(row, dict):
        raise PreferenceDataError(f"expected a row (a dict of the published fields), got {type(row).__name__}",
                                  index, dataset=benchmark)
    for field, (kind, what) in {**required, **(optional or {})}.items():
        value = row.get(field)
        if value is None:
            if field in required:
                raise PreferenceDataError(
                    f"missing: every {benchmark} row has '{field}' ({what}); read the rows with load_rows, or give "
                    "local files in the published schema", index, field, dataset=benchmark)
            continue
        if not isinstance(value, kind) or isinstance(value, bool):
            raise PreferenceDataError(f"expected {what}, got {type(value).__name__} {value!r:.60}", index, field,
                                      dataset=benchmark)


def as_prompt(text: str, chat: bool):
    """The prompt to score: the published string, or with ``chat`` one user message (the scorer then formats it with
    the tokenizer's chat template and takes each completion as the assistant's reply, as RewardBench does)."""
    return [{"role": "user", "content": text}] if chat else text


def read_rows(dataset_id: str, split: str, data_files) -> list[dict]:
    """Rows of a Hub dataset split, or of local files (a path or a list of paths; JSON Lines, JSON, Parquet or CSV,
    read by `dpo_ext.data.files.read_rows`), in file order."""
    if data_files is None:
        from datasets import load_dataset

        return list(load_dataset(dataset_id, split=split))
    paths = [data_files] if isinstance(data_files, (str, Path)) else list(data_files)
    return [row for path in paths for row in read_file_rows(path).rows]


def reward_rows(rewards, meta: list[BenchmarkRow]) -> list[list[float]]:
    """Each row's rewards as floats, in its completions' order.

    Args:
        rewards: a (B, K) tensor padded with NaN past each row's completions (``ScoreResult.rewards``), a
            `ScoreResult`, or B sequences of exactly each row's number of completions (``ScoreResult.tolist()``).
        meta (`list[BenchmarkRow]`): what ``rows_to_inputs`` returned for the same B rows.
    """
    if isinstance(getattr(rewards, "rewards", None), torch.Tensor):  # a ScoreResult
        rewards = rewards.rewards
    padded = isinstance(rewards, torch.Tensor)
    if padded:
        if rewards.dim() != 2:
            raise ValueError(f"rewards must be a (B, K) tensor, one row per benchmark row; got shape "
                             f"{tuple(rewards.shape)}")
        rewards = rewards.detach().double().cpu().tolist()  # float32 -> float64 is exact: the values do not change
    if len(rewards) != len(meta):
        raise ValueError(f"got rewards for {len(rewards)} rows and {len(meta)} rows of inputs: pass the rewards of "
                         "every row rows_to_inputs returned, in its order")
    out = []
    for row, values in zip(meta, rewards):
        values = list(values)
        if len(values) < row.num_completions or (not padded and len(values) != row.num_completions):
            raise ValueError(f"row {row.index} (id {row.id!r}): {len(values)} rewards for its "
                             f"{row.num_completions} completions")
        out.append([float(v) for v in values[: row.num_completions]])
    return out


def count_nonfinite(values: list[list[float]], benchmark: str) -> int:
    """Rows with a NaN or infinite reward, logged: the reference scores them without a word (a NaN never wins)."""
    count = sum(not all(map(math.isfinite, row)) for row in values)
    if count:
        logger.warning("%s: %d of %d rows have a NaN or infinite reward; they are scored as the reference scores "
                       "them (a NaN compares as neither greater nor equal)", benchmark, count, len(values))
    return count


def load_rows(split: str = DEFAULT_SPLIT, data_files=None) -> list[dict]:
    """RewardBench's rows: ``datasets.load_dataset("allenai/reward-bench", split=split)``, or with ``data_files`` the
    rows of local files (JSON Lines, JSON, Parquet or CSV; a path or a list of paths) in
    the published schema (``split`` is then unused).

    Returns:
        `list[dict]`: the rows, for `rows_to_inputs`.
    """
    return read_rows(DATASET_ID, split, data_files)


def rows_to_inputs(rows, *, chat: bool = False) -> tuple[list, list[list[str]], list[BenchmarkRow]]:
    """Scoring inputs from RewardBench rows: one prompt per row, with its completions ``[chosen, rejected]``.

    Args:
        rows: RewardBench rows (`load_rows`), any iterable of dicts with the published fields.
        chat (`bool`): give prompts as one user message instead of the published string (see `as_prompt`).

    Returns:
        `(prompts, completion_lists, meta)`: for ``ImplicitRewardScorer.score(prompts, completion_lists)``, and the
        `BenchmarkRow` of each row for `aggregate`.

    Raises:
        `PreferenceDataError`: for a row that is not in the published schema or whose subset is not one of RewardBench's
            (`SECTIONS`), naming the row (its position in ``rows``) and the field.
    """
    prompts, completions, meta = [], [], []
    for index, row in enumerate(rows):
        check_fields(row, index, NAME, _FIELDS, _OPTIONAL_FIELDS)
        if row["subset"] not in SECTION_OF:
            raise PreferenceDataError(
                f"unknown subset {row['subset']!r} (id {row['id']}): RewardBench's sections are made of "
                f"{', '.join(SECTION_OF)}; use rows of {DATASET_ID} (split '{DEFAULT_SPLIT}')", index, "subset",
                dataset=NAME)
        prompts.append(as_prompt(row["prompt"], chat))
        completions.append([row["chosen"], row["rejected"]])
        meta.append(BenchmarkRow(index, row["id"], row["subset"], num_correct=1, num_completions=2))
    return prompts, completions, meta


def completion_field_names(row: dict) -> list[str]:
    """The published field of each completion `rows_to_inputs` makes of ``row``, in its order, for errors."""
    return ["chosen", "rejected"]


def _section_scores(accuracy: dict) -> tuple[dict, dict]:
    """Each section's `EXAMPLE_COUNTS`-weighted mean accuracy over its subsets present (`None` when none is), and the
    weights used."""
    scores, weights = {}, {}
    for section, subsets in SECTIONS.items():
        weights[section] = {s: EXAMPLE_COUNTS[s] for s in subsets if s in accuracy}
        total = sum(weights[section].values())
        scores[section] = (sum(accuracy[s] * w for s, w in weights[section].items()) / total) if total else None
    return scores, weights


def aggregate(rewards, meta: list[BenchmarkRow], *, prior_sets: float | None = None) -> dict:
    """RewardBench's scores from each row's rewards (the rules are in this module's docstring).

    Args:
        rewards: each row's ``[chosen, rejected]`` rewards (see `reward_rows` for the forms accepted).
        meta (`list[BenchmarkRow]`): from `rows_to_inputs`.
        prior_sets (`float`, *optional*): the Prior Sets score (mean accuracy on anthropic_helpful, anthropic_hhh, shp
            and summarize of ``allenai/pref-test-sets``), in [0, 1]; counted with half a section's weight.

    Returns:
        `dict`: ``subsets`` (accuracy of each subset present), ``sections`` (Chat, Chat Hard, Safety, Reasoning, and
        Prior Sets when given; `None` for a section with no subset present), ``weights`` (each section's subset
        weights used), ``overall`` (`None` unless all four sections are present), ``overall_weights``, ``counts``
        (per subset: ``correct``, ``total``, and ``ties``, rows whose two rewards are equal, counted wrong),
        ``num_rows``, ``num_nonfinite`` (rows with a NaN or infinite reward).
    """
    if prior_sets is not None and not 0 <= prior_sets <= 1:
        raise ValueError(f"prior_sets must be a score in [0, 1], got {prior_sets!r}")
    for row in meta:
        if row.subset not in SECTION_OF or row.num_completions != 2:
            raise ValueError(f"row {row.index} (id {row.id!r}) is not a RewardBench row (subset {row.subset!r}, "
                             f"{row.num_completions} completions): pass the meta that this module's rows_to_inputs "
                             "returned")
    values = reward_rows(rewards, meta)
    counts = {}
    for row, (chosen, rejected) in zip(meta, values):
        count = counts.setdefault(row.subset, {"correct": 0, "total": 0, "ties": 0})
        count["total"] += 1
        count["correct"] += int(chosen > rejected)  # strict: a tie or a NaN is wrong
        count["ties"] += int(chosen == rejected)
    counts = {s: counts[s] for s in SECTION_OF if s in counts}  # the reference's order, whatever the rows' order
    accuracy = {s: c["correct"] / c["total"] for s, c in counts.items()}
    sections, weights = _section_scores(accuracy)
    overall_weights = {section: SECTION_WEIGHT for section in SECTIONS}
    if prior_sets is not None:
        sections[PRIOR_SETS], overall_weights[PRIOR_SETS] = float(prior_sets), PRIOR_SETS_WEIGHT
    overall = None
    if all(sections[s] is not None for s in SECTIONS):
        overall = sum(sections[s] * w for s, w in overall_weights.items()) / sum(overall_weights.values())
    return {"subsets": accuracy, "sections": sections, "weights": weights, "overall": overall,
            "overall_weights": overall_weights, "counts": counts, "num_rows": len(values),
            "num_nonfinite": count_nonfinite(values, NAME)}
