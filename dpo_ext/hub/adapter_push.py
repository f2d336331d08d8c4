"""Publishing a trained adapter: its card, the exact folder that gets uploaded ("staging"), and the push.

What is staged is an allowlist: adapter weights (safetensors only, verified in full), `adapter_config.json`
(base model set to its Hub id), tokenizer files, and the files we write (card, training config, evaluation results,
their `.eval_results/` files for a benchmark's leaderboard, plots). Optimizer and scheduler state, `checkpoint-*/`,
`training_args.bin`, `.bin` weights and a frozen reference-adapter copy (`ref/`, written by TRL when it clones the
adapter as the reference) are never published.
Reading and checking the folder's files is `dpo_ext.hub.adapter_files`, the staged folder's mechanics
`dpo_ext.hub.staged_folder`, the upload itself `dpo_ext.hub.publish`.
"""

import logging
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path

import yaml

from dpo_ext.hub.adapter_files import (
    AdapterInfo,
    adapter_weights,
    check_plots,
    dataset_names,
    inspect_adapter,
    read_eval_results,
)
from dpo_ext.hub.base_model import base_model_facts
from dpo_ext.hub.cards import render_model_card
from dpo_ext.hub.eval_results import HubBenchmark, eval_results_files, unpublished_benchmark_results
from dpo_ext.hub.publish import PushResult, publish_folder
from dpo_ext.hub.staged_folder import (
    StagedFile,
    copy_file,
    list_folder,
    resolve_staging,
    write_card,
    write_file,
    write_json,
)
from dpo_ext.reference.record import RECORD_FILE

logger = logging.getLogger(__name__)


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
    """The card of the adapter in `adapter_dir`, from its files and checked against them (see
    `dpo_ext.hub.adapter_files.inspect_adapter`).

    Args:
        adapter_dir (`str` or `Path`): a saved PEFT adapter folder.
        repo_id (`str`): where it will be published.
        base_model (`str`, *optional*), beta (`float`, *optional*): checked against the folder.
        training_config (`dict` or path, *optional*): see `dpo_ext.hub.adapter_files.read_training_config`.
        eval_results (`dict` or path to JSON, *optional*): metric name -> value; results on a benchmark under
            ``"benchmarks"``, by dataset id (see `dpo_ext.hub.eval_results`).
        plots (`Sequence`): PNG files; they are referenced as `plots/<file name>`, where staging puts them.
        card_kwargs: passed to [`render_model_card`] (`datasets`, `license`, `eval_dataset`, `eval_split`,
            `num_completions`, `hub_benchmarks`).

    Returns:
        `huggingface_hub.ModelCard`.
    """
    info = inspect_adapter(adapter_dir, base_model=base_model, beta=beta, training_config=training_config)
    return _card(info, repo_id, read_eval_results(eval_results), [Path(p) for p in plots], card_kwargs)


def _card(info: AdapterInfo, repo_id: str, eval_results: dict, plots: list[Path], card_kwargs: dict):
    card_kwargs = {"datasets": dataset_names(info.training_config), **card_kwargs}
    if not card_kwargs.get("base_model_parameters") or not card_kwargs.get("base_model_license"):
        # The base model's size and stated license, from its files where this machine has them (the local folder it
        # was trained from, or the Hub cache): a card must say how big the model is, and no license is made up.
        facts = base_model_facts(info.trained_from, info.base_model)
        card_kwargs.setdefault("base_model_parameters", facts.parameters)
        card_kwargs.setdefault("base_model_license", facts.license)
    return render_model_card(
        repo_id=repo_id, base_model=info.base_model, beta=info.beta, training_config=info.training_config,
        adapter_config=info.adapter_config, eval_results=eval_results, plots=[f"plots/{p.name}" for p in plots],
        includes_tokenizer=bool(info.tokenizer_files), reference_record=info.reference_record, **card_kwargs,
    )


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
    hub_benchmarks: Sequence[HubBenchmark] = (),
    **card_kwargs,
) -> list[StagedFile]:
    """Write into `staging_dir` exactly what gets published for the adapter in `adapter_dir`:

    `adapter_model.safetensors`, `adapter_config.json` (base model set to its Hub id), tokenizer files,
    `training_config.yaml`, `eval_results.json`, `.eval_results/*.yaml` (results on a registered Hub benchmark, see
    `dpo_ext.hub.eval_results`), `plots/*.png` and the `README.md` card. Nothing else from
    `adapter_dir` is copied (no optimizer/scheduler/rng state, `checkpoint-*/`, `training_args.bin`, `.bin`
    weights, `ref/`), and `adapter_dir` itself is only read. Everything is checked before the first file is written.

    Args:
        adapter_dir (`str` or `Path`): the saved PEFT adapter.
        staging_dir (`str` or `Path`): a new or empty folder outside `adapter_dir`.
        repo_id (`str`): the target repository, named in the card's code samples.
        base_model, beta, training_config: checked against the folder, see
            `dpo_ext.hub.adapter_files.inspect_adapter`.
        eval_results (`dict` or path to JSON, *optional*): metric name -> value; defaults to the folder's own
            `eval_results.json` when it has one. Results on a benchmark go under ``"benchmarks"``, by dataset id:
            ``{"benchmarks": {"allenai/reward-bench-2": {"overall": 0.71}}}``; the card's `model-index` and, for a
            benchmark registered on the Hub, its `.eval_results/` file are both rendered from these numbers.
        plots (`Sequence`): PNG files to publish under `plots/` and embed in the card; defaults to the folder's
            own `plots/*.png`.
        secrets (`Sequence[str]`): strings (the Hub token) that must not appear in the published files.
        hub_benchmarks (`Sequence[HubBenchmark]`): benchmarks registered on the Hub, with their task ids, added to
            (or replacing entries of) `dpo_ext.hub.eval_results.KNOWN_BENCHMARKS`.
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
    weights = adapter_weights(adapter_dir)
    info = inspect_adapter(adapter_dir, base_model=base_model, beta=beta, training_config=training_config,
                           secrets=secrets)
    plots = check_plots(plots)
    eval_results = read_eval_results(eval_results)
    card = _card(info, repo_id, eval_results, plots, {**card_kwargs, "hub_benchmarks": hub_benchmarks})
    leaderboard_files = eval_results_files(eval_results, hub_benchmarks)
    _write_files(staging_dir, adapter_dir, weights, info, eval_results, plots)
    for path, text in leaderboard_files.items():
        write_file(staging_dir, path, text)
    for reason in unpublished_benchmark_results(eval_results, hub_benchmarks):
        logger.info("%s", reason)
    write_card(staging_dir, card, secrets)
    _log_left_out(adapter_dir, {weights.name, "adapter_config.json", "dpo_ext_reference.json", *info.tokenizer_files})
    return list_folder(staging_dir)


def _write_files(staging_dir: Path, adapter_dir: Path, weights: Path, info: AdapterInfo, eval_results: dict,
                 plots: list[Path]) -> None:
    """Everything but the card, once all of it has been checked."""
    copy_file(staging_dir, weights, weights.name)
    write_json(staging_dir, "adapter_config.json", info.adapter_config)
    for name in info.tokenizer_files:
        copy_file(staging_dir, adapter_dir / name, name)
    if info.training_config:
        write_file(staging_dir, "training_config.yaml",
                   yaml.safe_dump(info.training_config, sort_keys=False, allow_unicode=True))
    if eval_results:
        write_json(staging_dir, "eval_results.json", eval_results)
    if info.reference_record is not None:  # the scorer reads it to pick (or refuse) the reference
        write_json(staging_dir, RECORD_FILE, info.reference_record)
    for plot in plots:
        copy_file(staging_dir, plot, f"plots/{plot.name}")


def _log_left_out(adapter_dir: Path, published: set[str]) -> None:
    # Say what stayed behind, so that nobody wonders whether checkpoints or optimizer state were uploaded.
    left_out = sorted(p.name + ("/" if p.is_dir() else "") for p in adapter_dir.iterdir() if p.name not in published)
    if left_out:
        logger.info("Not published from %s: %s", adapter_dir, ", ".join(left_out))


def push_adapter(
    adapter_dir: str | Path,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    dry_run: bool | str | Path = False,
    eval_results: Mapping | str | Path | None = None,
    training_config: Mapping | str | Path | None = None,
    plots: Sequence[str | Path] = (),
    base_model: str | None = None,
    beta: float | None = None,
    hub_benchmarks: Sequence[HubBenchmark] = (),
    endpoint: str | None = None,
    commit_message: str = "Upload aligned adapter with dpo_ext",
    max_attempts: int = 4,
    retry_delay: float = 2.0,
    **card_kwargs,
) -> PushResult:
    """Publish a trained adapter with its card, training config, evaluation results and plots, in one commit.

    The token is checked first (so a missing or read-only token fails before any work), then the exact folder to
    upload is staged in a temporary directory (the user's folder is only read) and uploaded in one commit; see
    `dpo_ext.hub.publish.publish_folder`.

    Args:
        adapter_dir (`str` or `Path`): the folder written by `trainer.save_model()` / `peft_model.save_pretrained()`.
        repo_id (`str`): `namespace/name` (or `name`, for the token owner's namespace).
        token (`str`, *optional*): defaults to `HF_TOKEN` or the token saved by `hf auth login`.
        private (`bool`): create the repository as private (no effect on an existing one); otherwise the
            namespace's default visibility applies.
        dry_run (`bool`, `str` or `Path`): a folder path to stage into without touching the network (`True`: a new
            temporary folder). The staged folder is exactly what a real push sends.
        eval_results (`dict` or path to JSON, *optional*): metric name -> value (ground-truth reward, KL,
            preference accuracy, win rate, ...); numeric ones go to the card's `model-index`. Results on a benchmark
            go under ``"benchmarks"``, by dataset id (``{"benchmarks": {"allenai/reward-bench-2": {...}}}``): for a
            benchmark registered on the Hub, the same numbers also go to its `.eval_results/` file, which puts the
            adapter on the benchmark's leaderboard (see `dpo_ext.hub.eval_results`).
        training_config (`dict` or path to YAML/JSON, *optional*): defaults to `training_config.yaml` or
            `training_config.json` in `adapter_dir`. `training_args.bin` is never read (it is a pickle).
        plots (`Sequence`): PNG files to publish under `plots/` and embed in the card.
        base_model (`str`, *optional*), beta (`float`, *optional*): must agree with `adapter_config.json` and the
            training config; required when those do not record them.
        hub_benchmarks (`Sequence[HubBenchmark]`): benchmarks registered on the Hub and their task ids, beyond
            `dpo_ext.hub.eval_results.KNOWN_BENCHMARKS`.
        endpoint (`str`, *optional*): Hub URL; defaults to `HF_ENDPOINT` or https://huggingface.co.
        commit_message (`str`): message of the commit.
        max_attempts (`int`), retry_delay (`float`): attempts on transient errors and the first delay in seconds
            (it doubles each time).
        card_kwargs: passed to `dpo_ext.hub.cards.render_model_card` (`datasets`, `license`, `eval_dataset`,
            `eval_split`, `num_completions`).

    Returns:
        `PushResult`: the repository, the files with their sizes, and the commit URL (`None` for a dry run).

    Raises:
        `HubAccessError`: before anything else, when the token is missing or cannot write to `repo_id`.
        `ValueError` / `FileNotFoundError`: the folder is not publishable (only `.bin` weights, truncated or corrupt
            safetensors, beta unknown), or `base_model` / `beta` disagree with it.
        `HubUploadError`: the Hub refused the upload or kept failing; the local folder is unchanged, re-run to retry.
    """
    stage = partial(stage_adapter_folder, adapter_dir, base_model=base_model, beta=beta,
                    training_config=training_config, eval_results=eval_results, plots=plots,
                    hub_benchmarks=hub_benchmarks, **card_kwargs)
    return publish_folder(stage, repo_id, repo_type="model", token=token, private=private, dry_run=dry_run,
                          endpoint=endpoint, commit_message=commit_message, max_attempts=max_attempts,
                          retry_delay=retry_delay)
