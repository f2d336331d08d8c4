"""Model cards for aligned adapters and dataset cards for generated preference data.

A card is rendered from a Jinja template in `model_cards/` through `huggingface_hub.ModelCard.from_template` /
`DatasetCard.from_template`. Its YAML metadata carries a `model-index` built from `huggingface_hub.EvalResult`s, so
evaluation results show on the Hub page (TRL's own card has none); results on a registered Hub benchmark also go to
`.eval_results/` files, rendered from the same numbers by `dpo_ext.hub.eval_results`. Rendering only: no files are read
here except the templates (reading an adapter folder is `dpo_ext.hub.adapter_files`, staging and publishing
`dpo_ext.hub.adapter_push` and `dpo_ext.hub.datasets`).
"""

import importlib.metadata
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from dpo_ext.data.rows import CHOSEN, COMPLETIONS, PROMPT, RANKS, REJECTED, SCORES
from dpo_ext.hub.card_results import (
    BASELINE_KEY,
    NAMES,
    format_value,
    metric_rows,
    nested_tables,
    reported_metrics,
    settings_in_results,
)
from dpo_ext.hub.eval_results import HubBenchmark, benchmark_table, eval_results_files, split_eval_results
from dpo_ext.hub.licenses import card_license, check_license
from dpo_ext.locations import looks_like_hub_id

# Where the package comes from: it is not on PyPI, and pyproject.toml names no repository URL to `pip install git+`.
INSTALL = "pip install ."
_HYPERPARAMETERS = (
    "learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps",
    "lr_scheduler_type", "warmup_ratio", "warmup_steps", "weight_decay", "optim", "max_length", "max_prompt_length",
    "max_completion_length", "bf16", "on_policy_rounds", "round", "samples_per_prompt", "judge", "round_reference",
)
_BASELINES = {"preferred_ft": "Preferred-FT (fine-tuning on the best completion)",
              "unlikelihood": "unlikelihood training (best completion up, worst down)"}
_METHOD_NOTES = {
    "Plackett-Luce DPO": "Plackett-Luce DPO generalises DPO from one chosen/rejected pair to a ranking of K "
                         "completions: the loss is the negative log-likelihood of the observed ranking under a "
                         "Plackett-Luce model whose scores are the implicit rewards (Rafailov et al., 2023, appendix "
                         "A.3). With K = 2 it is DPO.",
    "DPO": None,
    "DPO on all pairs": "DPO on all pairs trains the sigmoid DPO loss on every strictly ordered pair of each ranked "
                        "list of completions, averaged over the list's pairs (Rafailov et al., 2023, Eq. 7).",
    "LiPO-lambda": "LiPO-lambda trains a pairwise logistic loss over every pair of completions with different labels, "
                   "each pair weighted by its LambdaLoss weight from the label gap and the pair's positions in the "
                   "implicit-reward order (Liu et al., 2024, LiPO, arXiv 2402.01878).",
}
_LISTWISE_NAMES = {"all_pairs": "DPO on all pairs", "lipo_lambda": "LiPO-lambda"}
# TRL's RL trainers (the recipes' RL baselines) record no loss type: named by trainer, with no K (their completions
# are sampled and scored, not ranked)
_RL_TRAINERS = {"RLOOTrainer": "RLOO (reinforcement learning on a reward, TRL's RLOOTrainer)",
                "GRPOTrainer": "GRPO (reinforcement learning on a reward, TRL's GRPOTrainer)"}
_BASELINE_NOTE = ("This is a baseline, not a preference-optimisation method: it is not trained through the implicit "
                  "reward, which is reported below for comparison only.")
_LORA_FIELDS = ("r", "lora_alpha", "lora_dropout", "target_modules", "bias")
_LIBRARIES = ("trl", "peft", "transformers", "torch", "huggingface_hub")


def template_path(name: str) -> Path:
    """Path of a card template: shipped inside the wheel as `dpo_ext/model_cards/`, or the repository's
    `model_cards/` folder in an editable install."""
    import dpo_ext

    for folder in (Path(dpo_ext.__file__).parent / "model_cards", Path(dpo_ext.__file__).parent.parent / "model_cards"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"card template {name!r} not found in dpo_ext/model_cards or the repository's model_cards/")


def describe_method(training_config: Mapping, num_completions: int | None = None) -> tuple[str, str | None, int | None]:
    """(method name, loss type, K) from the training config.

    The Plackett-Luce loss with K = 2 is exactly DPO, so it is named Plackett-Luce DPO only when more than two
    completions were ranked per prompt (or, with K unknown, when the loss says so). `preferred_ft` and
    `unlikelihood` are baselines, named as such; `all_pairs` and `lipo_lambda` by their own names; a run of TRL's
    RLOO or GRPO trainer (``training_config["trainer"]``) by its trainer, without K.
    """
    if training_config.get("trainer") in _RL_TRAINERS:
        return _RL_TRAINERS[training_config["trainer"]], None, None
    loss = training_config.get("loss_type")
    loss = ", ".join(map(str, loss)) if isinstance(loss, (list, tuple)) else loss
    k = num_completions if num_completions is not None else training_config.get("num_completions")
    k = int(k) if k is not None else None
    if loss in _BASELINES:
        return _BASELINES[loss], loss, k
    if loss in _LISTWISE_NAMES:
        return _LISTWISE_NAMES[loss], loss, k
    plackett_luce = k > 2 if k is not None else loss == "plackett_luce"
    return ("Plackett-Luce DPO" if plackett_luce else "DPO"), loss, k


def eval_results_to_card(metrics: Mapping, dataset: str, split: str | None = None,
                         hub_benchmarks: Sequence[HubBenchmark] = (), training_config: Mapping = {}) -> list:
    """One `huggingface_hub.EvalResult` per metric (`dpo_ext.hub.card_results.reported_metrics`: finite numbers that
    are not run settings, standard errors or counts; the rest stays in eval_results.json and the card's text): those
    of `metrics` on `dataset` (`split`), and those under ``metrics["benchmarks"]`` on each benchmark named there, with
    the split `dpo_ext.hub.eval_results.benchmark_table(hub_benchmarks)` gives it."""
    from huggingface_hub import EvalResult

    flat, by_benchmark = split_eval_results(metrics)
    table = benchmark_table(hub_benchmarks)
    groups = [(dataset, dataset, split, flat)]
    for dataset_id, results in by_benchmark.items():
        benchmark = table.get(dataset_id)
        groups.append((dataset_id, (benchmark and benchmark.name) or dataset_id, benchmark and benchmark.split,
                       results))
    return [
        EvalResult(task_type="text-generation", task_name="Preference alignment", dataset_type=dataset_type,
                   dataset_name=dataset_name, dataset_split=dataset_split, metric_type=key,
                   metric_name=NAMES.get(key, key), metric_value=value)
        for dataset_type, dataset_name, dataset_split, results in groups
        for key, value in reported_metrics(results, training_config).items()
    ]


def library_versions(training_config: Mapping) -> tuple[list[tuple[str, str]], str]:
    """Versions recorded in the training config (`library_versions`), else those installed now."""
    recorded = training_config.get("library_versions")
    if isinstance(recorded, Mapping) and recorded:
        return [(str(name), str(version)) for name, version in recorded.items()], "recorded at training time"
    import dpo_ext

    versions = [("dpo_ext", dpo_ext.__version__)]
    for name in _LIBRARIES:
        try:
            versions.append((name, importlib.metadata.version(name)))
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions, "installed when this card was written"


def render_model_card(
    *,
    repo_id: str,
    base_model: str,
    beta: float,
    training_config: Mapping,
    adapter_config: Mapping,
    eval_results: Mapping | None = None,
    plots: Sequence[str] = (),
    datasets: Sequence[str] = (),
    license: str | None = None,
    eval_dataset: str | None = None,
    eval_split: str | None = None,
    num_completions: int | None = None,
    includes_tokenizer: bool = True,
    hub_benchmarks: Sequence[HubBenchmark] = (),
    reference_record: Mapping | None = None,
    base_model_parameters: int | None = None,
    base_model_description: str | None = None,
    base_model_license: str | None = None,
    reward_model: str | None = None,
    data_license: str | None = None,
):
    """Render the card of an aligned adapter. Pure: no files are read; see
    `dpo_ext.hub.adapter_push.build_model_card` for that.

    Args:
        repo_id (`str`): where the adapter is published (`namespace/name`); used in the code samples.
        base_model (`str`): Hub id of the model the adapter was trained on.
        beta (`float`): the DPO β, needed to read the implicit reward.
        training_config (`Mapping`): training settings (hyper-parameters, `seed`, `loss_type`, `num_completions`).
        adapter_config (`Mapping`): the content of `adapter_config.json` (LoRA rank, targets, bias).
        eval_results (`Mapping`, *optional*): metric name -> value; numeric ones go to the `model-index`. Results on
            a benchmark go under ``"benchmarks"``: ``{"benchmarks": {"allenai/reward-bench-2": {"overall": 0.71}}}``
            (see `dpo_ext.hub.eval_results`).
        plots (`Sequence[str]`): paths, inside the repository, of PNG files to embed.
        datasets (`Sequence[str]`): training data, as used (a Hub id, or a description of another source); Hub
            ids (`namespace/name`) are also listed in the metadata.
        license (`str`, *optional*): license id (one the Hub knows, `dpo_ext.hub.licenses.HUB_LICENSES`). Without
            one, the license the base model's card and the data's record state (`base_model_license`,
            `data_license`) when they agree; else none, and the card says the license is unknown.
        eval_dataset (`str`, *optional*), eval_split (`str`, *optional*): what `eval_results` were measured on.
        num_completions (`int`, *optional*): K, when the training config does not record it.
        includes_tokenizer (`bool`): whether tokenizer files are published with the adapter.
        hub_benchmarks (`Sequence[HubBenchmark]`): benchmarks added to `dpo_ext.hub.eval_results.KNOWN_BENCHMARKS`.
        reference_record (`Mapping`, *optional*): `dpo_ext_reference.json` as `PLDPOTrainer` writes it: the
            reference source and the fingerprint of what it was (`dpo_ext.reference.fingerprint`).
        base_model_parameters (`int`, *optional*): the base model's parameter count (`dpo_ext.hub.base_model`
            counts it from its files); the card says when it is unknown.
        base_model_description (`str`, *optional*): what the base model is, e.g. that it is a toy trained from scratch.
        base_model_license (`str`, *optional*), data_license (`str`, *optional*): the licenses the base model's card
            and the training data state.
        reward_model (`str`, *optional*): what the ground-truth reward (and, for generated data, the ranking) is.

        The last five default to the training config's keys of the same names (a recipe records them there).

    Returns:
        `huggingface_hub.ModelCard`: `str(card)` is the README.md text.
    """
    from huggingface_hub import ModelCard, ModelCardData

    method, loss_type, k = describe_method(training_config, num_completions)
    recorded = {key: training_config.get(key) for key in ("base_model_parameters", "base_model_description",
                                                         "base_model_license", "reward_model", "data_license")}
    base_model_parameters = base_model_parameters or recorded["base_model_parameters"]
    base_model_description = base_model_description or recorded["base_model_description"]
    reward_model = reward_model or recorded["reward_model"]
    license, license_source = card_license(license, base_model_license or recorded["base_model_license"],
                                           data_license or recorded["data_license"])
    eval_results = dict(eval_results or {})
    flat_results, by_benchmark = split_eval_results(eval_results)
    eval_dataset = eval_dataset or (datasets[0] if datasets else None)
    model_name = repo_id.split("/")[-1]
    trainer = training_config.get("trainer")
    method_tag = trainer.removesuffix("Trainer").lower() if trainer in _RL_TRAINERS else "dpo"  # rloo, grpo
    tags = [method_tag, "trl", "peft", "lora", "dpo_ext"] + (["plackett-luce"] if method == "Plackett-Luce DPO" else [])
    card_data = ModelCardData(
        base_model=base_model, library_name="peft", license=license, pipeline_tag="text-generation", tags=tags,
        # Only namespaced Hub ids: a bare name ("movie-reviews"), a local path or a URL is no dataset the Hub can link.
        datasets=[d for d in datasets if _is_hub_dataset(d)] or None, model_name=model_name,
        eval_results=eval_results_to_card(eval_results, eval_dataset or "custom", eval_split, hub_benchmarks,
                                          training_config) or None,
    )
    baseline = flat_results.get(BASELINE_KEY)
    return _tidy(ModelCard, ModelCard.from_template(
        card_data,
        template_path=str(template_path("adapter_card.md")),
        repo_id=repo_id, model_name=model_name, base_model=base_model, beta=beta, method=method,
        method_note=_METHOD_NOTES.get(method, _BASELINE_NOTE), loss_type=loss_type, num_completions=k,
        datasets=list(datasets), base_model_url=f"https://huggingface.co/{base_model}",
        base_model_parameters=f"{int(base_model_parameters):,}" if base_model_parameters else None,
        base_model_description=base_model_description, reward_model=reward_model, license=license,
        license_source=license_source, install=INSTALL,
        eval_rows=metric_rows(flat_results, training_config, reward_model),
        eval_dataset=eval_dataset if flat_results else None, eval_split=eval_split,
        baseline_name=(baseline.get("name") or "recorded in eval_results.json") if isinstance(baseline, Mapping)
        else None, result_tables=nested_tables(flat_results),
        benchmark_groups=_benchmark_groups(by_benchmark, eval_results, hub_benchmarks, training_config),
        plots=[{"path": p, "stem": Path(p).stem.replace("_", " ")} for p in plots],
        tokenizer_repo=repo_id if includes_tokenizer else base_model,
        reference=(reference_record or {}).get("reference"),
        fingerprint=sorted(((reference_record or {}).get("reference_fingerprint") or {}).items()),
        **_training_sections(training_config, adapter_config, beta, flat_results),
    ))


def _is_hub_dataset(name: str) -> bool:
    return looks_like_hub_id(name) and name.count("/") == 1


def _benchmark_groups(by_benchmark: dict, eval_results: Mapping, hub_benchmarks, training_config) -> list[dict]:
    """The template variables of each benchmark's results: dataset, split, rows, and its `.eval_results/` file."""
    table, files = benchmark_table(hub_benchmarks), eval_results_files(eval_results, hub_benchmarks)
    groups = []
    for dataset_id, results in by_benchmark.items():
        benchmark = table.get(dataset_id)
        path = benchmark.path if benchmark is not None and benchmark.path in files else None
        groups.append({"dataset": dataset_id, "split": benchmark and benchmark.split,
                       "rows": metric_rows(results, training_config, default_definition=(
                           f"score on {(benchmark and benchmark.name) or dataset_id}, aggregated as the benchmark's "
                           "own code does")), "path": path})
    return groups


def _training_sections(training_config: Mapping, adapter_config: Mapping, beta: float, results: Mapping) -> dict:
    """The template variables of the card's "How it was trained" and "Hyperparameters" sections (and its bias
    note). Run settings recorded with the results (steps trained, ...) join the hyperparameters."""
    # max_steps = -1 is the Trainer's "not set": leave it out rather than print a nonsensical value.
    hyperparameters = [("beta", format_value(beta))] + [
        (key, format_value(value)) for key in _HYPERPARAMETERS
        if (value := training_config.get(key)) is not None and not (key == "max_steps" and value < 0)]
    shown = {key for key, _ in hyperparameters}
    hyperparameters += [(key, format_value(value)) for key, value in settings_in_results(results, training_config)
                        if key not in shown]
    versions, versions_source = library_versions(training_config)
    bias = adapter_config.get("bias", "none")
    return {
        "seed": training_config.get("seed"), "hyperparameters": hyperparameters,
        "lora": [(key, format_value(_modules(key, adapter_config[key]))) for key in _LORA_FIELDS
                 if adapter_config.get(key) is not None],
        "has_training_config": bool(training_config), "versions": versions, "versions_source": versions_source,
        "bias_note": bias if bias not in (None, "none") else None,
    }


def render_dataset_card(
    *,
    repo_id: str,
    files: Sequence[Mapping],
    license: str | None = None,
    pretty_name: str | None = None,
    description: str | None = None,
    source_model: str | None = None,
    reward_model: str | None = None,
    generation: Mapping | None = None,
):
    """Render the card of a preference dataset. Pure: see `dpo_ext.hub.datasets.stage_preference_dataset`.

    Args:
        repo_id (`str`): the dataset repository, named in the loading sample.
        files (`Sequence[Mapping]`): one entry per data file with keys `config` ("ranked" or "pairwise"), `split`,
            `path` (inside the repository), `format` ("JSONL" or "Parquet"), `rows`, `list_sizes` (ranked only)
            and `columns`.
        license (`str`, *optional*): license id (one the Hub knows); without one the card says it is unknown.
        pretty_name (`str`, *optional*): title; defaults to the repository name.
        description (`str`, *optional*): free text placed under the title.
        source_model (`str`, *optional*), reward_model (`str`, *optional*): what sampled and what ranked the data.
        generation (`Mapping`, *optional*): sampling settings (temperature, K, seed, ...) shown as a table.

    Returns:
        `huggingface_hub.DatasetCard`.
    """
    from huggingface_hub import DatasetCard, DatasetCardData

    configs: dict[str, dict[str, list[str]]] = {}
    for file in files:
        configs.setdefault(file["config"], {}).setdefault(file["split"], []).append(file["path"])
    ranked = [f for f in files if f["config"] == "ranked"]
    described = {PROMPT, CHOSEN, REJECTED, COMPLETIONS, RANKS, SCORES}  # the template explains these columns
    rows = sum(int(f["rows"]) for f in files)
    sizes = sorted({size for f in ranked for size in f.get("list_sizes", ())})
    pretty_name = pretty_name or repo_id.split("/")[-1]
    # One Hub dataset config per kind of row, so `load_dataset(repo_id, "ranked")` works without a loading script.
    hub_configs = []
    for name, splits in configs.items():
        data_files = [{"split": split, "path": paths} for split, paths in splits.items()]
        hub_configs.append({"config_name": name, "data_files": data_files})
    license = check_license(license)
    card_data = DatasetCardData(
        license=license, pretty_name=pretty_name, task_categories=["text-generation"],
        tags=["dpo", "preference", "dpo_ext"] + (["plackett-luce"] if ranked and max(sizes, default=3) > 2 else []),
        size_categories=[_size_category(rows)], configs=hub_configs,
    )
    return _tidy(DatasetCard, DatasetCard.from_template(
        card_data,
        template_path=str(template_path("dataset_card.md")),
        repo_id=repo_id, pretty_name=pretty_name, description=description, source_model=source_model,
        reward_model=reward_model, files=list(files), configs=list(configs), has_ranked=bool(ranked),
        has_pairwise=any(f["config"] == "pairwise" for f in files),
        list_sizes=" or ".join(map(str, sizes)) or "K",
        extra_columns=sorted({c for f in files for c in f.get("columns", ()) if c not in described}),
        generation=[(key, format_value(value)) for key, value in (generation or {}).items()], license=license,
    ))


def _size_category(rows: int) -> str:
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
              (10_000_000, "1M<n<10M")]
    return next((label for bound, label in bounds if rows < bound), "10M<n<100M")


def _tidy(card_class, card):
    # Optional template sections leave runs of blank lines; one is enough (no code sample has two in a row).
    return card_class(re.sub(r"\n{3,}", "\n\n", str(card)))


def _modules(key: str, value):
    """PEFT keeps ``target_modules`` as a set, which adapter_config.json lists in any order: show it sorted."""
    return set(value) if key == "target_modules" and isinstance(value, list) else value
