"""Where a model or dataset lives: the one place that says what looks like a Hub repository id (rather than a local
path) and whether the Hub may be contacted (offline mode). Below every layer that reads a source (data files,
scoring, judges, the Hub, the CLI); light to import (no torch), so the CLI can ask before loading anything."""

import os
import re

# namespace/name or name: letters, digits, '-', '_', '.'; the Hub's finer rules are in `huggingface_hub`'s
# validate_repo_id, which `dpo_ext.hub.publish.check_repo_id` applies on top.
HUB_ID_PATTERN = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def looks_like_hub_id(source: str) -> bool:
    """Whether ``source`` reads as a Hub repo id rather than a local path (``./x``, ``/x``, ``a/b/c`` are paths)."""
    return (isinstance(source, str) and bool(HUB_ID_PATTERN.match(source)) and not source.startswith((".", "/"))
            and not (os.path.sep != "/" and os.path.sep in source))


def offline() -> bool:
    """Whether Hub access is off (``HF_HUB_OFFLINE``), as `huggingface_hub` itself decides it."""
    from huggingface_hub.constants import is_offline_mode

    return is_offline_mode()


def require_source(source: str, prefix: str = "") -> None:
    """Refuse a model or adapter ``source`` that is neither a local folder nor, with the Hub reachable, a Hub id:
    `FileNotFoundError` "``prefix`` ``source``: no such directory", saying when offline mode kept the Hub out."""
    from pathlib import Path

    if not Path(source).exists() and (offline() or not looks_like_hub_id(source)):
        raise FileNotFoundError(f"{prefix}{source}: no such directory"
                                + (" (HF_HUB_OFFLINE is set, so the Hub is not searched)" if offline() else ""))
