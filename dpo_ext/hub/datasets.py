"""Publish generated preference data (ranked lists and pairs) as a Hub dataset with a card.

A data folder holds JSONL or Parquet files, all of one format (`datasets` reads one format per repository). Each
file is either *ranked* (`prompt` plus a best-first list `completions`, or `responses`) or *pairwise* (`prompt`,
`chosen`, `rejected`); the kind is read from the columns. Files are published as `ranked/<file>` and
`pairwise/<file>`, one dataset config per kind, and the split is taken from the file name (`train.jsonl` -> train,
`test.parquet` -> test; anything else -> train).
"""

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from dpo_ext.hub.cards import render_dataset_card
from dpo_ext.hub.publish import PushResult, publish_folder
from dpo_ext.hub.staging import StagedFile, list_folder, resolve_staging
from dpo_ext.safe_files import redact
from dpo_ext.data.jsonl import iter_jsonl
from dpo_ext.data.rows import PreferenceDataError, normalize_row

logger = logging.getLogger(__name__)

_PAIRWISE = ("prompt", "chosen", "rejected")
_RANKED_FIELDS = ("completions", "responses")
_SPLITS = {"train", "test", "validation", "valid", "eval", "dev"}
_FORMATS = {".jsonl": "JSONL", ".parquet": "Parquet"}


@dataclass
class DataFile:
    source: Path
    kind: str  # "ranked" or "pairwise"
    rows: int
    columns: list[str]
    ranked_field: str | None = None
    list_sizes: set[int] = field(default_factory=set)

    @property
    def split(self) -> str:
        return self.source.stem if self.source.stem in _SPLITS else "train"

    @property
    def path_in_repo(self) -> str:
        return f"{self.kind}/{self.source.name}"


def inspect_data_file(path: str | Path) -> DataFile:
    """Read a JSONL or Parquet file of preference rows: its kind, row count, columns and ranked list sizes.

    Every row must pass the trainer's row rules (`dpo_ext.data.rows.normalize_row`), so that nothing is published that
    training would refuse. A ranked row's list is best first unless the row has ``ranks`` or ``scores``.

    Raises:
        `ValueError`: naming the file (and line, or Parquet row, and field) when rows are neither ranked nor
            pairwise, or are malformed.
    """
    path = Path(path)
    if path.suffix == ".parquet":
        import pyarrow
        import pyarrow.parquet

        try:
            table = pyarrow.parquet.read_table(path)
        except pyarrow.ArrowException as error:
            raise ValueError(f"{path}: not a readable Parquet file ({error}); write it again, e.g. with "
                             "`Dataset.to_parquet`") from None
        columns = list(table.schema.names)
        located = ((f"row {index}", row) for index, row in enumerate(table.to_pylist()))
    else:
        columns = None
        file = path.open(encoding="utf-8")
        located = ((f"line {number}", row) for number, row in iter_jsonl(path, file))
    data, rows = (_kind(path, columns) if columns is not None else None), 0
    try:
        for where, row in located:
            data = data or _kind(path, list(row))
            _check_row(data, row, f"{path}, {where}")
            rows += 1
    finally:
        if columns is None:
            file.close()
    if data is None:
        raise ValueError(f"{path} has no rows")
    data.rows = rows
    return data


def _check_row(data: DataFile, row: dict, where: str) -> None:
    """One row of a data file by the trainer's row rules; ``where`` names the file and line (or row)."""
    expected = _PAIRWISE if data.kind == "pairwise" else ("prompt", data.ranked_field)
    if missing := [key for key in expected if key not in row]:
        raise ValueError(f"{where}: {data.kind} row without {', '.join(missing)}")
    if data.ranked_field:
        if not isinstance(row[data.ranked_field], list) or len(row[data.ranked_field]) < 2:
            raise ValueError(f"{where}: {data.ranked_field!r} must be a list of at least 2 completions, best first")
        data.list_sizes.add(len(row[data.ranked_field]))
        completions = row[data.ranked_field]
        row = {**row, "completions": completions, "responses": None}
        if row.get("ranks") is None and row.get("scores") is None:  # the list itself is the ranking, best first
            row["ranks"] = list(range(len(completions)))
    try:
        normalize_row(row)
    except PreferenceDataError as error:
        field = error.field or ""
        if data.ranked_field and field.startswith("completions"):
            field = data.ranked_field + field[len("completions"):]
        raise ValueError(f"{where}{f', field {field!r}' if field else ''}: {error.problem} (training would refuse "
                         "this row: fix or drop it before publishing)") from None


def _kind(path: Path, columns: list[str]) -> DataFile:
    if all(key in columns for key in _PAIRWISE):
        return DataFile(path, "pairwise", 0, columns)
    ranked_field = next((f for f in _RANKED_FIELDS if f in columns), None)
    if "prompt" in columns and ranked_field:
        return DataFile(path, "ranked", 0, columns, ranked_field)
    raise ValueError(f"{path}: cannot tell whether rows are ranked (prompt, completions) or pairwise (prompt, chosen, "
                     f"rejected); columns found: {', '.join(columns)}")


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
    sources = sorted(p for p in data_dir.rglob("*") if p.is_file() and p.suffix in _FORMATS)
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
    card = render_dataset_card(repo_id=repo_id, files=[
        {"config": d.kind, "split": d.split, "path": d.path_in_repo, "format": _FORMATS[d.source.suffix],
         "rows": d.rows, "columns": d.columns, "ranked_field": d.ranked_field, "list_sizes": sorted(d.list_sizes)}
        for d in files], **card_kwargs)
    for data in files:
        (staging_dir / data.kind).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(data.source, staging_dir / data.path_in_repo)
    (staging_dir / "README.md").write_text(redact(str(card), secrets), encoding="utf-8")
    return list_folder(staging_dir)


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
    def stage(staging_dir: Path, full_repo_id: str, secrets) -> list[StagedFile]:
        return stage_preference_dataset(data_dir, staging_dir, repo_id=full_repo_id, secrets=secrets, **card_kwargs)

    return publish_folder(stage, repo_id, repo_type="dataset", token=token, private=private, dry_run=dry_run,
                          endpoint=endpoint, commit_message=commit_message, max_attempts=max_attempts,
                          retry_delay=retry_delay)
