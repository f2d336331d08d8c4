"""Checkpoints that are complete or absent: where one is staged, whether one is complete, which one to resume from.

A checkpoint is written under ``tmp-checkpoint-N`` in the run folder and renamed to ``checkpoint-N`` as its last step
(`commit_staged`). transformers only ever looks at names matching ``^checkpoint-(\\d+)$`` (resume and rotation), so a
run killed mid-save leaves a staging folder that nothing mistakes for a checkpoint. Folders written by plain
transformers or an older dpo_ext can still be incomplete: `checkpoint_problem` tells those apart cheaply (required
files present, JSON parses, safetensors headers match their files (`dpo_ext.safe_files.verify_safetensors`), torch
files are complete zip archives) without loading any tensor or unpickling anything.

Pure file-system helpers: nothing here knows about the Trainer.
"""

import json
import logging
import os
import re
import shutil
import zipfile

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR as CHECKPOINT_PREFIX

from dpo_ext.safe_files import WeightsFileError, verify_safetensors

logger = logging.getLogger(__name__)

STAGING_PREFIX = "tmp-"
TRAINER_STATE = "trainer_state.json"
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin", "model.safetensors", "pytorch_model.bin")
WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
OPTIMIZER_FILES = ("optimizer.pt", "optimizer.bin")
SCHEDULER_FILE = "scheduler.pt"
_CHECKPOINT_NAME = re.compile(rf"^{CHECKPOINT_PREFIX}-(\d+)$")


class IncompleteCheckpointError(ValueError):
    """A checkpoint folder that cannot be resumed from: a file is missing or truncated."""


def staging_dir(checkpoint_dir: str) -> str:
    """``run/checkpoint-N`` -> ``run/tmp-checkpoint-N`` (same folder, so the final rename is atomic)."""
    head, name = os.path.split(os.path.normpath(checkpoint_dir))
    return os.path.join(head, STAGING_PREFIX + name)


def remove_stale_staging(run_dir: str) -> list[str]:
    """Delete every ``tmp-checkpoint-*`` folder in `run_dir` (saves cut short by a crash). Returns their paths."""
    if not os.path.isdir(run_dir):
        return []
    stale = sorted(os.path.join(run_dir, name) for name in os.listdir(run_dir)
                   if name.startswith(f"{STAGING_PREFIX}{CHECKPOINT_PREFIX}-"))
    for path in stale:
        logger.warning("Removing %s: a checkpoint save that never finished.", path)
        shutil.rmtree(path, ignore_errors=True)
    return stale


def _fsync(path: str, directory: bool = False) -> None:
    if directory and not hasattr(os, "O_DIRECTORY"):
        return  # Windows cannot open a folder to flush it
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit_staged(staging: str, final: str) -> None:
    """Make `staging` durable, then rename it to `final` (replacing an older `final`, as a re-save of a step does).

    The fsyncs make the rename safe against a machine crash too, not only a killed process: without them the rename
    can reach the disk before the files it publishes. Replacing a `final` leaves it briefly absent, never half-written.
    """
    for root, _, files in os.walk(staging):
        for name in files:
            _fsync(os.path.join(root, name))
        _fsync(root, directory=True)
    replaced = None
    if os.path.exists(final):
        replaced = staging_dir(final) + "-replaced"
        shutil.rmtree(replaced, ignore_errors=True)
        os.rename(final, replaced)
    os.rename(staging, final)
    _fsync(os.path.dirname(os.path.abspath(final)), directory=True)
    if replaced is not None:
        shutil.rmtree(replaced, ignore_errors=True)


def checkpoints_by_step(run_dir: str) -> list[tuple[int, str]]:
    """``(step, path)`` of every ``checkpoint-N`` folder in `run_dir`, oldest first."""
    if not os.path.isdir(run_dir):
        return []
    found = []
    for name in os.listdir(run_dir):
        match = _CHECKPOINT_NAME.match(name)
        if match and os.path.isdir(os.path.join(run_dir, name)):
            found.append((int(match.group(1)), os.path.join(run_dir, name)))
    return sorted(found)


def _safetensors_problem(path: str) -> str | None:
    try:
        verify_safetensors(path)  # reads the header only
    except WeightsFileError:
        return f"{os.path.basename(path)} is truncated or corrupt (not a complete safetensors file)"
    return None


def _file_problem(path: str) -> str | None:
    name = os.path.basename(path)
    if name.endswith(".safetensors"):
        return _safetensors_problem(path)
    if name.endswith((".pt", ".pth", ".bin")) and not zipfile.is_zipfile(path):
        return f"{name} is truncated or corrupt (not a complete torch.save archive)"
    if name.endswith(".json"):
        try:
            with open(path) as f:
                json.load(f)
        except ValueError:
            return f"{name} is truncated or corrupt (invalid JSON)"
    return None


def _weights_problem(folder: str, names: set[str]) -> str | None:
    for index_name in WEIGHT_INDEXES:
        if index_name in names:
            problem = _file_problem(os.path.join(folder, index_name))
            if problem:
                return problem
            with open(os.path.join(folder, index_name)) as f:
                shards = sorted(set(json.load(f).get("weight_map", {}).values()))
            missing = [s for s in shards if not os.path.isfile(os.path.join(folder, s))]
            if missing:
                return f"{missing[0]} is missing (listed in {index_name})"
            return next(filter(None, (_file_problem(os.path.join(folder, s)) for s in shards)), None)
    for name in WEIGHT_FILES:
        if name in names:
            return None  # checked with every other file
    subdirs = [n for n in names if os.path.isdir(os.path.join(folder, n))]
    if any(os.path.isfile(os.path.join(folder, d, w)) for d in subdirs for w in WEIGHT_FILES[:2]):
        return None  # one adapter per subfolder (several adapters saved at once)
    if any(n.startswith("pytorch_model_fsdp") for n in names):
        return None  # FSDP's own layout
    return f"no model weights ({' or '.join(WEIGHT_FILES)})"


def checkpoint_problem(folder: str, require_weights: bool = True, require_optimizer: bool = True) -> str | None:
    """Why `folder` is not a complete checkpoint, or ``None`` if it is.

    Cheap: it checks that the required files exist, that JSON files parse, that safetensors files are exactly what
    their headers describe and that torch files are complete zip archives. It loads no tensor and unpickles nothing.

    Args:
        folder (`str`): a ``checkpoint-N`` folder.
        require_weights (`bool`): expect model or adapter weights (not under DeepSpeed, which keeps its own).
        require_optimizer (`bool`): expect optimizer and scheduler state (not with ``save_only_model``).
    """
    if not os.path.isdir(folder):
        return "the folder does not exist"
    names = set(os.listdir(folder))
    required = [TRAINER_STATE]
    if require_optimizer:
        required.append(SCHEDULER_FILE)
        if not names.intersection(OPTIMIZER_FILES) and not any(n.startswith("optimizer_") for n in names):
            return f"{OPTIMIZER_FILES[0]} is missing"
    for name in required:
        if name not in names:
            return f"{name} is missing"
    with open(os.path.join(folder, TRAINER_STATE)) as f:
        try:
            state = json.load(f)
        except ValueError:
            return f"{TRAINER_STATE} is truncated or corrupt (invalid JSON)"
    if not isinstance(state, dict) or "global_step" not in state:
        return f"{TRAINER_STATE} has no global_step"
    if require_weights:
        problem = _weights_problem(folder, names)
        if problem:
            return problem
    for name in sorted(names):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            problem = _file_problem(path)
            if problem:
                return problem
    return None


def last_complete_checkpoint(run_dir: str, **requirements) -> str | None:
    """The newest complete ``checkpoint-N`` in `run_dir`, warning about (and skipping) newer incomplete ones.

    `requirements` are passed to `checkpoint_problem`.
    """
    for _, path in reversed(checkpoints_by_step(run_dir)):
        problem = checkpoint_problem(path, **requirements)
        if problem is None:
            return path
        logger.warning("Skipping checkpoint %s: %s. Falling back to an earlier checkpoint.", path, problem)
    return None


def check_checkpoint(folder: str, **requirements) -> None:
    """Raise `IncompleteCheckpointError` naming `folder`, what is wrong, and the checkpoint to use instead."""
    problem = checkpoint_problem(folder, **requirements)
    if problem is None:
        return
    run_dir = os.path.dirname(os.path.normpath(folder))
    others = [path for _, path in reversed(checkpoints_by_step(run_dir))
              if os.path.normpath(path) != os.path.normpath(folder)]
    fallback = next((p for p in others if checkpoint_problem(p, **requirements) is None), None)
    advice = (f"Resume from {fallback} instead, the last complete checkpoint in {run_dir} "
              "(resume_from_checkpoint=True picks it automatically)."
              if fallback else f"No complete checkpoint exists in {run_dir}: train without resume_from_checkpoint.")
    cause = " (the run probably stopped while saving it)" if os.path.isdir(folder) else ""
    raise IncompleteCheckpointError(f"Cannot resume from {folder}: {problem}{cause}. {advice}")
