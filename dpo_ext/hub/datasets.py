"""Publish generated preference data (ranked lists and pairs) as a Hub dataset with a card.

A data folder holds JSONL or Parquet files, all of one format (`datasets` reads one format per repository). Each
file is either *ranked* (`prompt`, `completions` and `ranks` or `scores`) or *pairwise* (`prompt`, `chosen`,
`rejected`); the kind is read from the columns. A row is valid exactly when the trainer accepts it
(`dpo_ext.data.rows.normalize_row`). Files are published as `ranked/<file>` and `pairwise/<file>`, one dataset
config per kind, and the split is taken from the file name (`train.jsonl` -> train, `test.parquet` -> test; anything
else -> train).
"""

from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from dpo_ext.data.files import read_text
from dpo_ext.data.jsonl import iter_jsonl
from dpo_ext.data.rows import CHOSEN, COMPLETIONS, PROMPT, REJECTED, PreferenceDataError, normalize_row
from dpo_ext.hub.cards import render_dataset_card
from dpo_ext.hub.publish import PushResult, publish_folder
from dpo_ext.hub.staged_folder import StagedFile, copy_file, files_under, list_folder, resolve_staging, write_card

_PAIRWISE = (PROMPT, CHOSEN, REJECTED)
_RANKED = (PROMPT, COMPLETIONS)
_SPLITS = {"train", "test", "validation", "valid", "eval", "dev"}
_FORMATS = {".jsonl": "JSONL", ".parquet": "Parquet"}


@dataclass
class DataFile:
    source: Path
    kind: str  # "ranked" or "pairwise"
    columns: list[str]
    rows: int = 0
    list_sizes: set[int] = field(default_factory=set)  # K, before identical completions are collapsed

    @property
    def split(self) -> str:
        return self.source.stem if self.source.stem in _SPLITS else "train"

    @property
    def path_in_repo(self) -> str:
        return f"{self.kind}/{self.source.name}"

    def card_entry(self) -> dict:
        """This file as `dpo_ext.hub.cards.render_dataset_card` describes it."""
        return {"config": self.kind, "split": self.split, "path": self.path_in_repo,
                "format": _FORMATS[self.source.suffix], "rows": self.rows, "columns": self.columns,
                "list_sizes": sorted(self.list_sizes)}


def inspect_data_file(path: str | Path) -> DataFile:
    """Read a JSONL or Parquet file of preference rows: its kind, row count, columns and ranked list sizes.

    Every row must pass the trainer's row rules (`dpo_ext.data.rows.normalize_row`), so that nothing is published
    that training would refuse, and be of the file's kind (that of its first row).

    Raises:
        `ValueError`: naming the file (and line, or Parquet row, and field) when rows are neither ranked nor
            pairwise, or are malformed.
    """
    path = Path(path)
    data = None
    for where, row in _located_rows(path):
        data = data or _kind(path, list(row))
        _check_row(data, row, f"{path}, {where}")
        data.rows += 1
    if data is None:
        raise ValueError(f"{path} has no rows")
    return data


def _located_rows(path: Path) -> Iterator[tuple[str, dict]]:
    """(where, row) for each row of a JSONL (``line N``) or Parquet (``row N``, from 1) file."""
    if path.suffix == ".parquet":
        import pyarrow
        import pyarrow.parquet

        try:
            table = pyarrow.parquet.read_table(path)
        except pyarrow.ArrowException as error:
            raise ValueError(f"{path}: not a readable Parquet file ({error}); write it again, e.g. with "
                             "`Dataset.to_parquet`") from None
        yield from ((f"row {index}", row) for index, row in enumerate(table.to_pylist(), start=1))
        return
    # Read as every command reads it (a leading byte-order mark too), and published as it is: `datasets`' JSON loader
    # skips a leading BOM (datasets 5.2, packaged_modules/json/json.py, `_generate_tables`): it loads the same rows.
    yield from ((f"line {number}", row) for number, row in iter_jsonl(path, read_text(path).splitlines()))


def _kind(path: Path, columns: list[str]) -> DataFile:
    if all(key in columns for key in _PAIRWISE):
        return DataFile(path, "pairwise", columns)
    if all(key in columns for key in _RANKED):
        return DataFile(path, "ranked", columns)
    raise ValueError(f"{path}: cannot tell whether rows are ranked (prompt, completions) or pairwise (prompt, chosen, "
                     f"rejected); columns found: {', '.join(columns)}")


def _check_row(data: DataFile, row: dict, where: str) -> None:
    """One row of a data file by the trainer's row rules; ``where`` names the file and line (or row)."""
    # One kind per file: it becomes one dataset config, whose rows must share their columns.
    if missing := [key for key in (_PAIRWISE if data.kind == "pairwise" else _RANKED) if key not in row]:
        raise ValueError(f"{where}: {data.kind} row without {', '.join(missing)}")
    try:
        normalize_row(row)
    except PreferenceDataError as error:
        field = f", field {error.field!r}" if error.field else ""
        raise ValueError(f"{where}{field}: {error.problem} (training would refuse this row: fix or drop it before "
                         "publishing)") from None
    if data.kind == "ranked":
        data.list_sizes.add(len(row[COMPLETIONS]))


def stage_preference_dataset(data_dir: str | Path, staging_dir: str | Path, *, repo_id: str, secrets=(),
                             **card_kwargs) -> list[StagedFile]:
    """Write into `staging_dir` the data files of `data_dir` (`*.jsonl`, `*.parquet`) under `ranked/` and
    `pairwise/`, and a `README.md` dataset card.

    Args:
        data_dir (`str` or `Path`): the folder of generated data; only read.
        staging_dir (`str` or `Path`): a new or empty folder outside `data_dir`.
        repo_id (`str`): the dataset repository, named in the card.
        secrets (`Sequence[str]`): strings that must not appear in the card.
        card_kwargs: passed to `dpo_ext.hub.cards.render_dataset_card` (`license`, `pretty_name`, `description`,
            `source_model`, `reward_model`, `generation`).

    Returns:
        `list[StagedFile]`: the staged files, sorted by path.
    """
    data_dir, staging_dir = resolve_staging(data_dir, staging_dir, "data")
    files = _data_files(data_dir)
    card = render_dataset_card(repo_id=repo_id, files=[data.card_entry() for data in files], **card_kwargs)
    for data in files:
        copy_file(staging_dir, data.source, data.path_in_repo)
    write_card(staging_dir, card, secrets)
    return list_folder(staging_dir)


def _data_files(data_dir: Path) -> list[DataFile]:
    """Every data file under `data_dir`, inspected; refuses a folder that could not be published as one dataset."""
    sources = [path for path in files_under(data_dir) if path.suffix in _FORMATS]
    if not sources:
        raise FileNotFoundError(f"no .jsonl or .parquet files in {data_dir}")
    if len({path.suffix for path in sources}) > 1:
        # `datasets` picks one file format per repository: a mix would publish a dataset nobody can load.
        raise ValueError(f"{data_dir} mixes JSONL and Parquet files; `datasets` loads one format per repository: "
                         "convert them to one format (e.g. `Dataset.from_json(path).to_parquet(...)`)")
    files = [inspect_data_file(path) for path in sources]
    seen: dict[str, Path] = {}
    for data in files:
        if data.path_in_repo in seen:
            raise ValueError(f"{seen[data.path_in_repo]} and {data.source} would both be published as "
                             f"{data.path_in_repo}: rename one of them")
        seen[data.path_in_repo] = data.source
    return files


def push_preference_dataset(
    data_dir: str | Path,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    dry_run: bool | str | Path = False,
    endpoint: str | None = None,
    commit_message: str = "Upload preference data with dpo_ext",
    max_attempts: int = 4,
    retry_delay: float = 2.0,
    **card_kwargs,
) -> PushResult:
    """Publish a folder of generated preference data as a dataset repository, with a dataset card, in one commit.

    Access is checked first, exactly as for `dpo_ext.push_adapter` (same `token`, `private`, `dry_run`,
    `endpoint`, retry arguments and errors).

    Args:
        data_dir (`str` or `Path`): folder of `*.jsonl` / `*.parquet` files, ranked or pairwise.
        repo_id (`str`): `namespace/name` of the dataset repository.
        card_kwargs: passed to `dpo_ext.hub.cards.render_dataset_card` (`license`, `pretty_name`, `description`,
            `source_model`, `reward_model`, `generation`: a dict of sampling settings).

    Returns:
        `PushResult`.
    """
    stage = partial(stage_preference_dataset, data_dir, **card_kwargs)
    return publish_folder(stage, repo_id, repo_type="dataset", token=token, private=private, dry_run=dry_run,
                          endpoint=endpoint, commit_message=commit_message, max_attempts=max_attempts,
                          retry_delay=retry_delay)
