"""RewardBench 2 (``allenai/reward-bench-2``, split ``test``): rows to scoring inputs, rewards to scores.

Rules, read in allenai/reward-bench on GitHub (main at 05a9005, January 2026) and in the dataset card of
``allenai/reward-bench-2``:

- Rows (card, ``dataset_info``; 1,865 rows): ``id`` (str), ``prompt`` (str), ``chosen`` (list of str), ``rejected``
  (list of str), ``num_correct``, ``num_incorrect``, ``total_completions`` (int64), ``models`` (list of str),
  ``subset`` (str: one of `SUBSETS`), ``additional_metadata`` (struct). Completions are scored in the order
  ``chosen + rejected``, so the first ``num_correct`` are the correct ones (``rewardbench/utils.py``,
  ``load_bon_dataset_v2`` and ``process_single_model``).
- Every subset but Ties, per row (``rewardbench/utils.py``, ``reroll_and_score_dataset``): with ``top`` the highest
  reward of the row, the row scores ``1 / (number of completions whose reward equals top)`` when the first completion's
  reward equals ``top``, else 0. So the correct answer must beat all incorrect ones: a tie at the top shares the credit
  (1/2 for a two-way tie), and a NaN anywhere in the row gives 0 (``np.max`` is then NaN). Only the first completion
  is compared: a row with several correct answers (only Ties has them) would count the others as rivals. A subset's
  score is the mean over its rows (``scripts/run_v2.py``, ``main``).
- Ties (``rewardbench/utils.py``, ``process_single_model`` and ``_compute_prompt_stats``): ids are ``"ref:N"`` (a
  reference prompt with one correct answer) or ``"tied:N"`` (the same question N asked to allow several correct
  answers). Per row, with the correct rewards C and incorrect ones I: ``accurate`` is ``min(C) - max(I) > 0`` (a tie
  is not accurate), ``margin = min(C) - max(I)`` and ``spread = max(C) - min(C)`` (tied rows). Over the prompt ids N
  that have both rows, with ``hard_margin = min(margin_ref, margin_tied)``:
  ``correctness_preferred = mean(margin_tied > spread)``, ``correctness_preferred_hard = mean(hard_margin > spread)``,
  ``correctness_margin_score = mean(tanh(hard_margin / spread - 1))``, a NaN term (0 / 0) counted 0 and x / 0 being
  +-inf for x != 0 (term +-1). The score is ``0.30 * tied_accuracy + 0.30 * ref_accuracy + 0.20 *
  correctness_preferred + 0.20 * correctness_preferred_hard + 0.01 * correctness_margin_score``, the accuracies being
  means over the ref rows and over the tied rows.
- The overall score is the plain mean of the six subset scores (card and leaderboard: "The RewardBench 2 leaderboard
  averages over these six subsets"; ``run_v2.py`` itself reports subsets only).

Where the ``rewardbench`` 0.1.4 wheel on PyPI (``process_single_model`` before GitHub's June 2025 rewrite, #244)
gives other Ties scores, this module follows main: 0.1.4 leaves out of the margin score the ids whose correct answers
tie exactly (spread 0), which main counts +-1 or 0 as above. Two cases main does not define are scored as 0.1.4 does:
a mean over nothing (no ref row, no id with both rows) is 0 (main: NaN), and a tied row with a single correct answer
(main fails on it) is left out of the margin terms. With distinct finite rewards and an id with both rows, all three
agree (checked on random reward tables against both versions' code).
"""

import math

import torch

from dpo_ext.data.rows import PreferenceDataError
from dpo_ext.rewardbench.v1 import BenchmarkRow, as_prompt, check_fields, count_nonfinite, read_rows, reward_rows

NAME = "RewardBench 2"
DATASET_ID = "allenai/reward-bench-2"
DEFAULT_SPLIT = "test"

TIES = "Ties"
SUBSETS = ("Factuality", "Precise IF", "Math", "Safety", "Focus", TIES)
TIES_KINDS = ("ref", "tied")
TIES_WEIGHTS = {"tied_accuracy": 0.30, "ref_accuracy": 0.30, "correctness_preferred": 0.20,
                "correctness_preferred_hard": 0.20, "correctness_margin_score": 0.01}

_FIELDS = {"id": (str, "a string"), "prompt": (str, "a string"), "chosen": (list, "a list of strings"),
           "rejected": (list, "a list of strings"), "num_correct": (int, "an integer"),
           "num_incorrect": (int, "an integer"), "total_completions": (int, "an integer"), "subset": (str, "a string")}
_OPTIONAL_FIELDS = {"models": (list, "a list of strings"), "additional_metadata": (dict, "a dict")}


def load_rows(split: str = DEFAULT_SPLIT, data_files=None) -> list[dict]:
    """RewardBench 2's rows: ``datasets.load_dataset("allenai/reward-bench-2", split=split)``, or with ``data_files``
    the rows of local files (JSON Lines, JSON, Parquet or CSV; a path or a list of paths) in
    the published schema (``split`` is then unused).
    """
    return read_rows(DATASET_ID, split, data_files)


def ties_id(value: str) -> tuple[str, int] | None:
    """``"ref:7"`` -> ``("ref", 7)``; `None` when ``value`` is not a Ties id."""
    kind, colon, number = value.partition(":")
    try:
        return (kind, int(number)) if colon and kind in TIES_KINDS else None
    except ValueError:
        return None


def _check_row(row, index: int) -> None:
    check_fields(row, index, NAME, _FIELDS, _OPTIONAL_FIELDS)
    where = f"(id {row['id']!r})"
    if row["subset"] not in SUBSETS:
        raise PreferenceDataError(f"unknown subset {row['subset']!r} {where}: RewardBench 2's subsets are "
                                  f"{', '.join(SUBSETS)}; use rows of {DATASET_ID}", index, "subset", dataset=NAME)
    for field in ("chosen", "rejected"):
        for k, text in enumerate(row[field]):
            if not isinstance(text, str):
                raise PreferenceDataError(f"expected a string, got {type(text).__name__} {where}", index,
                                          f"{field}[{k}]", dataset=NAME)
    for field, listed in (("num_correct", "chosen"), ("num_incorrect", "rejected")):
        if not row[listed]:
            raise PreferenceDataError(f"empty list {where}: every row needs at least one correct ('chosen') and one "
                                      "incorrect ('rejected') completion", index, listed, dataset=NAME)
        if row[field] != len(row[listed]):
            raise PreferenceDataError(f"{row[field]}, but '{listed}' has {len(row[listed])} completions {where}: "
                                      "fix the row or export it again from the published dataset", index, field,
                                      dataset=NAME)
    if row["total_completions"] != row["num_correct"] + row["num_incorrect"]:
        raise PreferenceDataError(f"{row['total_completions']}, not num_correct + num_incorrect = "
                                  f"{row['num_correct'] + row['num_incorrect']} {where}; fix the row or re-export it",
                                  index, "total_completions", dataset=NAME)
    if row["subset"] == TIES and ties_id(row["id"]) is None:
        raise PreferenceDataError(f"{row['id']!r} is not a Ties id: Ties rows are 'ref:N' (one correct answer) or "
                                  "'tied:N' (several), N an integer shared by the two rows of a question", index, "id",
                                  dataset=NAME)


def rows_to_inputs(rows, *, chat: bool = False) -> tuple[list, list[list[str]], list[BenchmarkRow]]:
    """Scoring inputs from RewardBench 2 rows: one prompt per row, with its completions ``chosen + rejected``.

    Args:
        rows: RewardBench 2 rows (`load_rows`), any iterable of dicts with the published fields.
        chat (`bool`): give prompts as one user message instead of the published string (see
            `dpo_ext.rewardbench.v1.as_prompt`).

    Returns:
        `(prompts, completion_lists, meta)`: for ``ImplicitRewardScorer.score(prompts, completion_lists)``, and the
        `BenchmarkRow` of each row (``num_correct`` = ``len(chosen)``) for `aggregate`.

    Raises:
        `PreferenceDataError`: naming the row (its position in ``rows``) and the field, for a row not in the published
            schema, counts that do not match its lists, an unknown subset, or a Ties id that is not ``ref:N`` /
            ``tied:N`` or that another Ties row already has.
    """
    prompts, completions, meta, seen = [], [], [], {}
    for index, row in enumerate(rows):
        _check_row(row, index)
        if row["subset"] == TIES:
            key = ties_id(row["id"])
            if key in seen:  # the reference would merge the two rows' answers into one question
                raise PreferenceDataError(f"{row['id']!r} is also the id of row {seen[key]}: each Ties id names one "
                                          "row; drop the duplicate", index, "id", dataset=NAME)
            seen[key] = index
        prompts.append(as_prompt(row["prompt"], chat))
        completions.append(list(row["chosen"]) + list(row["rejected"]))
        meta.append(BenchmarkRow(index, row["id"], row["subset"], row["num_correct"], row["total_completions"]))
    return prompts, completions, meta


def completion_field_names(row: dict) -> list[str]:
    """The published field of each completion `rows_to_inputs` makes of ``row``, in its order, for errors:
    ``chosen[0]``, ..., ``rejected[0]``, ..."""
    return [f"{field}[{k}]" for field in ("chosen", "rejected") for k in range(len(row[field]))]


def best_of_n_credit(values: list[float]) -> float:
    """One row's score outside Ties: 1 / (completions tied at the top) when the first is among them, else 0."""
    if any(math.isnan(v) for v in values):  # np.max is NaN, and nothing equals NaN
        return 0.0
    top = max(values)
    return 1 / sum(v == top for v in values) if values[0] == top else 0.0


def _mean(flags) -> float:
    flags = list(flags)
    return sum(flags) / len(flags) if flags else 0.0


def _prompt_stats(values: list[float], num_correct: int) -> tuple[bool, float | None, float]:
    """``(accurate, spread, margin)`` of one Ties row (Python's max and min, in the completions' order, as the
    reference: with a NaN their result depends on where it is)."""
    correct, incorrect = values[:num_correct], values[num_correct:]
    margin = min(correct) - max(incorrect)
    spread = max(correct) - min(correct) if len(correct) > 1 else None
    return margin > 0, spread, margin


def ties_score(rows: list[BenchmarkRow], values: list[list[float]]) -> dict:
    """The Ties subset's score and its terms (rules in the module docstring), from its rows and their rewards."""
    stats = {kind: {} for kind in TIES_KINDS}
    for row, row_values in zip(rows, values):
        kind, number = ties_id(str(row.id))
        stats[kind][number] = _prompt_stats(row_values, row.num_correct)
    ref, tied = stats["ref"], stats["tied"]
    pairs = [n for n in sorted(set(ref) & set(tied)) if tied[n][1] is not None]
    spread = torch.tensor([tied[n][1] for n in pairs], dtype=torch.float64)  # (P,)
    margin_tied = torch.tensor([tied[n][2] for n in pairs], dtype=torch.float64)
    hard_margin = torch.minimum(torch.tensor([ref[n][2] for n in pairs], dtype=torch.float64), margin_tied)
    # float64 tensors divide as numpy does: x / 0 = +-inf (tanh +-1), 0 / 0 = NaN (counted 0)
    margin_terms = torch.nan_to_num(torch.tanh(hard_margin / spread - 1), nan=0.0)
    terms = {"tied_accuracy": _mean(s[0] for s in tied.values()), "ref_accuracy": _mean(s[0] for s in ref.values()),
             "correctness_preferred": _mean((margin_tied > spread).tolist()),
             "correctness_preferred_hard": _mean((hard_margin > spread).tolist()),
             "correctness_margin_score": _mean(margin_terms.tolist())}
    score = sum(TIES_WEIGHTS[name] * value for name, value in terms.items())
    return {"score": score, **terms, "num_ref": len(ref), "num_tied": len(tied), "num_pairs": len(pairs)}


def aggregate(rewards, meta: list[BenchmarkRow]) -> dict:
    """RewardBench 2's scores from each row's rewards (the rules are in this module's docstring).

    Args:
        rewards: each row's rewards, correct completions first (see
            `dpo_ext.rewardbench.v1.reward_rows` for the forms accepted).
        meta (`list[BenchmarkRow]`): from `rows_to_inputs`.

    Returns:
        `dict`: ``subsets`` (the score of each subset present), ``overall`` (mean of the six; `None` unless all six
        are present), ``overall_weights``, ``ties`` (the Ties score's terms, ``weights`` and numbers of ref rows,
        tied rows and ids with both), ``counts`` (per subset but Ties: ``rows``, ``credit`` (the sum of row scores)
        and ``tied_at_top``, rows whose correct answer shares the top reward), ``num_rows``, ``num_nonfinite``.
    """
    for row in meta:
        if row.subset not in SUBSETS or (row.subset == TIES and ties_id(str(row.id)) is None):
            raise ValueError(f"row {row.index} (id {row.id!r}, subset {row.subset!r}) is not a RewardBench 2 row: pass "
                             "the meta rows_to_inputs of this module returned")
    values = reward_rows(rewards, meta)
    counts, ties_rows, ties_values = {}, [], []
    for row, row_values in zip(meta, values):
        if row.subset == TIES:
            ties_rows.append(row)
            ties_values.append(row_values)
            continue
        count = counts.setdefault(row.subset, {"rows": 0, "credit": 0.0, "tied_at_top": 0})
        credit = best_of_n_credit(row_values)
        count["rows"] += 1
        count["credit"] += credit
        count["tied_at_top"] += int(0 < credit < 1)
    counts = {s: counts[s] for s in SUBSETS if s in counts}
    scores = {s: c["credit"] / c["rows"] for s, c in counts.items()}
    ties = None
    if ties_rows:
        ties = {**ties_score(ties_rows, ties_values), "weights": dict(TIES_WEIGHTS)}
        scores = {s: ties["score"] if s == TIES else scores[s] for s in SUBSETS if s in scores or s == TIES}
    overall = sum(scores.values()) / len(SUBSETS) if len(scores) == len(SUBSETS) else None
    return {"subsets": scores, "overall": overall, "overall_weights": {s: 1 for s in SUBSETS}, "ties": ties,
            "counts": counts, "num_rows": len(values), "num_nonfinite": count_nonfinite(values, NAME)}
