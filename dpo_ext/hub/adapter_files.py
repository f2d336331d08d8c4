"""Reading and checking the files of an adapter folder before anything is published: what the folder says about
itself (base model, DPO beta, tokenizer files, weights), checked for agreement with what the caller passed, and the
files that describe its training run (the training config, the evaluation results, the plots).

Nothing here is ever unpickled: the folder may have been downloaded, and unpickling runs code. The training config
is read from `training_config.yaml`/`.json` (`PLDPOTrainer` writes the JSON at every save) or from a file the caller
names; `training_args.bin` is never opened. The weights are verified in full (`dpo_ext.safe_files.verify_safetensors`),
so a truncated file is never published.
"""

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from dpo_ext.data.files import existing_file
from dpo_ext.hub.eval_results import split_eval_results
from dpo_ext.locations import looks_like_hub_id
from dpo_ext.reference.record import (
    CONFIG_FILES,
    check_beta,
    folder_config_file,
    read_config_file,
    read_training_record,
    recorded_beta,
)
from dpo_ext.safe_files import (
    convert_adapter_hint,
    pickled_weights_error,
    read_adapter_config,
    scrub_config,
    verify_safetensors,
)
from dpo_ext.settings import positive

logger = logging.getLogger(__name__)

PICKLED_ARGS = "training_args.bin"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.json",
    "vocab.txt", "merges.txt", "tokenizer.model", "spiece.model", "chat_template.jinja", "chat_template.json",
)


@dataclass
class AdapterInfo:
    """What a published adapter folder says about itself, checked for agreement with what the caller passed."""

    adapter_config: dict  # as it will be published: `base_model_name_or_path` is the Hub id
    base_model: str
    beta: float
    training_config: dict
    tokenizer_files: list[str]  # names, in `TOKENIZER_FILES` order, of those the folder has
    reference_record: dict | None = None  # `dpo_ext_reference.json`: the reference it was trained against
    trained_from: str | None = None  # `base_model_name_or_path` as recorded: often the local folder of the base


def inspect_adapter(
    adapter_dir: str | Path,
    *,
    base_model: str | None = None,
    beta: float | None = None,
    training_config: Mapping | str | Path | None = None,
    secrets: Sequence[str] = (),
) -> AdapterInfo:
    """Read `adapter_config.json` and the training config of `adapter_dir`, and check that they agree with the
    `base_model` and `beta` the caller passed (either may be left out: then the folder's value is used).

    A `base_model_name_or_path` that is a local path (training from a downloaded copy) is replaced by `base_model`
    in the published config, so that `AutoPeftModelForCausalLM.from_pretrained(repo_id)` finds the base model.

    Raises:
        `FileNotFoundError`: no `adapter_config.json`.
        `ValueError`: base model or beta disagree with the folder, or are unknown.
    """
    adapter_dir = Path(adapter_dir)
    config_path = adapter_dir / "adapter_config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} not found: pass the folder written by `trainer.save_model()` or "
                                "`peft_model.save_pretrained()`")
    adapter_config = read_adapter_config(config_path)
    trained_from = adapter_config.get("base_model_name_or_path")
    base_model = _base_model(config_path, trained_from, base_model)
    adapter_config["base_model_name_or_path"] = base_model
    beta = positive("beta", beta) if beta is not None else None
    config_source = _config_source(adapter_dir, training_config)
    training_config = read_training_config(adapter_dir, training_config, secrets)
    beta = _training_beta(adapter_dir, beta, training_config, config_source)
    tokenizer_files = [name for name in TOKENIZER_FILES if (adapter_dir / name).is_file()]
    record = read_training_record(adapter_dir)  # what PLDPOTrainer recorded of the reference: source, fingerprint
    return AdapterInfo(adapter_config, base_model, beta, training_config, tokenizer_files,
                       None if record is None else record.fields, trained_from)


def _config_source(adapter_dir: Path, training_config) -> str:
    """How to name the training config in a message: its file, or "training_config" for a dict."""
    if isinstance(training_config, Mapping):
        return "training_config"
    if training_config is not None:
        return str(training_config)
    return str(folder_config_file(adapter_dir) or "the training config")


def _base_model(config_path: Path, recorded: str | None, base_model: str | None) -> str:
    """The Hub id to publish as the base model: `base_model` when given (it must match a recorded Hub id), else the
    recorded one, which must then be a Hub id."""
    recorded_is_hub_id = bool(recorded) and looks_like_hub_id(recorded) and not Path(recorded).exists()
    if base_model is None:
        if not recorded_is_hub_id:
            raise ValueError(f"{config_path} records base_model_name_or_path={recorded!r}, which is not a Hub model "
                             "id: pass base_model='namespace/name' (the Hub id of the model the adapter was trained "
                             "on)")
        return recorded
    passed, base_model = base_model, base_model.rstrip("/")
    if recorded_is_hub_id and base_model != recorded:
        raise ValueError(f"base model mismatch: you passed base_model={passed!r} but {config_path} says "
                         f"base_model_name_or_path={recorded!r}; the card must name the model the adapter was trained "
                         "on: drop base_model or correct it")
    # A local copy cannot be checked against a Hub id; its folder name usually matches the model name.
    if recorded and not recorded_is_hub_id and Path(recorded).name != base_model.split("/")[-1]:
        logger.info("%s was trained on the local model %s; publishing it as an adapter for %s", config_path.parent,
                    recorded, base_model)
    return base_model


def _training_beta(adapter_dir: Path, beta: float | None, training_config: dict, config_source: str) -> float:
    """The DPO beta of the run: `beta` (already checked) when given, which must match a recorded one, else the
    recorded one (the training record's, else the training config's: `dpo_ext.reference.record.recorded_beta`)."""
    recorded = recorded_beta(adapter_dir, training_config, config_source)
    if beta is not None:
        check_beta(beta, recorded, "the implicit reward is only meaningful with the beta used in training: drop "
                                   "beta or correct it")
    if not training_config and (adapter_dir / PICKLED_ARGS).is_file():
        if beta is None and recorded is None:
            raise ValueError(f"beta is unknown: {adapter_dir} has no training_config.yaml or training_config.json, "
                             f"and {pickled_args_advice()}")
        logger.warning("%s has no training_config.yaml or training_config.json, and %s. The card will show no "
                       "training settings.", adapter_dir, pickled_args_advice())
    if beta is None and recorded is None:
        raise ValueError(f"beta is unknown: the training config of {adapter_dir} records none; pass beta=... "
                         "(the value used in training)")
    return float(beta if beta is not None else recorded.value)


def adapter_weights(adapter_dir: Path) -> Path:
    """`adapter_model.safetensors` of `adapter_dir`, verified in full.

    Raises:
        `FileNotFoundError`: no weights; `ValueError`: only pickled (`.bin`) weights, or a truncated or corrupt file.
    """
    weights = adapter_dir / "adapter_model.safetensors"
    if not weights.is_file():
        if (adapter_dir / "adapter_model.bin").is_file():
            raise pickled_weights_error(str(adapter_dir), weights.name, convert_adapter_hint(), "adapter_model.bin")
        raise FileNotFoundError(f"no adapter_model.safetensors in {adapter_dir}: pass the folder written by "
                                "`trainer.save_model()` or `peft_model.save_pretrained()`")
    # A truncated or corrupt file (an interrupted save) is caught here, not by the people who download it.
    verify_safetensors(weights)
    return weights


def read_training_config(
    adapter_dir: str | Path, training_config: Mapping | str | Path | None = None, secrets: Sequence[str] = ()
) -> dict:
    """The training configuration to publish, from (first found):

    1. `training_config`: a dict, or a `.yaml`/`.yml`/`.json` file;
    2. `training_config.yaml` or `training_config.json` in `adapter_dir` (`PLDPOTrainer` writes the JSON).

    `training_args.bin` is never read: it is a pickle, and unpickling a downloaded file can run any code in it
    (see `inspect_adapter` for what a folder that has only that is told).

    Returns an empty dict when none exists. Token fields and the `secrets` are removed (see `scrub_config`); a
    recorded `beta` is checked as in training (a finite number > 0).
    """
    if isinstance(training_config, Mapping):
        return _checked_beta(scrub_config(training_config, secrets), "training_config")
    if training_config is not None:
        return _read_config_file(existing_file(training_config, "training config"), secrets)
    for path in (Path(adapter_dir) / name for name in CONFIG_FILES):
        if path.is_file():
            return _read_config_file(path, secrets)
    return {}


def _read_config_file(path: Path, secrets: Sequence[str]) -> dict:
    return scrub_config(read_config_file(path), secrets)


def _checked_beta(config: dict, source: str) -> dict:
    """`config` with its `beta` (when it records one) checked: a finite number > 0, as in training."""
    if config.get("beta") is not None:
        config["beta"] = positive(f"beta in {source}", config["beta"])
    return config


def pickled_args_advice() -> str:
    """What a folder whose only record of the training settings is `training_args.bin` should do instead."""
    return (f"{PICKLED_ARGS} is never read (it is a pickle, and unpickling a file can run any code in it); pass the "
            "training settings as a YAML or JSON file instead (`--config FILE.yaml`, or training_config=), or at "
            "least the DPO beta (`--beta`, or beta=)")


def dataset_names(training_config: Mapping) -> list[str]:
    """Training data named in the config (TRL's `dataset_name`, or a `datasets` list)."""
    names = training_config.get("datasets") or training_config.get("dataset_name") or []
    return [names] if isinstance(names, str) else [str(name) for name in names]


def read_eval_results(eval_results: Mapping | str | Path | None) -> dict:
    """Evaluation metrics as a {name: value} dict of plain JSON values, from a dict or a JSON file. Results on
    benchmarks are under ``"benchmarks"``, by dataset id (see `dpo_ext.hub.eval_results.split_eval_results`).

    Raises:
        `ValueError`: naming the file, when it is not a JSON object or its ``"benchmarks"`` is malformed, or the
            metric, when a value is not finite.
    """
    if eval_results is None:
        return {}
    source = "eval_results"
    if not isinstance(eval_results, Mapping):
        path = source = existing_file(eval_results, "eval results")
        try:
            eval_results = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON: {error}") from None
        if not isinstance(eval_results, Mapping):
            raise ValueError(f"{path}: expected a JSON object of metric names to values")
    eval_results = scrub_config(eval_results)  # numpy / torch scalars become numbers JSON and YAML can write
    metrics, by_benchmark = split_eval_results(eval_results, str(source))
    groups = [("", metrics)] + [(f" (on {dataset_id})", results) for dataset_id, results in by_benchmark.items()]
    for where, results in groups:
        for name, value in results.items():
            # JSON readers accept NaN and Infinity; a published NaN metric misleads everyone who reads the card.
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"eval result {name!r}{where} in {source} is {value}, expected a finite number: "
                                 "re-run the evaluation, or leave that metric out")
    return eval_results


def check_plots(plots: Sequence[str | Path]) -> list[Path]:
    """`plots` as paths, after checking that each is a PNG file and that no two share a name (they are published
    side by side under `plots/`)."""
    checked = []
    for plot in (existing_file(p, "plot") for p in plots):
        with plot.open("rb") as file:
            if file.read(8) != _PNG_MAGIC:
                raise ValueError(f"plot {plot} is not a PNG file: save it with `savefig('{plot.stem}.png')`")
        if plot.name in {p.name for p in checked}:
            raise ValueError(f"two plots are named {plot.name!r}; they would overwrite each other under plots/")
        checked.append(plot)
    return checked
