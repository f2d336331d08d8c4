"""Precomputed reference log-probs kept in a folder between runs, each file tied to the run it was computed for by a
fingerprint (`dpo_ext.reference.fingerprint`): reused when the fingerprint matches, refused, naming what changed,
when it does not. `dpo-ext precompute-ref` fills such a folder, so one machine can precompute for another.

One JSON file per dataset name (``train.json``, ``eval.json``...): ``{"fingerprint", "reference", "ref_logps"}``, one
list of K floats per row in dataset order. JSON writes floats exactly (shortest round-trip), and is never unpickled.
A file is checked in full when it is read, as a ``ref_logps`` column is (`dpo_ext.data.rows.check_ref_logps`): one row
per dataset row, K finite numbers per row (Python's JSON reader accepts ``NaN`` and ``Infinity``, the loss must not);
a damaged or hand-edited file is refused naming the file, the row and the field, never read as zeros or a NaN loss.
"""

import json
import logging
import os
from pathlib import Path

from dpo_ext.data.rows import REF_LOGPS, PreferenceDataError, check_ref_logps
from dpo_ext.reference.fingerprint import changed_parts

logger = logging.getLogger(__name__)


class ReferenceCacheError(ValueError):
    """A reference cache file, or folder, that cannot be used: malformed, or computed for another run."""


class ReferenceCacheMismatchError(ReferenceCacheError):
    """A cached ``ref_logps`` file was computed for another run (another model, adapter, tokenizer, length or data)."""


class ReferenceCache:
    """The folder ``folder`` of cached reference log-probs.

    Raises:
        `ReferenceCacheError`: ``folder``, or a folder above it, is a file (refused before any log-prob is computed).
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        problem = cache_folder_problem(self.folder)
        if problem:
            raise ReferenceCacheError(f"ref_cache_dir: {problem}")

    def path(self, name: str) -> Path:
        return self.folder / f"{name}.json"

    def load(self, name: str, fingerprint: dict, completions_per_row: list[int]) -> list | None:
        """The cached rows of dataset ``name`` when their fingerprint is ``fingerprint``; `None` when nothing is cached.

        Args:
            name (`str`): the dataset's name (``"train"``, ``"eval"``...), the file's stem.
            fingerprint (`dict`): this run's fingerprint of the dataset (`dpo_ext.reference.fingerprint`).
            completions_per_row (`list[int]`): K of each row of the dataset, in order: what the file must hold.

        Raises:
            `ReferenceCacheMismatchError`: the file was computed for another run, naming the inputs that changed.
            `ReferenceCacheError`: the file is damaged (truncated, edited, wrong types, a wrong number of rows or of
                values in a row, a value that is not a finite number), naming the file, the row and the field.
        """
        path = self.path(name)
        if not path.exists():
            return None
        stored = self._read(path)
        changed = changed_parts(stored["fingerprint"], fingerprint)
        if changed:
            raise ReferenceCacheMismatchError(
                f"{path} holds reference log-probs computed for another run: changed since then: "
                f"{', '.join(changed)}. Reusing them would train against the wrong reference. Delete the file (it "
                "is recomputed), or choose another ref_cache_dir for this run.")
        rows = self._rows(path, stored, completions_per_row, name)
        logger.info("Reference log-probs of the %s dataset reused from %s (fingerprint matches).", name, path)
        return rows

    def _remedy(self) -> str:
        return (f"delete {self.folder} to have them computed again, or run `dpo-ext precompute-ref` again with this "
                "run's settings")

    def _damaged(self, path: Path, problem: str) -> "ReferenceCacheError":
        return ReferenceCacheError(f"{path} is not a complete reference cache file: {problem}. Do not edit these "
                                   f"files: {self._remedy()}.")

    def _read(self, path: Path) -> dict:
        """The file's JSON object, with a ``fingerprint`` object (its rows are checked by `_rows`)."""
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except IsADirectoryError:
            raise self._damaged(path, "it is a folder") from None
        except ValueError as error:  # invalid JSON or UTF-8: cut short by an interrupted write, or edited
            raise self._damaged(path, f"invalid JSON ({error})") from None
        if not isinstance(stored, dict):
            raise self._damaged(path, f"it holds a JSON {_json_type(stored)}, expected an object with 'fingerprint' "
                                      f"and '{REF_LOGPS}'")
        for key, kind in (("fingerprint", dict), (REF_LOGPS, list)):
            if key not in stored:
                raise self._damaged(path, f"it has no {key!r}")
            if not isinstance(stored[key], kind):
                raise self._damaged(path, f"{key!r} is {_json_type(stored[key], article=True)}, expected "
                                          f"{'an object' if kind is dict else 'a list'}")
        return stored

    def _rows(self, path: Path, stored: dict, completions_per_row: list[int], name: str) -> list[list[float]]:
        rows = stored[REF_LOGPS]
        if len(rows) != len(completions_per_row):
            raise self._damaged(path, f"it holds {len(rows)} rows for the {len(completions_per_row)} rows of the "
                                      f"{name} dataset")
        try:
            return [check_ref_logps(values, index, k, self._remedy()) for index, (values, k)
                    in enumerate(zip(rows, completions_per_row))]
        except PreferenceDataError as error:  # "row 2, field 'ref_logps': has 2 entries for 3 completions (...)"
            raise ReferenceCacheError(f"{path}, {error}") from None

    def save(self, name: str, fingerprint: dict, reference: str, rows: list) -> Path:
        """Write dataset ``name``'s rows with their fingerprint (to a temporary file first: never half a file)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.path(name)
        partial = path.with_suffix(".json.partial")
        partial.write_text(json.dumps({"fingerprint": fingerprint, "reference": reference, REF_LOGPS: rows},
                                      allow_nan=False), encoding="utf-8")
        os.replace(partial, path)
        return path


def cache_folder_problem(folder: str | os.PathLike) -> str | None:
    """What keeps ``folder`` from being a reference cache folder (it, or a folder above it, is a file), or `None`.

    Checked when a run is configured, so that a wrong path fails at once rather than after the precompute pass.
    """
    for path in (Path(folder), *Path(folder).parents):
        if path.exists():
            if path.is_dir():
                return None
            return (f"{path} is a file, not a folder: give a folder for the reference log-probs (it is created when "
                    "missing)")
    return None


def _json_type(value, article: bool = False) -> str:
    kind = {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}.get(type(value), "number")
    return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}" if article else kind
