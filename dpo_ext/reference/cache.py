"""Precomputed reference log-probs kept in a folder between runs, each file tied to the run it was computed for by a
fingerprint (`dpo_ext.reference.fingerprint`): reused when the fingerprint matches, refused, naming what changed,
when it does not. `dpo-ext precompute-ref` fills such a folder, so one machine can precompute for another.

One JSON file per dataset name (``train.json``, ``eval.json``...): ``{"fingerprint", "reference", "ref_logps"}``, one
list of K floats per row in dataset order. JSON writes floats exactly (shortest round-trip), and is never unpickled.
"""

import json
import logging
import os
from pathlib import Path

from dpo_ext.reference.fingerprint import changed_parts

logger = logging.getLogger(__name__)


class ReferenceCacheMismatchError(ValueError):
    """A cached ``ref_logps`` file was computed for another run (another model, adapter, tokenizer, length or data)."""


class ReferenceCache:
    """The folder ``folder`` of cached reference log-probs."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)

    def path(self, name: str) -> Path:
        return self.folder / f"{name}.json"

    def load(self, name: str, fingerprint: dict) -> list | None:
        """The cached rows of dataset ``name`` when their fingerprint is ``fingerprint``; `None` when nothing is cached.

        Raises:
            `ReferenceCacheMismatchError`: the file was computed for another run, naming the inputs that changed.
        """
        path = self.path(name)
        if not path.is_file():
            return None
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
            stored_fingerprint, rows = stored["fingerprint"], stored["ref_logps"]
        except (ValueError, KeyError, TypeError) as error:
            raise ReferenceCacheMismatchError(
                f"{path} is not a reference cache file ({error}); delete it, or choose another ref_cache_dir") from None
        changed = changed_parts(stored_fingerprint, fingerprint)
        if changed:
            raise ReferenceCacheMismatchError(
                f"{path} holds reference log-probs computed for another run: changed since then: "
                f"{', '.join(changed)}. Reusing them would train against the wrong reference. Delete the file (it "
                "is recomputed), or choose another ref_cache_dir for this run.")
        logger.info("Reference log-probs of the %s dataset reused from %s (fingerprint matches).", name, path)
        return rows

    def save(self, name: str, fingerprint: dict, reference: str, rows: list) -> Path:
        """Write dataset ``name``'s rows with their fingerprint (to a temporary file first: never half a file)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.path(name)
        partial = path.with_suffix(".json.partial")
        partial.write_text(json.dumps({"fingerprint": fingerprint, "reference": reference, "ref_logps": rows}),
                           encoding="utf-8")
        os.replace(partial, path)
        return path
