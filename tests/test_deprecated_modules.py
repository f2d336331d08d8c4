"""Modules renamed by role keep their old import paths for users, with a DeprecationWarning that names the new path
and points at the user's import line; the package, recipes, tests and benchmarks import only the new paths."""

import importlib
import re
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# old path -> (new path, names people import from the old path)
MOVED = {
    "dpo_ext.training.checkpoints": ("dpo_ext.training.checkpoint_files",
                                     ["IncompleteCheckpointError", "check_checkpoint", "last_complete_checkpoint"]),
    "dpo_ext.hub.adapters": ("dpo_ext.hub.adapter_push", ["push_adapter", "stage_adapter_folder", "build_model_card"]),
    "dpo_ext.hub.adapter_folder": ("dpo_ext.hub.adapter_files", ["AdapterInfo", "inspect_adapter", "adapter_weights"]),
    "dpo_ext.hub.training_files": ("dpo_ext.hub.adapter_files", ["read_training_config", "read_eval_results"]),
    "dpo_ext.hub.staging": ("dpo_ext.hub.staged_folder", ["StagedFile", "list_folder", "resolve_staging"]),
    "dpo_ext.hub.benchmarks": ("dpo_ext.hub.eval_results", ["HubBenchmark", "KNOWN_BENCHMARKS", "eval_results_files"]),
}


def _forget(module: str) -> None:
    """Undo an earlier import of `module`, so that importing it runs (and warns) again."""
    sys.modules.pop(module, None)
    parent, _, child = module.rpartition(".")
    if parent in sys.modules and child in vars(sys.modules[parent]):
        delattr(sys.modules[parent], child)


@pytest.mark.parametrize("old", sorted(MOVED))
def test_an_old_module_path_still_imports_and_warns(old):
    new, names = MOVED[old]
    _forget(old)
    with pytest.warns(DeprecationWarning, match=re.escape(new)) as caught:
        module = importlib.import_module(old)
    new_module = importlib.import_module(new)
    assert module is new_module  # one module under two names: a monkeypatch through either reaches the code
    for name in names:
        assert getattr(module, name) is getattr(new_module, name)
    warning = next(w for w in caught if issubclass(w.category, DeprecationWarning))
    assert f"{old} is deprecated" in str(warning.message)
    # Past importlib's frames and the alias module: Python shows a DeprecationWarning by default only where it
    # points into __main__, so it must point at the line that imports the old path.
    assert Path(warning.filename).resolve() == Path(__file__).resolve()


@pytest.mark.parametrize(("statement", "name", "attribute"), [
    ("from dpo_ext.hub.adapters import push_adapter", "push_adapter", "push_adapter"),
    ("import dpo_ext.training.checkpoints as checkpoints", "checkpoints", None),
])
def test_the_import_statements_users_write_still_work(statement, name, attribute):
    old = statement.split()[1]
    _forget(old)
    scope = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exec(statement, scope)
    assert [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)] == [
        f"{old} is deprecated: import {MOVED[old][0]} instead (same names; the old path will be removed)"]
    new_module = importlib.import_module(MOVED[old][0])
    assert scope[name] is (getattr(new_module, attribute) if attribute else new_module)


def test_the_project_imports_only_the_new_paths():
    """The aliases are for users: the package, recipes, tests, benchmarks and docs name the new modules."""
    old_path = re.compile("|".join(re.escape(old) + r"\b(?!_)" for old in MOVED))
    found = []
    for folder in ("dpo_ext", "recipes", "tests", "benchmarks", "docs"):
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix not in (".py", ".md") or path == Path(__file__).resolve():
                continue
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if old_path.search(line) and not _is_alias(path):
                    found.append(f"{path.relative_to(ROOT)}:{number}")
    assert not found, f"old module paths used at {found}: use the new ones ({MOVED})"


def _is_alias(path: Path) -> bool:
    return path.suffix == ".py" and "moved_module(" in path.read_text(encoding="utf-8")
