"""The training record: what a trained adapter's folder says about how it was trained, written and read here only.

`PLDPOTrainer` writes two files next to every saved adapter (`write_training_record`):

- ``dpo_ext_reference.json`` (`RECORD_FILE`), the record proper: ``reference`` (the reference source it was trained
  against, one of `dpo_ext.reference.REFERENCE_CHOICES`), ``beta``, ``loss_type`` and ``reference_fingerprint``
  (`dpo_ext.reference.fingerprint`). Every field may be missing: records written before a field existed still load.
- ``training_config.json``: every training setting (the Hub token left out), what ``dpo-ext push`` publishes.

Readers: the scorer's loader (which reference, which beta), ``dpo-ext push`` (which beta, what to put on the card).
Adapters saved by ``trl.DPOTrainer`` have no record; their beta may still be in a ``training_config.yaml`` or
``.json`` (`CONFIG_FILES`). ``training_args.bin`` is never opened: it is a pickle, and unpickling runs code.

This module imports neither torch nor the Hub client: the CLI and the Hub staging read records without loading a
model.
"""

import json
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dpo_ext.settings import positive

logger = logging.getLogger(__name__)

RECORD_FILE = "dpo_ext_reference.json"
CONFIG_FILES = ("training_config.yaml", "training_config.json")  # read in this order; the trainer writes the JSON
WRITTEN_CONFIG = "training_config.json"
DEFAULT_BETA = 0.1  # TRL's and PLDPOConfig's default: the best guess when nothing records the beta
_TEXT_FIELDS = ("reference",)


@dataclass(frozen=True)
class TrainingRecord:
    """A parsed ``dpo_ext_reference.json``.

    Attributes:
        path (`str`): the file it was read from (named in every error about it).
        reference (`str` or `None`): the reference source the adapter was trained against.
        beta (`float` or `None`): the DPO beta of training, a finite number > 0.
        loss_type (`str` or `None`): the loss it was trained with.
        reference_fingerprint (`dict` or `None`): what the reference was (`dpo_ext.reference.fingerprint`).
        fields (`dict`): the file's object as written, unknown fields included (what is published).
    """

    path: str
    reference: str | None = None
    beta: float | None = None
    loss_type: str | list | None = None
    reference_fingerprint: dict | None = None
    fields: dict = field(default_factory=dict)


@dataclass(frozen=True)
class RecordedBeta:
    """A DPO beta and the file that recorded it."""

    value: float
    source: str


def write_training_record(output_dir, *, reference: str, beta: float, loss_type, reference_fingerprint,
                          training_config: Mapping) -> None:
    """Write `RECORD_FILE` and ``training_config.json`` (``training_config``, already free of secrets) into
    ``output_dir``."""
    record = {"reference": reference, "beta": beta, "loss_type": loss_type,
              "reference_fingerprint": reference_fingerprint}
    with open(os.path.join(output_dir, RECORD_FILE), "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2)
    with open(os.path.join(output_dir, WRITTEN_CONFIG), "w", encoding="utf-8") as f:
        json.dump(dict(training_config), f, indent=2)


def read_training_record(folder) -> TrainingRecord | None:
    """The `TrainingRecord` of a saved adapter's ``folder``, or `None` when it has none (a TRL adapter).

    Raises:
        `ValueError`: the file is not JSON, not an object, or a field has the wrong type, naming file and field.
        `SettingError`: a ``beta`` that is not a finite number > 0, naming file and field.
    """
    path = Path(folder) / RECORD_FILE
    if not path.is_file():
        return None
    try:
        fields = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error}); restore it from the training run, or delete it (the "
                         "reference and beta are then no longer known from it)") from None
    if not isinstance(fields, dict):
        raise ValueError(f"{path}: expected a JSON object, as PLDPOTrainer writes it, got {type(fields).__name__}")
    for name in _TEXT_FIELDS:
        if fields.get(name) is not None and not isinstance(fields[name], str):
            raise ValueError(f"{path}, field {name!r}: expected a string, got {fields[name]!r}")
    fingerprint = fields.get("reference_fingerprint")
    if fingerprint is not None and not isinstance(fingerprint, dict):
        raise ValueError(f"{path}, field 'reference_fingerprint': expected an object, got {fingerprint!r}")
    beta = fields.get("beta")
    if beta is not None:
        beta = positive(f"{path}, field 'beta'", beta)
    return TrainingRecord(str(path), fields.get("reference"), beta, fields.get("loss_type"), fingerprint, fields)


def read_config_file(path) -> dict:
    """A training config file (YAML or JSON: YAML is a superset) as a dict, its ``beta`` checked as in training.

    Raises:
        `ValueError`: not YAML, or not a mapping, naming the file (and line). `SettingError`: a bad ``beta``.
    """
    import yaml

    path = Path(path)
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ValueError(f"{path} is not valid YAML or JSON ({where}{getattr(error, 'problem', None) or error}): "
                         "fix the file, or pass another one (`--config FILE.yaml`, or training_config=)") from None
    if not isinstance(loaded, Mapping):
        raise ValueError(f"{path}: expected a mapping of training settings, got {type(loaded).__name__}")
    loaded = dict(loaded)
    if loaded.get("beta") is not None:
        loaded["beta"] = positive(f"beta in {path}", loaded["beta"])
    return loaded


def folder_config_file(folder) -> Path | None:
    """The training config file of ``folder`` (the first of `CONFIG_FILES` it has), or `None`."""
    return next((p for p in (Path(folder) / name for name in CONFIG_FILES) if p.is_file()), None)


def recorded_beta(folder, training_config: Mapping | None = None, config_source: str | None = None
                  ) -> RecordedBeta | None:
    """The DPO beta ``folder``'s adapter was trained with: the training record's, else the training config's
    (``training_config``, read from ``config_source``, when given; else ``folder``'s config file), else `None`."""
    record = read_training_record(folder)
    if record is not None and record.beta is not None:
        return RecordedBeta(record.beta, record.path)
    if training_config is None:
        path = folder_config_file(folder)
        if path is None:
            return None
        training_config, config_source = read_config_file(path), str(path)
    if training_config.get("beta") is None:
        return None
    return RecordedBeta(positive(f"beta in {config_source}", training_config["beta"]), config_source or "the config")


def check_beta(beta: float, recorded: RecordedBeta | None, hint: str) -> None:
    """Refuse a ``beta`` that differs from the ``recorded`` one: the implicit reward ``beta * log-ratio`` is only the
    model's reward at the beta it was trained with. ``hint`` says what to do instead."""
    if recorded is not None and not math.isclose(beta, recorded.value):
        raise ValueError(f"beta mismatch: you passed beta={beta:g} but {recorded.source} records beta="
                         f"{recorded.value:g}, the beta the adapter was trained with; {hint}")


def choose_beta(folder, beta: float | None = None, override_beta: bool = False) -> tuple[float, str]:
    """The beta to score an adapter with, and where it came from (``folder`` `None`: an adapter with no local files).

    ``beta`` `None`: the recorded beta (`recorded_beta`), else `DEFAULT_BETA` with a logged note. A ``beta`` that
    differs from the recorded one is refused, unless ``override_beta`` (then it is used, with a warning).

    Returns:
        ``(beta, source)``: ``source`` is the file that recorded it, ``"argument"`` or ``"default"``.
    """
    recorded = recorded_beta(folder) if folder is not None else None
    if beta is None:
        if recorded is not None:
            return recorded.value, recorded.source
        logger.warning("No training record or training config with a beta in %s: scoring with the default beta %g. "
                       "Pass beta= (--beta) if it was trained with another.", folder or "the model's files",
                       DEFAULT_BETA)
        return DEFAULT_BETA, "default"
    beta = positive("beta", beta)
    if override_beta and recorded is not None and not math.isclose(beta, recorded.value):
        logger.warning("Scoring with beta=%g although %s records beta=%g (override_beta): rewards are not on the "
                       "scale the adapter was trained at.", beta, recorded.source, recorded.value)
        return beta, "argument"
    check_beta(beta, recorded, "leave beta out to use the recorded one, or pass override_beta=True "
                               "(--override-beta) to score with another anyway")
    return beta, "argument"
