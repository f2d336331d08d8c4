"""The row rules of `dpo_ext.data` (its docstring states them), applied to one row: `normalize_row`.

Everything that reads preference rows (the trainer's `prepare_ranked_dataset`, the scorer's evaluation, the CLI and
`dpo-ext validate`) goes through this module, so that a row means the same thing everywhere.
"""

import hashlib
import json
import math
from collections import Counter
from dataclasses import dataclass
from numbers import Integral, Real

PROMPT, COMPLETIONS, RANKS, SCORES, CHOSEN, REJECTED = "prompt", "completions", "ranks", "scores", "chosen", "rejected"
PROMPT_IDS, COMPLETION_IDS, REF_LOGPS, ROW_INDEX = "prompt_ids", "completion_ids", "ref_logps", "row_index"

# Why a valid row carries no preference (keys of the logged and reported counts)
IDENTICAL, ALL_TIED = "identical_completions", "all_tied"
NO_PREFERENCE_REASONS = {IDENTICAL: "whose completions are all identical", ALL_TIED: "whose completions are all tied"}

EMPTY_PROMPT = ("empty prompt: every completion is scored given at least one prompt token, so give a prompt (to "
                "score without one, use the tokenizer's BOS token text as the prompt)")


class PreferenceDataError(ValueError):
    """A preference row that cannot be used.

    Attributes:
        problem (`str`): what is wrong and what to do.
        dataset (`str` or `None`): the dataset's name (``"train"``, ``"eval"``...), when known.
        row (`int` or `None`): the row's position in its dataset (or, from the scorer, the prompt's position).
        field (`str` or `None`): ``"prompt"``, ``"completions[2]"``, ``"ref_logps[0]"``...

    The message starts with where: ``"eval dataset, row 2, field 'chosen': empty completion"``.
    """

    def __init__(self, problem: str, row: int | None = None, field: str | None = None, dataset: str | None = None,
                 where: str | None = None):
        self.problem, self.row, self.field, self.dataset, self._where = problem, row, field, dataset, where
        super().__init__(problem)

    @classmethod
    def at_prompt(cls, problem: str, prompt: int, completion: int | None = None) -> "PreferenceDataError":
        """An error about a scorer's input, named as the scorer counts: ``prompt i[, completion k]``."""
        field = PROMPT if completion is None else f"{COMPLETIONS}[{completion}]"
        where = f"prompt {prompt}" + ("" if completion is None else f", completion {completion}")
        return cls(problem, prompt, field, where=where)

    def located(self, row: int | None = None, dataset: str | None = None) -> "PreferenceDataError":
        """The same problem at ``row`` (when given) of ``dataset`` (when given)."""
        return PreferenceDataError(self.problem, self.row if row is None else row, self.field,
                                   dataset or self.dataset, self._where if row is None else None)

    def __str__(self) -> str:
        parts = [f"{self.dataset} dataset"] if self.dataset else []
        if self._where:
            parts.append(self._where)
        else:
            parts += [f"row {self.row}"] if self.row is not None else []
            parts += [f"field '{self.field}'"] if self.field else []
        return f"{', '.join(parts)}: {self.problem}" if parts else self.problem

    def __reduce__(self):  # datasets.map(num_proc=...) sends errors between processes by pickling them
        return type(self), (self.problem, self.row, self.field, self.dataset, self._where)


def _fail(index, field, problem):
    raise PreferenceDataError(problem, index, field)


def _message_problem(message) -> str | None:
    """What makes ``message`` not a chat message (a dict whose ``role`` and ``content`` are strings), or `None`.

    A `datasets.Dataset` fills a key that some message lacks with None, so a key's presence is not enough.
    """
    if not isinstance(message, dict):
        return f"expected a {{'role', 'content'}} message, got {type(message).__name__}"
    for key in ("role", "content"):
        if not isinstance(message.get(key), str):
            got = "missing" if message.get(key) is None else f"got {type(message[key]).__name__}"
            return f"a chat message needs a string '{key}' ({got})"
    return None


def is_messages(value) -> bool:
    return isinstance(value, list) and len(value) > 0 and all(_message_problem(m) is None for m in value)


def _check_messages(value, index, field) -> None:
    """Name the first bad message of a list of chat messages: the field (``prompt``, ``chosen``, ``completions[2]``)
    and, in the problem, the message's position in it."""
    if isinstance(value, list):
        for i, message in enumerate(value):
            problem = _message_problem(message)
            if problem is not None:
                _fail(index, field, f"message {i}: {problem}; every message must be {{'role', 'content'}} with "
                                    "string values")


def is_blank(value) -> bool:
    """A whitespace-only string, or chat messages whose contents are all whitespace."""
    if isinstance(value, str):
        return not value.strip()
    return is_messages(value) and all(not str(m["content"]).strip() for m in value)


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


def check_completion(value, index: int | None, field: str, conversational: bool) -> None:
    """Raise `PreferenceDataError` for a completion that is not text (or, for a chat prompt, messages) or is empty."""
    if conversational:
        _check_messages(value, index, field)
        if not is_messages(value):
            _fail(index, field, "expected a list of {'role', 'content'} messages like the prompt's")
        if is_blank(value):
            _fail(index, field, "the completion's messages are all empty")
    else:
        if not isinstance(value, str):
            _fail(index, field, f"expected a string, got {type(value).__name__}")
        if not value.strip():
            _fail(index, field, "empty completion")


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

    ``prompt`` and ``completions`` are text or messages, or token ids when ``tokenized``.
    """

    prompt: str | list
    completions: list
    ranks: list[int]
    ref_logps: list[float] | None = None
    num_collapsed: int = 0  # identical completions merged into an earlier copy
    tokenized: bool = False

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
    values = row[REF_LOGPS]
    if values is None:
        _fail(index, REF_LOGPS, "missing (with a ref_logps column, every row needs K reference log-probs)")
    if not isinstance(values, (list, tuple)):
        _fail(index, REF_LOGPS, f"expected a list of reference log-probs, got {type(values).__name__}")
    if len(values) != num_completions:
        _fail(index, REF_LOGPS, f"has {len(values)} entries for {num_completions} completions")
    for k, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
            _fail(index, f"{REF_LOGPS}[{k}]", f"reference log-probs must be finite numbers, got {value!r} (recompute "
                                                "them, or drop the column to let the trainer compute them)")
    return [float(v) for v in values]


def _collapse(prompt, completions, ranks, ref_logps, tokenized=False) -> NormalizedRow:
    """Merge identical completions into their first copy, which keeps the best rank among the copies."""
    slot_of, kept, kept_ranks, kept_ref = {}, [], [], []
    for k, (completion, rank) in enumerate(zip(completions, ranks)):
        key = json.dumps(completion, sort_keys=True, default=str)
        slot = slot_of.setdefault(key, len(kept))
        if slot == len(kept):
            kept.append(completion)
            kept_ranks.append(rank)
            kept_ref.append(None if ref_logps is None else ref_logps[k])
        else:
            kept_ranks[slot] = min(kept_ranks[slot], rank)
    return NormalizedRow(prompt, kept, dense_ranks(kept_ranks), None if ref_logps is None else kept_ref,
                         len(completions) - len(kept), tokenized)


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
            _fail(index, f"{COMPLETION_IDS}[{k}]", "expected a non-empty list of token ids (non-negative integers)")
    if row.get(RANKS) is None:
        _fail(index, RANKS, "missing (tokenized rows need 'ranks', 0 = best)")
    ranks = _ranking(row[RANKS], RANKS, len(completions), index)
    return _collapse(list(prompt), [list(c) for c in completions], ranks,
                     _ref_logps(row, index, len(completions)), tokenized=True)


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

    has_pair = row.get(CHOSEN) is not None or row.get(REJECTED) is not None
    has_list = row.get(COMPLETIONS) is not None
    if has_pair and has_list:
        _fail(index, COMPLETIONS, "row has both 'completions' and 'chosen'/'rejected'; keep one format")
    if has_pair:
        for field in (CHOSEN, REJECTED):
            if row.get(field) is None:
                _fail(index, field, "missing (pairwise rows need both 'chosen' and 'rejected')")
            check_completion(row[field], index, field, conversational)
        return _collapse(prompt, [row[CHOSEN], row[REJECTED]], [0, 1], _ref_logps(row, index, 2))
    if not has_list:
        _fail(index, COMPLETIONS, "missing (expected 'completions' with 'ranks' or 'scores', or 'chosen'/'rejected')")

    completions = row[COMPLETIONS]
    if not isinstance(completions, (list, tuple)):
        _fail(index, COMPLETIONS, f"expected a list, got {type(completions).__name__}")
    if len(completions) < 2:
        _fail(index, COMPLETIONS, f"needs at least 2 completions to rank, got {len(completions)}")
    for k, completion in enumerate(completions):
        check_completion(completion, index, f"{COMPLETIONS}[{k}]", conversational)

    ranks, scores = row.get(RANKS), row.get(SCORES)
    if ranks is not None and scores is not None:
        _fail(index, RANKS, "row has both 'ranks' and 'scores'; give one of them")
    if ranks is None and scores is None:
        _fail(index, RANKS, "missing (ranked rows need 'ranks' (0 = best) or 'scores' (higher = better))")
    field, values = (RANKS, ranks) if ranks is not None else (SCORES, scores)
    dense = _ranking(values, field, len(completions), index)
    return _collapse(prompt, list(completions), dense, _ref_logps(row, index, len(completions)))


def summarize_counts(num_rows: int, no_preference: Counter, collapsed: int, duplicates: int,
                     verb: str = "dropped") -> list[str]:
    """Sentences on what the row rules changed or left out (the trainer's log, evaluation's log, validate)."""
    lines = []
    if collapsed:
        lines.append(f"collapsed {collapsed} identical completion{'s' * (collapsed != 1)} within rows into one copy "
                     "each (keeping the best rank)")
    if sum(no_preference.values()):
        reasons = ", ".join(f"{no_preference[r]} {text}" for r, text in NO_PREFERENCE_REASONS.items()
                            if no_preference[r])
        lines.append(f"{verb} {sum(no_preference.values())} of {num_rows} rows with no preference ({reasons})")
    if duplicates:
        lines.append(f"{duplicates} row{' repeats' if duplicates == 1 else 's repeat'} an earlier row exactly (same "
                     "prompt, completions and ranks); kept, so they weigh more")
    return lines
