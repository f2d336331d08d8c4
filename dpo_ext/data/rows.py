"""The row rules of `dpo_ext.data` (its docstring states them), applied to one row: `normalize_row`; and the same
rules for one prompt with completions to score: `check_scored`.

Everything that reads preference rows or prompts to score (the trainer's `prepare_ranked_dataset`, the scorer and its
evaluation, the CLI and `dpo-ext validate`) goes through this module, so that a row means the same thing everywhere.
Errors are `PreferenceDataError`s that carry where (row, field, completion) as attributes: callers that name rows
their own way (file lines, the row's own field names) read those, never the message.
"""

import hashlib
import json
import math
from dataclasses import dataclass
from numbers import Integral, Real

from dpo_ext.data.messages import assistant_message, is_blank, is_messages, messages_problem

PROMPT, COMPLETIONS, RANKS, SCORES, CHOSEN, REJECTED = "prompt", "completions", "ranks", "scores", "chosen", "rejected"
COMPLETION = "completion"  # a row to score (`dpo-ext score`) may give a single completion
PROMPT_IDS, COMPLETION_IDS, REF_LOGPS, ROW_INDEX = "prompt_ids", "completion_ids", "ref_logps", "row_index"
# The fields that hold a list in every row format (a prompt or a completion may be text): a CSV cell cannot
LIST_FIELDS = (COMPLETIONS, RANKS, SCORES, PROMPT_IDS, COMPLETION_IDS, REF_LOGPS)

# Why a valid row carries no preference (keys of the logged and reported counts)
IDENTICAL, ALL_TIED = "identical_completions", "all_tied"

EMPTY_PROMPT = ("empty prompt: every completion is scored given at least one prompt token, so give a prompt (to "
                "score without one, use the tokenizer's BOS token text as the prompt)")


class PreferenceDataError(ValueError):
    """A preference row that cannot be used.

    Attributes:
        problem (`str`): what is wrong and what to do.
        dataset (`str` or `None`): the dataset's name (``"train"``, ``"eval"``...), when known.
        row (`int` or `None`): the row's position in its dataset (or, from the scorer, the prompt's position).
        field (`str` or `None`): ``"prompt"``, ``"completions[2]"``, ``"ref_logps[0]"``...
        completion (`int` or `None`): the completion's position in its row, when the problem is one completion's,
            so that a caller can name it by its own field (``chosen``, ``candidates[1]``...).
        unit (`str`): what ``row`` counts: ``"row"`` (rows of a dataset) or ``"prompt"`` (the prompts given to the
            scorer, whose errors read ``"prompt 1, completion 0: ..."``).

    The message starts with where: ``"eval dataset, row 2, field 'chosen': empty completion"``.
    """

    def __init__(self, problem: str, row: int | None = None, field: str | None = None, dataset: str | None = None,
                 completion: int | None = None, unit: str = "row"):
        self.problem, self.row, self.field, self.dataset = problem, row, field, dataset
        self.completion, self.unit = completion, unit
        super().__init__(problem)

    def located(self, row: int | None = None, dataset: str | None = None,
                unit: str | None = None) -> "PreferenceDataError":
        """The same problem at ``row`` of ``dataset``, counted in ``unit`` (each left as it is when not given)."""
        return PreferenceDataError(self.problem, self.row if row is None else row, self.field,
                                   dataset or self.dataset, self.completion, unit or self.unit)

    def __str__(self) -> str:
        parts = [f"{self.dataset} dataset"] if self.dataset else []
        if self.unit == "prompt":  # the scorer's arguments have no field names: say which prompt and completion
            parts += [f"prompt {self.row}"] if self.row is not None else []
            parts += [f"completion {self.completion}"] if self.completion is not None else []
        else:
            parts += [f"row {self.row}"] if self.row is not None else []
            parts += [f"field '{self.field}'"] if self.field else []
        return f"{', '.join(parts)}: {self.problem}" if parts else self.problem

    def __reduce__(self):  # datasets.map(num_proc=...) sends errors between processes by pickling them
        return type(self), (self.problem, self.row, self.field, self.dataset, self.completion, self.unit)


def _fail(index, field, problem, completion=None):
    raise PreferenceDataError(problem, index, field, completion=completion)


def _check_messages(value, index, field, completion=None) -> None:
    """Name the first bad message of a list of chat messages: the field (``prompt``, ``chosen``, ``completions[2]``)
    and, in the problem, the message's position in it."""
    problem = messages_problem(value) if isinstance(value, list) else None
    if problem is not None:
        _fail(index, field, problem, completion)


def check_prompt(prompt, index: int | None = None) -> bool:
    """Raise `PreferenceDataError` for a missing, mistyped or empty prompt; return whether it is conversational."""
    if prompt is None:
        _fail(index, PROMPT, "missing (every row needs a prompt)")
    if isinstance(prompt, list):
        _check_messages(prompt, index, PROMPT)
        if not prompt:
            _fail(index, PROMPT, "a list prompt must be {'role', 'content'} messages, got an empty list")
    if not isinstance(prompt, (list, str)):
        _fail(index, PROMPT, f"expected a string or a list of messages, got {type(prompt).__name__}")
    if is_blank(prompt):
        _fail(index, PROMPT, EMPTY_PROMPT)
    return isinstance(prompt, list)


def check_completion(value, index: int | None, field: str, conversational: bool, completion: int | None = None,
                     allow_empty: bool = False) -> None:
    """Raise `PreferenceDataError` for a completion that is not text (or, for a chat prompt, messages) or, unless
    ``allow_empty``, is empty. ``completion`` is its position in the row."""
    if value is None:
        _fail(index, field, "missing (a row with one of 'chosen'/'rejected' needs both)" if field in (CHOSEN, REJECTED)
              else "missing", completion)
    if conversational:
        _check_messages(value, index, field, completion)
        if not is_messages(value):
            _fail(index, field, "expected a list of {'role', 'content'} messages like the prompt's", completion)
        if is_blank(value) and not allow_empty:
            _fail(index, field, "the completion's messages are all empty", completion)
    else:
        if not isinstance(value, str):
            _fail(index, field, f"expected a string, got {type(value).__name__}", completion)
        if not value.strip() and not allow_empty:
            _fail(index, field, "empty completion", completion)


def check_scored(prompt, completions, index: int | None = None, field: str = COMPLETIONS,
                 allow_empty: bool = False) -> list:
    """The row rules for one prompt and the completions to score with it, as `ImplicitRewardScorer` takes them (and
    `dpo-ext score` and `dpo-ext rerank` rows): the prompt as in `normalize_row`, and a non-empty list of completions
    (one is enough: nothing is ranked), each as in `normalize_row`, except that a chat prompt's completion may be plain
    text, taken as the assistant's message.

    Args:
        field (`str`): the name of the list, for errors (``completions[k]``, or ``candidates[k]``...).
        allow_empty (`bool`): accept empty completions (a sampled completion may end at once).

    Returns:
        `list`: the completions, a chat prompt's text completions made into assistant messages.

    Raises:
        `PreferenceDataError`: naming the field (``prompt``, the list, or one completion with its position).
    """
    conversational = check_prompt(prompt, index)
    if not isinstance(completions, (list, tuple)):
        _fail(index, field, f"'{field}' must be a non-empty list of completions, got {type(completions).__name__}")
    if not completions:
        _fail(index, field, f"empty list of completions ('{field}' must be a non-empty list)")
    if conversational:
        completions = [assistant_message(c) if isinstance(c, str) else c for c in completions]
    for k, completion in enumerate(completions):
        check_completion(completion, index, f"{field}[{k}]", conversational, k, allow_empty)
    return list(completions)


def _is_token_ids(value) -> bool:
    return isinstance(value, (list, tuple)) and all(
        isinstance(t, Integral) and not isinstance(t, bool) and t >= 0 for t in value)


def dense_ranks(values, descending=False) -> list[int]:
    """Map values to dense ranks 0..G-1 (0 = smallest, or largest with ``descending``); equal values share a rank."""
    distinct = sorted(set(values), reverse=descending)
    position = {v: i for i, v in enumerate(distinct)}
    return [position[v] for v in values]


@dataclass
class NormalizedRow:
    """One row after the row rules: dense ``ranks`` (0 = best), identical completions collapsed into one copy.

    ``prompt`` and ``completions`` are text or messages, or token ids when ``tokenized``. ``scores``: a scored row's
    label values, as given (they travel to label-aware losses such as LiPO-lambda); `None` for rows given by rank.
    """

    prompt: str | list
    completions: list
    ranks: list[int]
    ref_logps: list[float] | None = None
    num_collapsed: int = 0  # identical completions merged into an earlier copy
    tokenized: bool = False
    positions: list[int] | None = None  # each kept completion's position in the input row
    scores: list[float] | None = None

    @property
    def no_preference(self) -> str | None:
        """Why the row has nothing to learn or evaluate (`IDENTICAL`, `ALL_TIED`), or `None`."""
        if len(self.completions) < 2:
            return IDENTICAL
        return ALL_TIED if max(self.ranks) == 0 else None

    def as_row(self) -> dict:
        """The row in the ranked format (or the tokenized one)."""
        keys = (PROMPT_IDS, COMPLETION_IDS) if self.tokenized else (PROMPT, COMPLETIONS)
        row = {keys[0]: self.prompt, keys[1]: self.completions, RANKS: self.ranks}
        if self.scores is not None:
            row[SCORES] = self.scores
        return row if self.ref_logps is None else {**row, REF_LOGPS: self.ref_logps}

    def key(self) -> str:
        """Equal for rows with the same prompt, completions and ranks (to count exact duplicates)."""
        text = json.dumps([self.prompt, self.completions, self.ranks], sort_keys=True, default=str)
        return hashlib.sha1(text.encode()).hexdigest()


def _ranking(values, field, num_completions, index) -> list[int]:
    """Dense ranks from ``ranks`` (non-negative ints, 0 = best) or ``scores`` (finite numbers, higher = better)."""
    if not isinstance(values, (list, tuple)):
        _fail(index, field, f"expected a list, got {type(values).__name__}")
    if len(values) != num_completions:
        _fail(index, field, f"has {len(values)} entries for {num_completions} completions")
    if field == RANKS:
        for k, rank in enumerate(values):
            # Arrow stores a column as floats once any row has a float, so 0.0 must mean rank 0 (not blame row 0)
            integral = isinstance(rank, Integral) or (isinstance(rank, Real) and math.isfinite(rank)
                                                      and float(rank).is_integer())
            if isinstance(rank, bool) or not integral or rank < 0:
                _fail(index, f"{RANKS}[{k}]", f"ranks must be non-negative integers (0 = best), got {rank!r}")
        return dense_ranks([int(r) for r in values])
    for k, score in enumerate(values):
        if isinstance(score, bool) or not isinstance(score, Real) or not math.isfinite(score):
            _fail(index, f"{SCORES}[{k}]", f"scores must be finite numbers, got {score!r}")
    return dense_ranks([float(s) for s in values], descending=True)


def _ref_logps(row, index, num_completions) -> list[float] | None:
    if REF_LOGPS not in row:
        return None
    return check_ref_logps(row[REF_LOGPS], index, num_completions)


def check_ref_logps(values, index, num_completions,
                    remedy="recompute them, or drop the column to let the trainer compute them") -> list[float]:
    """One row's reference log-probs as K floats: a list of ``num_completions`` finite numbers, else a
    `PreferenceDataError` at row ``index``, field ``ref_logps`` (or ``ref_logps[k]``), whose problem ends with
    ``remedy``. The rule of a ``ref_logps`` column, and of a reference cache file (`dpo_ext.reference.cache`)."""
    if values is None:
        _fail(index, REF_LOGPS, f"missing (every row needs K reference log-probs; {remedy})")
    if not isinstance(values, (list, tuple)):
        _fail(index, REF_LOGPS, f"expected a list of reference log-probs, got {type(values).__name__} ({remedy})")
    if len(values) != num_completions:
        _fail(index, REF_LOGPS, f"has {len(values)} entries for {num_completions} completions ({remedy})")
    for k, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
            _fail(index, f"{REF_LOGPS}[{k}]", f"reference log-probs must be finite numbers, got {value!r} ({remedy})")
    return [float(v) for v in values]


def _collapse(prompt, completions, ranks, ref_logps, tokenized=False, scores=None) -> NormalizedRow:
    """Merge identical completions into their first copy, which keeps the best rank (and the highest score) among
    the copies."""
    slot_of, kept, kept_ranks, kept_ref, kept_scores, positions = {}, [], [], [], [], []
    for k, (completion, rank) in enumerate(zip(completions, ranks)):
        key = json.dumps(completion, sort_keys=True, default=str)
        slot = slot_of.setdefault(key, len(kept))
        if slot == len(kept):
            kept.append(completion)
            kept_ranks.append(rank)
            kept_ref.append(None if ref_logps is None else ref_logps[k])
            kept_scores.append(None if scores is None else scores[k])
            positions.append(k)
        else:
            kept_ranks[slot] = min(kept_ranks[slot], rank)
            if scores is not None:
                kept_scores[slot] = max(kept_scores[slot], scores[k])
    return NormalizedRow(prompt, kept, dense_ranks(kept_ranks), None if ref_logps is None else kept_ref,
                         len(completions) - len(kept), tokenized, positions, None if scores is None else kept_scores)


def _normalize_tokenized(row: dict, index) -> NormalizedRow:
    prompt = row[PROMPT_IDS]
    if not _is_token_ids(prompt):
        _fail(index, PROMPT_IDS, "expected a list of token ids (non-negative integers)")
    if not prompt:
        _fail(index, PROMPT_IDS, EMPTY_PROMPT)
    completions = row.get(COMPLETION_IDS)
    if not isinstance(completions, (list, tuple)) or len(completions) < 2:
        _fail(index, COMPLETION_IDS, "needs a list of at least 2 completions (lists of token ids) to rank")
    for k, completion in enumerate(completions):
        if not _is_token_ids(completion) or not completion:
            _fail(index, f"{COMPLETION_IDS}[{k}]", "expected a non-empty list of token ids (non-negative integers)", k)
    if row.get(RANKS) is None:
        _fail(index, RANKS, "missing (tokenized rows need 'ranks', 0 = best)")
    ranks = _ranking(row[RANKS], RANKS, len(completions), index)
    scores = None
    if row.get(SCORES) is not None:  # a prepared row keeps the label values its ranks came from
        _ranking(row[SCORES], SCORES, len(completions), index)
        scores = [float(s) for s in row[SCORES]]
    return _collapse(list(prompt), [list(c) for c in completions], ranks,
                     _ref_logps(row, index, len(completions)), tokenized=True, scores=scores)


_FORMATS = {COMPLETIONS: (COMPLETIONS,), CHOSEN: (CHOSEN, REJECTED), COMPLETION: (COMPLETION,)}
_FORMAT_NAMES = {COMPLETIONS: "'completions'", CHOSEN: "'chosen'/'rejected'", COMPLETION: "'completion'"}


def completion_fields(row: dict, index: int | None = None, single: bool = False) -> tuple[str, ...]:
    """The fields of ``row`` that hold its completions: ``("completions",)`` (a list), ``("chosen", "rejected")`` or,
    for a row to score (``single``), ``("completion",)``. A field holding `None` counts as absent (a
    `datasets.Dataset` gives every row every column).

    Raises:
        `PreferenceDataError`: for a row with none of them, or with more than one.
    """
    formats = (COMPLETIONS, CHOSEN, COMPLETION) if single else (COMPLETIONS, CHOSEN)
    present = [name for name in formats if any(row.get(field) is not None for field in _FORMATS[name])]
    if len(present) > 1:
        _fail(index, COMPLETIONS, f"row has both {' and '.join(_FORMAT_NAMES[name] for name in present)}; keep one "
                                  "format")
    if not present and single:
        raise PreferenceDataError("no 'completion', 'completions' or 'chosen'/'rejected' field (fields present: "
                                  f"{', '.join(sorted(row)) or 'none'})", index)
    if not present:
        _fail(index, COMPLETIONS, "missing (expected 'completions' with 'ranks' or 'scores', or 'chosen'/'rejected')")
    return _FORMATS[present[0]]


def normalize_row(row: dict, index: int | None = None) -> NormalizedRow:
    """Apply the row rules (see the module docstring) to one row of any accepted format.

    Returns:
        [`NormalizedRow`]: dense ranks, identical completions collapsed; its ``no_preference`` says whether the row
        is left with anything to learn.

    Raises:
        `PreferenceDataError`: naming the row index and the field, for a missing field, an empty prompt, K < 2, a
            length mismatch, a NaN or non-numeric score or reference log-prob, a non-string (or non-message)
            completion, or ranks that are not a ranking.
    """
    if row.get(PROMPT_IDS) is not None:
        return _normalize_tokenized(row, index)
    prompt = row.get(PROMPT)
    conversational = check_prompt(prompt, index)
    fields = completion_fields(row, index)
    if fields == (CHOSEN, REJECTED):
        for k, field in enumerate(fields):
            check_completion(row.get(field), index, field, conversational, k)
        return _collapse(prompt, [row[CHOSEN], row[REJECTED]], [0, 1], _ref_logps(row, index, 2))

    completions = row[COMPLETIONS]
    if not isinstance(completions, (list, tuple)):
        _fail(index, COMPLETIONS, f"expected a list, got {type(completions).__name__}")
    if len(completions) < 2:
        _fail(index, COMPLETIONS, f"needs at least 2 completions to rank, got {len(completions)}")
    for k, completion in enumerate(completions):
        check_completion(completion, index, f"{COMPLETIONS}[{k}]", conversational, k)

    ranks, scores = row.get(RANKS), row.get(SCORES)
    if ranks is not None and scores is not None:
        _fail(index, RANKS, "row has both 'ranks' and 'scores'; give one of them")
    if ranks is None and scores is None:
        _fail(index, RANKS, "missing (ranked rows need 'ranks' (0 = best) or 'scores' (higher = better))")
    field, values = (RANKS, ranks) if ranks is not None else (SCORES, scores)
    dense = _ranking(values, field, len(completions), index)
    return _collapse(prompt, list(completions), dense, _ref_logps(row, index, len(completions)),
                     scores=None if scores is None else [float(s) for s in scores])
