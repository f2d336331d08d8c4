"""Reading preference rows from files (JSON Lines, JSON, Parquet, CSV), a saved dataset folder or a Hub dataset, so
that an error about a row names where it is: ``file.jsonl, line 4`` for JSON Lines, ``file.parquet, row 3`` (1-based)
for the other formats and for datasets. The commands, the trainer's data loading and the benchmarks' local files all
read through `read_rows`.
"""

import json
from pathlib import Path

from dpo_ext.data.jsonl import iter_jsonl
from dpo_ext.data.rows import LIST_FIELDS, PreferenceDataError
from dpo_ext.locations import looks_like_hub_id

# A file holds one split: asking it for another one is a mistake (the rows read would not be that split).
FILE_SPLITS = (None, "", "train")
_TEXT_ENCODING = "utf-8-sig"  # UTF-8, with or without the byte-order mark some Windows editors write


class Rows:
    """Rows read from a file or dataset, and how to name one of them in an error message.

    Attributes:
        source (`str`): the file, folder or ``hub-id[split]`` the rows come from.
        rows (`list[dict]`): the rows, in file order.
        lines (`list[int]` or `None`): each row's 1-based line number, for JSON Lines files.
        text_cells (`bool`): whether every value was read as text or a number (CSV files), so that a list field
            holding text gets told why.
    """

    def __init__(self, source: str, rows: list, lines: list | None = None, text_cells: bool = False):
        self.source, self.rows, self.lines, self.text_cells = source, rows, lines, text_cells

    def where(self, index: int) -> str:
        """``"file.jsonl, line 4"`` or ``"file.parquet, row 3"`` for the row at position ``index`` (from 0)."""
        if self.lines is not None:
            return f"{self.source}, line {self.lines[index]}"
        return f"{self.source}, row {index + 1}"

    def describe(self, error: PreferenceDataError, fields: list[str] | None = None) -> str:
        """An error about row ``error.row`` of these rows, named by file line (or row) and field. ``fields`` names
        the row's completions by position (``["chosen", "rejected"]``...), for an error about one of them."""
        field = error.field
        if fields is not None and error.completion is not None:
            field = fields[error.completion]
        return f"{self.where(error.row)}{f', field {field!r}' if field else ''}: {error.problem}{self._hint(error)}"

    def _hint(self, error: PreferenceDataError) -> str:
        """Why a list field holds text, when it comes from a CSV file (the row rules cannot know the file type)."""
        if not self.text_cells or error.row not in range(len(self.rows)):
            return ""
        columns = list(self.rows[error.row])
        if len(columns) == 1 and any(mark in columns[0] for mark in ";\t|"):
            return (f" (the file has one column, {columns[0]!r}: CSV columns are separated by commas; save it "
                    "with ',' as the separator)")
        name = (error.field or "").split("[")[0]
        if not self.text_cells or name not in LIST_FIELDS or error.row not in range(len(self.rows)):
            return ""
        if not isinstance(self.rows[error.row].get(name), str):
            return ""
        return (f" (CSV cells are plain text, so {name!r} was read as the text of a list, not a list: give list "
                "columns in a JSONL or Parquet file)")

    def error(self, error: Exception, fields: list[str] | None = None) -> ValueError:
        """``error`` as a `ValueError` that names the input's line and field (or, for another error, the input)."""
        if isinstance(error, PreferenceDataError) and error.row is not None:
            return ValueError(self.describe(error, fields))
        return ValueError(f"{self.source}: {error}")


# A missing source with one of these endings is a file that is not there, not a Hub dataset id.
_ROW_FILE_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv", ".tsv", ".txt")


def read_rows(source, split: str | None = None, config: str | None = None) -> Rows:
    """Rows of a JSONL / JSON / Parquet / CSV file, a dataset folder (``save_to_disk``), or a Hub dataset split (of
    configuration ``config``).

    Args:
        source (`str` or `Path`): the file, folder or Hub dataset id.
        split (`str`, *optional*): the split of a folder or Hub dataset (default ``"train"``). A file holds one
            split: another split asked of a file is an error, not silently the file's rows.

    Raises:
        `KeyError`: a folder or Hub dataset without ``split`` (naming the splits it has).
        `FileNotFoundError`: no such file, and not a Hub dataset id.
        `ValueError`: a file that cannot be read, holds no rows, or a row that is not an object (naming the line).
    """
    path = Path(source)
    if path.is_file() and split not in FILE_SPLITS:
        raise ValueError(f"{source} is a file, which holds one split: split {split!r} cannot be read from it (leave "
                         "the split out, or give a dataset folder or Hub dataset that has it)")
    split = split or "train"
    if path.is_file() and path.suffix in (".jsonl", ".json", ""):
        return _read_json(path)
    if path.is_file():
        return _read_table(path)
    if path.is_dir():
        return _read_folder(path, split)
    if not looks_like_hub_id(str(source)) or path.suffix.lower() in _ROW_FILE_SUFFIXES:  # rows.jsonl: a file
        raise FileNotFoundError(f"{source}: no such file" + ("" if path.suffix else ", and not a Hub dataset id"))
    import datasets

    try:
        rows = Rows(f"{source}[{split}]", list(datasets.load_dataset(str(source), name=config, split=split)))
    except Exception as error:  # noqa: BLE001 - offline, missing repo or split: say which and why
        raise ValueError(f"could not load the Hub dataset {source!r} (split {split!r}): {error}") from error
    return _non_empty(rows)  # an empty split, like an empty file


def read_text(path: Path) -> str:
    """The text of a JSON or JSON Lines file, as every command reads it (`dpo-ext push-dataset` too): UTF-8, with
    or without a byte-order mark.

    Raises:
        `ValueError`: naming the file, for bytes that are not UTF-8 (a file saved as UTF-16, say).
    """
    try:
        return Path(path).read_text(encoding=_TEXT_ENCODING)
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start}); save it as UTF-8 (Windows "
                         "editors and PowerShell's `>` may write UTF-16, called 'Unicode')") from None


def _read_json(path: Path) -> Rows:
    text = read_text(path)
    if path.suffix == ".json" and text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON ({error}); give a JSON array of row objects, or JSON Lines "
                             "(one object per line)") from None
        for index, row in enumerate(rows):
            if not isinstance(row, dict):
                raise ValueError(f"{path}, row {index + 1}: expected a JSON object (one preference row), got "
                                 f"{type(row).__name__}")
        lines = None
    else:
        try:
            numbered = list(iter_jsonl(path, text.splitlines()))
        except ValueError:
            _refuse_one_object(path, text)
            raise
        rows, lines = [row for _, row in numbered], [number for number, _ in numbered]
    return _non_empty(Rows(str(path), rows, lines))


def _refuse_one_object(path: Path, text: str) -> None:
    """Name the mistake when a file that is not JSON Lines is one JSON object written over several lines (an
    indented dump, or rows nested under a key): iter_jsonl can only say that its first line is not JSON."""
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        return
    if not isinstance(whole, dict):
        return
    nested = next((key for key, value in whole.items()
                   if isinstance(value, list) and value and all(isinstance(v, dict) for v in value)), None)
    where = f" (its rows are under {nested!r})" if nested else ""
    raise ValueError(f"{path}: one JSON object over several lines{where}, not rows; give a JSON array of row objects "
                     "(a .json file) or JSON Lines (one row object per line)")


def _read_table(path: Path) -> Rows:
    import datasets

    kind = {".parquet": "parquet", ".csv": "csv"}.get(path.suffix)
    if kind is None:
        raise ValueError(f"{path}: unsupported file type '{path.suffix}' (use .jsonl, .json, .parquet or .csv)")
    try:
        dataset = datasets.load_dataset(kind, data_files=str(path), split="train")
    except (ValueError, datasets.exceptions.DatasetGenerationError) as error:  # Arrow's errors are ValueErrors
        raise ValueError(f"{path}: not a readable {kind.upper() if kind == 'csv' else 'Parquet'} file ({error}); "
                         "write it again (`Dataset.to_parquet`, `Dataset.to_csv`) or give JSON Lines") from None
    return _non_empty(Rows(str(path), list(dataset), text_cells=kind == "csv"))


def _read_folder(path: Path, split: str) -> Rows:
    import datasets

    try:
        dataset = datasets.load_from_disk(str(path))
    except FileNotFoundError:  # datasets' message says what the folder is not, never what to give instead
        raise ValueError(f"{path} is a folder but not a saved dataset (no dataset_info.json or dataset_dict.json "
                         "from `save_to_disk`): give a .jsonl, .json, .parquet or .csv file instead") from None
    if isinstance(dataset, datasets.DatasetDict):
        if split not in dataset:
            raise KeyError(f"{path} has no split {split!r} (its splits: {', '.join(dataset)})")
        dataset = dataset[split]
    return _non_empty(Rows(str(path), list(dataset)))


def _non_empty(rows: Rows) -> Rows:
    if not rows.rows:  # an empty input is a mistake, not a result of nothing
        raise ValueError(f"{rows.source}: no rows")
    return rows


def existing_file(path, what: str) -> Path:
    """``path`` as a `Path`, after checking that it is a file: `FileNotFoundError` when nothing is there, `ValueError`
    for a folder (``what`` names the input in the message: ``"plot"``, ``"eval results"``...)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{what} {path} is a folder, not a file: give the file's path")
    if not path.exists():
        raise FileNotFoundError(f"{what} {path} does not exist")
    return path
