"""Results on Hub benchmarks: the `.eval_results/*.yaml` files that put a model on a benchmark's leaderboard.

The Hub reads evaluation results of a model repository in two formats, and a push writes both from one mapping (the
``eval_results`` a caller passes), so they cannot disagree:

- ``model-index`` in the card's YAML metadata (`dpo_ext.hub.cards.eval_results_to_card`): the older format, for
  results on any dataset;
- ``.eval_results/<file>.yaml`` (`eval_results_files`): the newer one, read only for datasets registered as
  *benchmarks*. A file is a YAML list of entries ``{dataset: {id, task_id, revision?}, value, verifyToken?, date?,
  source?: {url, name?, user?, org?}, notes?}``; ``dataset.id`` must be a registered benchmark and ``task_id`` one of
  the tasks its ``eval.yaml`` defines. The result is then shown on the model page and on that task's leaderboard
  (the dataset's page). Without ``date`` the Hub uses the commit's time; a ``verifyToken`` only comes from runs on
  Hugging Face's own infrastructure, so dpo_ext writes neither.

A dataset becomes a benchmark by holding an ``eval.yaml`` at its root (``name``, ``description``,
``evaluation_framework``, ``tasks``: a list of ``{id, config?, split?}``, one leaderboard per task) and by being
added to the Hub's allow-list (then it has the ``benchmark:official`` tag). Which task ids a benchmark has, and on
which scale it reports scores (0-1 or percent), is the benchmark's own choice: `HubBenchmark` records the task ids,
and values are written as given, so they must be on the benchmark's scale.

Sources, read in 2026-11 (the format is young and has changed: this is the most recent documented form):
huggingface/hub-docs ``eval_results.yaml`` (the specification; ``task_id`` required since January 2026, replacing
the earlier optional ``config``/``split`` in ``dataset``) and ``docs/hub/eval-results.md`` (main of 2026-08, also
the ``eval.yaml`` fields), ``docs/hub/leaderboard-data-guide.md``; huggingface_hub 2.4 ``_eval_results.py``
(`EvalResultEntry` and `eval_result_entries_to_yaml`, which write the files here) and ``constants.py``
(``EVAL_RESULTS_FOLDER``).

Registered benchmarks: no public source shows an ``eval.yaml`` for RewardBench (``allenai/reward-bench``) or
RewardBench 2 (``allenai/reward-bench-2``), and neither is among the benchmarks Hugging Face's community-evals project
tracks (``scripts/poll_new_evals.py``, ``BENCHMARK_TRACKER.md`` of 2026-03). `KNOWN_BENCHMARKS` therefore lists them
without tasks: their results go to the ``model-index`` only. Once one is registered, its entry gets the task ids of
its ``eval.yaml``; until then a caller who knows them passes ``hub_benchmarks=[HubBenchmark(...)]``.

Note: huggingface_hub's `HfApi.get_dataset_leaderboard` leaves out, by default, models whose card declares a
``base_model``, as an adapter's card does; the result still shows on the adapter's page.
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import yaml

from dpo_ext.locations import looks_like_hub_id

BENCHMARKS_KEY = "benchmarks"  # eval_results[BENCHMARKS_KEY][dataset_id] = {metric: value} measured on that benchmark
EVAL_RESULTS_FOLDER = ".eval_results"  # huggingface_hub.constants.EVAL_RESULTS_FOLDER


def _is_dataset_id(dataset_id) -> bool:
    # A benchmark is always namespaced; a bare name would be read as a local path or a metric name.
    return isinstance(dataset_id, str) and looks_like_hub_id(dataset_id) and dataset_id.count("/") == 1


@dataclass(frozen=True)
class HubBenchmark:
    """A benchmark dataset and what the Hub expects of results on it.

    Attributes:
        dataset_id (`str`): the benchmark's Hub dataset id, ``namespace/name``.
        split (`str`, *optional*): the split its scores are measured on; named in the card's ``model-index``.
        tasks (`Mapping[str, str]`): task id, as the benchmark's ``eval.yaml`` defines it, -> the metric (a key of the
            results on this benchmark) whose value is that task's leaderboard score. Written as given: give results on
            the scale the benchmark's leaderboard uses (its ``eval.yaml`` description says which). Empty while the
            benchmark is not registered on the Hub: its results then go to the ``model-index`` only.
        name (`str`, *optional*): the benchmark's name, shown in the ``model-index``.
    """

    dataset_id: str
    split: str | None = None
    tasks: Mapping[str, str] = field(default_factory=dict)
    name: str | None = None

    def __post_init__(self):
        if not _is_dataset_id(self.dataset_id):
            raise ValueError(f"HubBenchmark dataset_id {self.dataset_id!r} is not a Hub dataset id: use "
                             "'namespace/name', e.g. 'allenai/reward-bench-2'")
        if not isinstance(self.tasks, Mapping) or not all(
                isinstance(task, str) and task and isinstance(metric, str) and metric
                for task, metric in self.tasks.items()):
            raise ValueError(f"HubBenchmark tasks of {self.dataset_id} must map task ids (from its eval.yaml) to "
                             f"metric names, e.g. {{'overall': 'overall'}}; got {self.tasks!r}")

    @property
    def registered(self) -> bool:
        return bool(self.tasks)

    @property
    def path(self) -> str:
        """Its file in the model repository. One file per benchmark, named after it, so that pushing again replaces
        the previous results instead of adding a second set."""
        return f"{EVAL_RESULTS_FOLDER}/{self.dataset_id.split('/')[-1]}.yaml"


# Benchmarks whose results dpo_ext computes (`dpo_ext.rewardbench`). Neither is registered on the Hub as far as the
# sources in the module docstring show: no tasks, so no `.eval_results/` file (see `HubBenchmark.tasks`).
KNOWN_BENCHMARKS = {benchmark.dataset_id: benchmark for benchmark in (
    HubBenchmark("allenai/reward-bench", split="filtered", name="RewardBench"),
    HubBenchmark("allenai/reward-bench-2", split="test", name="RewardBench 2"),
)}


def benchmark_table(hub_benchmarks: Sequence[HubBenchmark] = ()) -> dict[str, HubBenchmark]:
    """`KNOWN_BENCHMARKS` with `hub_benchmarks` added. An entry for a dataset already known replaces the known one,
    except for the ``split`` and ``name`` it leaves out (`None`), which are the known entry's."""
    table = dict(KNOWN_BENCHMARKS)
    if isinstance(hub_benchmarks, HubBenchmark):  # one entry, not in a list: what was meant is clear
        hub_benchmarks = [hub_benchmarks]
    for benchmark in hub_benchmarks or ():
        if not isinstance(benchmark, HubBenchmark):
            raise TypeError(f"hub_benchmarks takes HubBenchmark entries (dpo_ext.hub.eval_results.HubBenchmark), got "
                            f"{type(benchmark).__name__} {benchmark!r:.60}")
        known = table.get(benchmark.dataset_id)
        if known is not None:
            benchmark = replace(benchmark, split=benchmark.split or known.split, name=benchmark.name or known.name)
        table[benchmark.dataset_id] = benchmark
    return table


def numeric_metrics(metrics: Mapping) -> dict[str, int | float]:
    """The metrics published as numbers (``model-index``, ``.eval_results/``): finite ints and floats, not bools. The
    others stay in ``eval_results.json`` only."""
    return {key: value for key, value in metrics.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)}


def split_eval_results(eval_results: Mapping, source: str = "eval_results") -> tuple[dict, dict[str, dict]]:
    """``(metrics, by_benchmark)``: the results measured on the card's evaluation dataset (every key but
    ``"benchmarks"``), and those under ``eval_results["benchmarks"]``, by benchmark dataset id.

    Raises:
        `ValueError`: naming `source`, when ``"benchmarks"`` is not a mapping of dataset ids to mappings of metrics.
    """
    metrics = {key: value for key, value in eval_results.items() if key != BENCHMARKS_KEY}
    groups = eval_results.get(BENCHMARKS_KEY)
    if groups is None:
        return metrics, {}
    example = '{"benchmarks": {"allenai/reward-bench-2": {"overall": 0.71}}}'
    if not isinstance(groups, Mapping):
        raise ValueError(f"'{BENCHMARKS_KEY}' in {source} must map benchmark dataset ids to their results, e.g. "
                         f"{example}; got {type(groups).__name__}")
    for dataset_id, results in groups.items():
        if not _is_dataset_id(dataset_id):
            raise ValueError(f"'{BENCHMARKS_KEY}' in {source} names {dataset_id!r}, which is not a Hub dataset id "
                             f"('namespace/name'), e.g. {example}")
        if not isinstance(results, Mapping):
            raise ValueError(f"'{BENCHMARKS_KEY}' in {source}: the results on {dataset_id} must be a mapping of "
                             f"metric names to values, e.g. {example}; got {type(results).__name__}")
    return metrics, {dataset_id: dict(results) for dataset_id, results in groups.items()}


def eval_results_files(eval_results: Mapping, hub_benchmarks: Sequence[HubBenchmark] = ()) -> dict[str, str]:
    """The ``.eval_results/`` files for the results on registered benchmarks. Pure: nothing is read or written.

    For each benchmark under ``eval_results["benchmarks"]`` that is registered (in `KNOWN_BENCHMARKS` or
    `hub_benchmarks`, with tasks), one file with an entry per task whose metric has a numeric value: the same value
    the card's ``model-index`` shows (both are taken through `numeric_metrics`).

    Args:
        eval_results (`Mapping`): metric name -> value, with ``"benchmarks"``: {dataset id: {metric name: value}}.
        hub_benchmarks (`Sequence[HubBenchmark]`): benchmarks to add to, or replace in, `KNOWN_BENCHMARKS`.

    Returns:
        `dict[str, str]`: path in the repository (``.eval_results/<name>.yaml``) -> YAML text; empty when no results
        are on a registered benchmark.
    """
    from huggingface_hub import EvalResultEntry, eval_result_entries_to_yaml

    files = {}
    for benchmark, values in _registered_results(eval_results, hub_benchmarks):
        entries = [EvalResultEntry(dataset_id=benchmark.dataset_id, task_id=task, value=values[metric])
                   for task, metric in benchmark.tasks.items() if metric in values]
        if entries:
            files[benchmark.path] = yaml.safe_dump(eval_result_entries_to_yaml(entries), sort_keys=False,
                                                   allow_unicode=True)
    return files


def unpublished_benchmark_results(eval_results: Mapping, hub_benchmarks: Sequence[HubBenchmark] = ()) -> list[str]:
    """Why results under ``eval_results["benchmarks"]`` get no ``.eval_results/`` entry, one sentence each (the
    benchmark is not registered, or a task's metric is missing or not a number); empty when every one gets one."""
    table = benchmark_table(hub_benchmarks)
    reasons = []
    for dataset_id in split_eval_results(eval_results)[1]:
        benchmark = table.get(dataset_id)
        if benchmark is None or not benchmark.registered:
            reasons.append(f"{dataset_id} is not a benchmark registered on the Hub as far as dpo_ext knows, so its "
                           "results are in the card's model-index only; if it is, pass hub_benchmarks=[HubBenchmark("
                           f"{dataset_id!r}, tasks={{task_id: metric}})] with the task ids of its eval.yaml")
    for benchmark, values in _registered_results(eval_results, hub_benchmarks):
        for task, metric in benchmark.tasks.items():
            if metric not in values:
                reasons.append(f"no leaderboard entry for task {task!r} of {benchmark.dataset_id}: its results have "
                               f"no numeric {metric!r}")
    return reasons


def _registered_results(eval_results: Mapping, hub_benchmarks: Sequence[HubBenchmark]):
    """``(benchmark, numeric results)`` for each registered benchmark under ``eval_results["benchmarks"]``."""
    table = benchmark_table(hub_benchmarks)
    for dataset_id, results in split_eval_results(eval_results)[1].items():
        benchmark = table.get(dataset_id)
        if benchmark is not None and benchmark.registered:
            yield benchmark, numeric_metrics(results)
