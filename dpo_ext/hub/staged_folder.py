"""The staged folder: building, in a folder of its own, exactly the files that one commit uploads.

Staging copies into a separate folder, so the user's folder is never modified and an interrupted upload can simply
be re-run; a dry run keeps that folder, so what it shows is, byte for byte, what a push sends. What goes into it is
decided by `dpo_ext.hub.adapter_push` (an adapter) and `dpo_ext.hub.datasets` (preference data); this module holds the
folder mechanics they share.
"""

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from dpo_ext.safe_files import redact


@dataclass(frozen=True)
class StagedFile:
    path: str  # inside the repository, with "/" separators
    size: int  # bytes


def files_under(folder: Path) -> list[Path]:
    """Every file under `folder`, at any depth, sorted."""
    return sorted(p for p in folder.rglob("*") if p.is_file())


def list_folder(folder: str | Path) -> list[StagedFile]:
    """Every file under `folder`, sorted, as `upload_folder` will send them."""
    folder = Path(folder)
    return [StagedFile(p.relative_to(folder).as_posix(), p.stat().st_size) for p in files_under(folder)]


def resolve_staging(source_dir, staging_dir, what: str) -> tuple[Path, Path]:
    """Resolved ``(source_dir, staging_dir)`` after checking that the source ``what`` folder exists and that staging
    can neither touch it nor mix with older files."""
    source_dir, staging_dir = Path(source_dir).resolve(), Path(staging_dir).resolve()
    if source_dir.is_file():
        raise ValueError(f"{what} folder {source_dir} is a file: give the folder that holds it")
    if not source_dir.is_dir():
        raise FileNotFoundError(f"{what} folder {source_dir} does not exist (no such file or folder)")
    # Staging must not touch the source: it is what makes an interrupted upload safe to re-run.
    if staging_dir == source_dir or source_dir in staging_dir.parents or staging_dir in source_dir.parents:
        raise ValueError(f"staging folder {staging_dir} overlaps the source folder {source_dir}: choose a folder "
                         "outside it")
    if staging_dir.exists() and (not staging_dir.is_dir() or any(staging_dir.iterdir())):
        raise ValueError(f"staging folder {staging_dir} already exists and is not empty: choose a new folder or "
                         "delete it first")
    return source_dir, staging_dir


def copy_file(staging_dir: Path, source: Path, path_in_repo: str) -> None:
    """Copy `source` to `path_in_repo` ("/"-separated) inside `staging_dir`."""
    target = staging_dir / path_in_repo
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)


def write_file(staging_dir: Path, path_in_repo: str, text: str) -> None:
    target = staging_dir / path_in_repo
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")


def write_json(staging_dir: Path, path_in_repo: str, data) -> None:
    write_file(staging_dir, path_in_repo, json.dumps(data, indent=2) + "\n")


def write_card(staging_dir: Path, card, secrets) -> None:
    """The card as `README.md`, with the `secrets` (the Hub token) and anything shaped like a token masked: a card
    quotes paths and settings, which can hold either."""
    write_file(staging_dir, "README.md", redact(str(card), secrets))
