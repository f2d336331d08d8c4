"""JSON Lines files: reading them with errors that name the file and line, and writing them whole or not at all."""

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path


def iter_jsonl(path: Path, lines) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, row)`` for each non-blank line of ``lines`` (an iterable of text lines of ``path``).

    Raises:
        `ValueError`: naming ``path`` and the line, for a line that is not JSON or not a JSON object.
    """
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}, line {number}: not valid JSON ({error.msg})") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}, line {number}: expected a JSON object, got {type(row).__name__}")
        yield number, row


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> Path:
    """Write ``rows`` to ``path``, one JSON object per line (UTF-8, non-ASCII kept), through a temporary file in the
    same folder renamed at the end: a run killed while writing leaves the old file or none, never half a file (a resumed
    run trusts a file that exists). Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with open(partial, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(partial, path)
    return path
