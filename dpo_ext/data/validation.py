"""What training would make of a preference dataset, found without training: the report of `dpo-ext validate`.

It applies the trainer's rules with the trainer's code (`dpo_ext.data.tokenize.prepare_row` on every row: the row rules,
then token ids when a tokenizer is given; `dpo_ext.data.lengths` for what ``max_length`` keeps; `rows_as_dataset` on
the whole list, as the trainer stores a list of rows)
and, unlike `prepare_ranked_dataset`, which stops at the first invalid row, it goes on to the end so that every
invalid row is reported at once (the first problem of each).
"""

from collections import Counter
from dataclasses import dataclass, field

from dpo_ext.data.lengths import fit_max_length, keep_prompt_end
from dpo_ext.data.rows import PreferenceDataError
from dpo_ext.data.summary import NO_PREFERENCE_REASONS, summarize_counts
from dpo_ext.data.tokenize import prepare_row


def rows_as_dataset(rows: list[dict], name: str | None = None):
    """``rows`` as a `datasets.Dataset` with every column that any row has (`None` where a row has none), as the
    trainer stores a list of rows. (`datasets.Dataset.from_list` keeps only the first row's columns: a pairwise row
    after ranked ones would lose its ``chosen`` and ``rejected``.)

    Raises:
        `PreferenceDataError`: naming the first row and field whose value is of another type than the rows before
            it hold there (Arrow stores a field as one type: text prompts and chat prompts cannot be mixed).
    """
    import datasets
    import pyarrow

    columns = list(dict.fromkeys(column for row in rows for column in row))
    table = {column: [row.get(column) for row in rows] for column in columns}
    try:
        return datasets.Dataset.from_dict(table)
    except (pyarrow.ArrowInvalid, pyarrow.ArrowTypeError) as error:
        row, column = _first_mixed_value(table)
        if row is None:
            raise PreferenceDataError(f"the rows mix value types within one field ({error}); give every row the "
                                      "same format", dataset=name) from None
        before = next(v for v in table[column][:row] if v is not None)
        raise PreferenceDataError(f"a {_kind(table[column][row])} where the rows before hold a {_kind(before)}: a "
                                  "field holds one type of value in every row of a dataset (text prompts and chat "
                                  "prompts cannot be mixed, say)", row, column, name) from None


def _kind(value) -> str:
    if isinstance(value, (list, tuple)) and value:
        return f"list of {type(value[0]).__name__}"
    return type(value).__name__


def _first_mixed_value(table: dict) -> tuple:
    """``(row, column)`` of the first value Arrow cannot store with the values above it, or ``(None, None)``."""
    import pyarrow

    def fits(values) -> bool:
        try:
            pyarrow.array(values)
        except (pyarrow.ArrowInvalid, pyarrow.ArrowTypeError):
            return False
        return True

    found = []
    for column, values in table.items():
        if fits(values):
            continue
        low, high = 1, len(values)  # bisect for the shortest prefix that does not fit (a prefix of one fits)
        while low < high:
            middle = (low + high) // 2
            low, high = (middle + 1, high) if fits(values[:middle]) else (low, middle)
        found.append((high - 1, column))
    return min(found, key=lambda rc: rc[0], default=(None, None))  # a tie: the row's first such column


@dataclass
class ValidationReport:
    """Counts of what training would reject, drop or normalise.

    ``long_prompts`` and ``truncated_completions`` are `None` when lengths were not checked (text rows and no
    tokenizer, or no ``max_length``).
    """

    num_rows: int = 0
    problems: list[PreferenceDataError] = field(default_factory=list)  # the first problem of each invalid row
    no_preference: Counter = field(default_factory=Counter)  # reason -> rows dropped for it
    collapsed_completions: int = 0
    duplicate_rows: int = 0
    max_length: int | None = None
    max_prompt_length: int | None = None
    long_prompts: int | None = None  # rows whose prompt alone reaches max_length: dropped
    cut_prompts: int | None = None  # prompts that keep their last max_prompt_length tokens
    truncated_completions: int | None = None  # completions cut so that prompt + completion fits max_length
    tokenization_checked: bool = False

    @property
    def usable_rows(self) -> int:
        dropped = sum(self.no_preference.values()) + (self.long_prompts or 0)
        return self.num_rows - len(self.problems) - dropped

    @property
    def trainable(self) -> bool:
        """Whether `prepare_ranked_dataset` would succeed: no invalid row, and at least one usable row."""
        return not self.problems and self.usable_rows > 0

    def summary(self) -> list[str]:
        """One sentence per thing training would drop or normalise (the trainer logs the same sentences)."""
        valid = self.num_rows - len(self.problems)
        lines = summarize_counts(valid, self.no_preference, self.collapsed_completions, self.duplicate_rows)
        if self.long_prompts:
            lines.append(f"dropped {self.long_prompts} rows whose prompt alone has max_length={self.max_length} "
                         "tokens or more")
        if self.cut_prompts:
            lines.append(f"cut {self.cut_prompts} prompts to their last max_prompt_length={self.max_prompt_length} "
                         f"tokens, to fit max_length={self.max_length} with their longest completion")
        if self.truncated_completions:
            lines.append(f"{self.truncated_completions} completions would be cut so that prompt + completion fits "
                         f"max_length={self.max_length} tokens")
        return lines

    def to_dict(self) -> dict:
        return {
            "rows": self.num_rows,
            "usable_rows": self.usable_rows,
            "trainable": self.trainable,
            "invalid_rows": len(self.problems),
            "collapsed_completions": self.collapsed_completions,
            "no_preference": {reason: self.no_preference[reason] for reason in NO_PREFERENCE_REASONS},
            "duplicate_rows": self.duplicate_rows,
            "tokenization_checked": self.tokenization_checked,
            "max_length": self.max_length,
            "long_prompts": self.long_prompts,
            **({} if self.max_prompt_length is None else
               {"max_prompt_length": self.max_prompt_length, "cut_prompts": self.cut_prompts}),
            "truncated_completions": self.truncated_completions,
        }


def validate_rows(rows: list[dict], tokenizer=None, max_length: int | None = None,
                  max_prompt_length: int | None = None) -> ValidationReport:
    """Check every row as `prepare_ranked_dataset` would, and count what it would drop or normalise.

    Args:
        rows (`list[dict]`): preference rows in any format of `dpo_ext.data`.
        tokenizer (*optional*): also tokenize text rows (finds prompts that merge into a completion) and, with
            ``max_length``, count long prompts and truncated completions. Tokenized rows need none.
        max_length (`int`, *optional*): the training ``max_length``.
        max_prompt_length (`int`, *optional*): the training ``max_prompt_length``: prompts are counted as cut
            (`dpo_ext.data.tokenize.keep_prompt_end`), not as dropped.
    """
    # A datasets.Dataset gives every row every column (None where a row has none); do the same, so that a row
    # lacking a field another row has is judged as training would judge it.
    columns = set().union(*rows) if rows else set()
    report = ValidationReport(num_rows=len(rows), max_length=max_length, max_prompt_length=max_prompt_length,
                              tokenization_checked=tokenizer is not None)
    lengths = []  # (dropped, completions cut) of rows with a preference, when token ids are known
    keys = []
    for index, row in enumerate(rows):
        row = {column: row.get(column) for column in columns}
        try:
            normalized, ids = prepare_row(row, index, tokenizer)
        except PreferenceDataError as error:
            report.problems.append(error)
            continue
        report.collapsed_completions += normalized.num_collapsed
        if normalized.no_preference:
            report.no_preference[normalized.no_preference] += 1
            continue
        keys.append(normalized.key())
        if ids is not None and max_prompt_length is not None:
            cut = keep_prompt_end(ids[0], ids[1], max_length, max_prompt_length)
            report.cut_prompts = (report.cut_prompts or 0) + (len(cut) < len(ids[0]))
            ids = (cut, ids[1])
        lengths.append(None if ids is None else _fit_counts(*ids, max_length))
    if rows and not report.problems:
        try:
            rows_as_dataset(rows)
        except PreferenceDataError as error:
            report.problems.append(error)
    report.duplicate_rows = len(keys) - len(set(keys))
    if max_length is not None and all(n is not None for n in lengths):
        report.long_prompts = sum(dropped for dropped, _ in lengths)
        report.truncated_completions = sum(cut for dropped, cut in lengths if not dropped)
    return report


def _fit_counts(prompt_ids, completion_ids, max_length) -> tuple[bool, int]:
    """Whether training drops the row under ``max_length``, and how many of its completions it cuts."""
    _, kept, dropped = fit_max_length(prompt_ids, completion_ids, max_length)
    return dropped, sum(len(k) < len(c) for k, c in zip(kept, completion_ids))
