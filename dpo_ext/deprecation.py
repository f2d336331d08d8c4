"""Old module paths kept for users after a module is renamed: importing one warns and hands back the new module."""

import importlib
import sys
import warnings


def _is_import_machinery(frame) -> bool:
    name = frame.f_globals.get("__name__", "")
    return name == "importlib" or name.startswith(("importlib.", "_frozen_importlib", "dpo_ext."))


def _is_bootstrap(frame) -> bool:
    filename = frame.f_code.co_filename
    return "importlib" in filename and "_bootstrap" in filename


def moved_module(old: str, new: str) -> None:
    """Make module `old` (the caller, at import time) the module `new`, with a `DeprecationWarning`.

    The old name then refers to the very same module object, so every name (and a monkeypatch through either name)
    is shared. The warning points past importlib's frames to the line that imported `old`: Python's default filter
    shows a DeprecationWarning only where it points into `__main__`.

    Args:
        old (`str`): the deprecated dotted path (pass `__name__`).
        new (`str`): the dotted path of the module that replaces it.
    """
    module = importlib.import_module(new)
    frame, stacklevel = sys._getframe(1), 2  # stacklevel 2 is the frame that called this function
    while frame.f_back is not None and _is_import_machinery(frame):
        frame = frame.f_back
        # `warnings` itself skips importlib's bootstrap frames when it counts levels: count only the others.
        stacklevel += not _is_bootstrap(frame)
    warnings.warn(f"{old} is deprecated: import {new} instead (same names; the old path will be removed)",
                  DeprecationWarning, stacklevel=stacklevel)
    sys.modules[old] = module
