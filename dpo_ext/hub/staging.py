"""Read a trained adapter folder or a folder of generated preference data, check it, and build the exact folder
that gets uploaded ("staging").

Staging copies into a separate folder, so the user's folder is never modified and an interrupted upload can simply
be re-run. What is copied is an allowlist: adapter weights (safetensors only), `adapter_config.json`, tokenizer
files, and the files we write (card, training config, evaluation results, plots). Optimizer and scheduler state,
`checkpoint-*/`, `training_args.bin`, `.bin` weights and a frozen reference-adapter copy (`ref/`, written by TRL
when it clones the adapter as the reference) are never published.

Nothing in the folder is ever unpickled: it may have been downloaded, and unpickling runs code. The training config
is read from `training_config.yaml`/`.json` (the trainer writes the JSON at every save) or from a file the caller
names; `training_args.bin` is never opened. The weights are verified in full before they are staged
(`dpo_ext.safe_files.verify_safetensors`), so a truncated file is never published.
"""

import json
import logging
import math
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from dpo_ext.hub.cards import plain, render_model_card
from dpo_ext.hub.ids import looks_like_hub_id
from dpo_ext.safe_files import (
    convert_adapter_hint,
    pickled_weights_error,
    read_adapter_config,
    redact,
    scrub_config,
    verify_safetensors,
)
from dpo_ext.settings import positive

logger = logging.getLogger(__name__)

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_PICKLED_ARGS = "training_args.bin"


def read_training_config(
    adapter_dir: str | Path, training_config: Mapping | str | Path | None = None, secrets: Sequence[str] = ()
) -> dict:
    """The training configuration to publish, from (first found):

    1. `training_config`: a dict, or a `.yaml`/`.yml`/`.json` file;
    2. `training_config.yaml` or `training_config.json` in `adapter_dir` (`PLDPOTrainer` writes the JSON).

    `training_args.bin` is never read: it is a pickle, and unpickling a downloaded file can run any code in it
    (see [`inspect_adapter`] for what a folder that has only that is told).

    Returns an empty dict when none exists. Token fields and the `secrets` are removed (see [`scrub_config`]).
    """
    adapter_dir = Path(adapter_dir)
    if isinstance(training_config, Mapping):
        return _checked_beta(scrub_config(training_config, secrets), "training_config")
    candidates = [Path(training_config)] if training_config is not None else [
        adapter_dir / "training_config.yaml", adapter_dir / "training_config.json"]
    for path in candidates:
        if path.is_file():
            try:
                loaded = yaml.safe_load(path.read_text(encoding="utf-8"))  # YAML is a superset of JSON
            except yaml.YAMLError as error:
                mark = getattr(error, "problem_mark", None)
                where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
                raise ValueError(f"{path} is not valid YAML or JSON ({where}{getattr(error, 'problem', None) or error})"
                                 ": fix the file, or pass another one (`--config FILE.yaml`, or training_config=)"
                                 ) from None
            if not isinstance(loaded, Mapping):
                raise ValueError(f"{path}: expected a mapping of training settings, got {type(loaded).__name__}")
            return _checked_beta(scrub_config(loaded, secrets), str(path))
        if training_config is not None:
            raise FileNotFoundError(f"training config {path} does not exist")
    return {}


def _checked_beta(config: dict, source: str) -> dict:
    """`config` with its `beta` (when it records one) checked: a finite number > 0, as in training."""
    if config.get("beta") is not None:
        config["beta"] = positive(f"beta in {source}", config["beta"])
    return config


def _pickled_args_advice() -> str:
    return (f"{_PICKLED_ARGS} is never read (it is a pickle, and unpickling a file can run any code in it); pass the "
            "training settings as a YAML or JSON file instead (`--config FILE.yaml`, or training_config=), or at "
            "least the DPO beta (`--beta`, or beta=)")


def read_eval_results(eval_results: Mapping | str | Path | None) -> dict:
    """Evaluation metrics as a flat {name: value} dict, from a dict or a JSON file."""
    if eval_results is None:
        return {}
    source = "eval_results"
    if not isinstance(eval_results, Mapping):
        path = source = Path(eval_results)
        try:
            eval_results = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON: {error}") from None
        if not isinstance(eval_results, Mapping):
            raise ValueError(f"{path}: expected a JSON object of metric names to values")
    eval_results = plain(dict(eval_results))
    for name, value in eval_results.items():
        # JSON readers accept NaN and Infinity; a published NaN metric misleads everyone who reads the card.
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"eval result {name!r} in {source} is {value}, expected a finite number: re-run the "
                             "evaluation, or leave that metric out")
    return eval_results



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
    recorded = adapter_config.get("base_model_name_or_path")
    recorded_is_hub_id = bool(recorded) and looks_like_hub_id(recorded) and not Path(recorded).exists()
    if base_model is None and not recorded_is_hub_id:
        raise ValueError(f"{config_path} records base_model_name_or_path={recorded!r}, which is not a Hub model id: "
                         "pass base_model='namespace/name' (the Hub id of the model the adapter was trained on)")
    if base_model is not None and recorded_is_hub_id and base_model.rstrip("/") != recorded:
        raise ValueError(f"base model mismatch: you passed base_model={base_model!r} but {config_path} says "
                         f"base_model_name_or_path={recorded!r}; the card must name the model the adapter was trained "
                         "on: drop base_model or correct it")
    if base_model is not None and recorded and not recorded_is_hub_id:
        # A local copy cannot be checked against a Hub id; its folder name usually matches the model name.
        if Path(recorded).name != base_model.rstrip("/").split("/")[-1]:
            logger.info("%s was trained on the local model %s; publishing it as an adapter for %s", adapter_dir,
                           recorded, base_model)
    base_model = recorded if base_model is None else base_model.rstrip("/")
    adapter_config["base_model_name_or_path"] = base_model

    beta = positive("beta", beta) if beta is not None else None
    training_config = read_training_config(adapter_dir, training_config, secrets)
    recorded_beta = training_config.get("beta")
    if beta is not None and recorded_beta is not None and not math.isclose(beta, recorded_beta):
        raise ValueError(f"beta mismatch: you passed beta={beta} but the training config says beta={recorded_beta}; "
                         "the implicit reward is only meaningful with the beta used in training")
    if not training_config and (adapter_dir / _PICKLED_ARGS).is_file():
        if beta is None:
            raise ValueError(f"beta is unknown: {adapter_dir} has no training_config.yaml or training_config.json, "
                             f"and {_pickled_args_advice()}")
        logger.warning("%s has no training_config.yaml or training_config.json, and %s. The card will show no "
                       "training settings.", adapter_dir, _pickled_args_advice())
    if beta is None and recorded_beta is None:
        raise ValueError(f"beta is unknown: the training config of {adapter_dir} records none; pass beta=... "
                         "(the value used in training)")
    return AdapterInfo(adapter_config, base_model, float(beta if beta is not None else recorded_beta), training_config)


def build_model_card(
    adapter_dir: str | Path,
    repo_id: str,
    *,
    base_model: str | None = None,
    beta: float | None = None,
    training_config: Mapping | str | Path | None = None,
    eval_results: Mapping | str | Path | None = None,
    plots: Sequence[str | Path] = (),
    **card_kwargs,
):
    """The card of the adapter in `adapter_dir`, from its files and checked against them (see [`inspect_adapter`]).

    Args:
        adapter_dir (`str` or `Path`): a saved PEFT adapter folder.
        repo_id (`str`): where it will be published.
        base_model (`str`, *optional*), beta (`float`, *optional*): checked against the folder.
        training_config (`dict` or path, *optional*): see [`read_training_config`].
        eval_results (`dict` or path to JSON, *optional*): metric name -> value.
        plots (`Sequence`): PNG files; they are referenced as `plots/<file name>`, where staging puts them.
        card_kwargs: passed to [`render_model_card`] (`datasets`, `license`, `eval_dataset`, `eval_split`,
            `num_completions`).

    Returns:
        `huggingface_hub.ModelCard`.
    """
    info = inspect_adapter(adapter_dir, base_model=base_model, beta=beta, training_config=training_config)
    return _card(Path(adapter_dir), info, repo_id, read_eval_results(eval_results), [Path(p).name for p in plots],
                 card_kwargs)


def _card(adapter_dir: Path, info: AdapterInfo, repo_id: str, eval_results: dict, plot_names: list[str],
          card_kwargs: dict):
    card_kwargs = {"datasets": dataset_names(info.training_config), **card_kwargs}
    return render_model_card(
        repo_id=repo_id, base_model=info.base_model, beta=info.beta, training_config=info.training_config,
        adapter_config=info.adapter_config, eval_results=eval_results, plots=[f"plots/{n}" for n in plot_names],
        includes_tokenizer=any((adapter_dir / name).is_file() for name in TOKENIZER_FILES), **card_kwargs,
    )


def dataset_names(training_config: Mapping) -> list[str]:
    """Training data named in the config (TRL's `dataset_name`, or a `datasets` list)."""
    names = training_config.get("datasets") or training_config.get("dataset_name") or []
    return [names] if isinstance(names, str) else [str(name) for name in names]


@dataclass(frozen=True)
class StagedFile:
    path: str  # inside the repository, with "/" separators
    size: int  # bytes


def list_folder(folder: str | Path) -> list[StagedFile]:
    """Every file under `folder`, sorted, as `upload_folder` will send them."""
    folder = Path(folder)
    paths = sorted(p for p in folder.rglob("*") if p.is_file())
    return [StagedFile(p.relative_to(folder).as_posix(), p.stat().st_size) for p in paths]


def stage_adapter_folder(
    adapter_dir: str | Path,
    staging_dir: str | Path,
    *,
    repo_id: str,
    base_model: str | None = None,
    beta: float | None = None,
    training_config: Mapping | str | Path | None = None,
    eval_results: Mapping | str | Path | None = None,
    plots: Sequence[str | Path] = (),
    secrets: Sequence[str] = (),
    **card_kwargs,
) -> list[StagedFile]:
    """Write into `staging_dir` exactly what gets published for the adapter in `adapter_dir`:

    `adapter_model.safetensors`, `adapter_config.json` (base model set to its Hub id), tokenizer files,
    `training_config.yaml`, `eval_results.json`, `plots/*.png` and the `README.md` card. Nothing else from
    `adapter_dir` is copied (no optimizer/scheduler/rng state, `checkpoint-*/`, `training_args.bin`, `.bin`
    weights, `ref/`), and `adapter_dir` itself is only read.

    Args:
        adapter_dir (`str` or `Path`): the saved PEFT adapter.
        staging_dir (`str` or `Path`): a new or empty folder outside `adapter_dir`.
        repo_id (`str`): the target repository, named in the card's code samples.
        base_model, beta, training_config: checked against the folder, see [`inspect_adapter`].
        eval_results (`dict` or path to JSON, *optional*): metric name -> value; defaults to the folder's own
            `eval_results.json` when it has one.
        plots (`Sequence`): PNG files to publish under `plots/` and embed in the card; defaults to the folder's
            own `plots/*.png`.
        secrets (`Sequence[str]`): strings (the Hub token) that must not appear in the published files.
        card_kwargs: passed to [`render_model_card`].

    Returns:
        `list[StagedFile]`: the staged files, sorted by path.
    """
    adapter_dir, staging_dir = resolve_staging(adapter_dir, staging_dir, "adapter")
    # What the folder carries itself is published unless the caller says otherwise (a recipe writes both).
    if eval_results is None and (adapter_dir / "eval_results.json").is_file():
        eval_results = adapter_dir / "eval_results.json"
    if not plots and (adapter_dir / "plots").is_dir():
        plots = sorted((adapter_dir / "plots").glob("*.png"))
    weights = _adapter_weights(adapter_dir)
    info = inspect_adapter(adapter_dir, base_model=base_model, beta=beta, training_config=training_config,
                           secrets=secrets)
    plots = _check_plots(plots)
    eval_results = read_eval_results(eval_results)
    card = _card(adapter_dir, info, repo_id, eval_results, [p.name for p in plots], card_kwargs)
    tokenizer_files = [name for name in TOKENIZER_FILES if (adapter_dir / name).is_file()]
    staging_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(weights, staging_dir / weights.name)
    (staging_dir / "adapter_config.json").write_text(json.dumps(info.adapter_config, indent=2) + "\n",
                                                     encoding="utf-8")
    for name in tokenizer_files:
        shutil.copyfile(adapter_dir / name, staging_dir / name)
    if info.training_config:
        (staging_dir / "training_config.yaml").write_text(
            yaml.safe_dump(info.training_config, sort_keys=False, allow_unicode=True), encoding="utf-8")
    if eval_results:
        (staging_dir / "eval_results.json").write_text(json.dumps(eval_results, indent=2) + "\n", encoding="utf-8")
    for plot in plots:
        (staging_dir / "plots").mkdir(exist_ok=True)
        shutil.copyfile(plot, staging_dir / "plots" / plot.name)
    (staging_dir / "README.md").write_text(redact(str(card), secrets), encoding="utf-8")

    published = {weights.name, "adapter_config.json", *tokenizer_files}
    left_out = sorted(p.name + ("/" if p.is_dir() else "") for p in adapter_dir.iterdir() if p.name not in published)
    if left_out:
        logger.info("Not published from %s: %s", adapter_dir, ", ".join(left_out))
    return list_folder(staging_dir)


def resolve_staging(source_dir, staging_dir, what: str) -> tuple[Path, Path]:
    """Resolved ``(source_dir, staging_dir)`` after checking that the source ``what`` folder exists and that staging
    can neither touch it nor mix with older files."""
    source_dir, staging_dir = Path(source_dir).resolve(), Path(staging_dir).resolve()
    if not source_dir.is_dir():
        raise FileNotFoundError(f"{what} folder {source_dir} does not exist")
    # Staging must not touch the source: it is what makes an interrupted upload safe to re-run.
    if staging_dir == source_dir or source_dir in staging_dir.parents or staging_dir in source_dir.parents:
        raise ValueError(f"staging folder {staging_dir} overlaps the source folder {source_dir}: choose a folder "
                         "outside it")
    if staging_dir.exists() and (not staging_dir.is_dir() or any(staging_dir.iterdir())):
        raise ValueError(f"staging folder {staging_dir} already exists and is not empty: choose a new folder or "
                         "delete it first")
    return source_dir, staging_dir


def _adapter_weights(adapter_dir: Path) -> Path:
    weights = adapter_dir / "adapter_model.safetensors"
    if not weights.is_file():
        if (adapter_dir / "adapter_model.bin").is_file():
            raise pickled_weights_error(str(adapter_dir), weights.name, convert_adapter_hint(), "adapter_model.bin")
        raise FileNotFoundError(f"no adapter_model.safetensors in {adapter_dir}: pass the folder written by "
                                "`trainer.save_model()` or `peft_model.save_pretrained()`")
    # A truncated or corrupt file (an interrupted save) is caught here, not by the people who download it.
    verify_safetensors(weights)
    return weights


def _check_plots(plots: Sequence[str | Path]) -> list[Path]:
    checked = []
    for plot in map(Path, plots):
        if not plot.is_file():
            raise FileNotFoundError(f"plot {plot} does not exist")
        with plot.open("rb") as file:
            if file.read(8) != _PNG_MAGIC:
                raise ValueError(f"plot {plot} is not a PNG file: save it with `savefig('{plot.stem}.png')`")
        if plot.name in {p.name for p in checked}:
            raise ValueError(f"two plots are named {plot.name!r}; they would overwrite each other under plots/")
        checked.append(plot)
    return checked
