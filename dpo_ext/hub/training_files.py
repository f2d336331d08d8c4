"""The files that describe a training run and are published with its adapter: the training config, the evaluation
results and the plots, each checked before anything is staged.

Nothing here is ever unpickled: the folder may have been downloaded, and unpickling runs code. The training config
is read from `training_config.yaml`/`.json` (`PLDPOTrainer` writes the JSON at every save) or from a file the caller
names; `training_args.bin` is never opened.
"""

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from dpo_ext.data.files import existing_file
from dpo_ext.hub.benchmarks import split_eval_results
from dpo_ext.reference.record import CONFIG_FILES, read_config_file
from dpo_ext.safe_files import scrub_config
from dpo_ext.settings import positive

PICKLED_ARGS = "training_args.bin"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def read_training_config(
    adapter_dir: str | Path, training_config: Mapping | str | Path | None = None, secrets: Sequence[str] = ()
) -> dict:
    """The training configuration to publish, from (first found):

    1. `training_config`: a dict, or a `.yaml`/`.yml`/`.json` file;
    2. `training_config.yaml` or `training_config.json` in `adapter_dir` (`PLDPOTrainer` writes the JSON).

    `training_args.bin` is never read: it is a pickle, and unpickling a downloaded file can run any code in it
    (see `dpo_ext.hub.adapter_folder.inspect_adapter` for what a folder that has only that is told).

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
    benchmarks are under ``"benchmarks"``, by dataset id (see `dpo_ext.hub.benchmarks.split_eval_results`).

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
