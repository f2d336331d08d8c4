"""Reading JSON Lines files with errors that name the file and line."""

import json
from collections.abc import Iterator
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
