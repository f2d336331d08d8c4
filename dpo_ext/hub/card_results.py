"""How a card presents evaluation results: every number with what it is, its uncertainty and its baseline;
run settings apart from metrics; nested results as tables of their own.

Conventions of an `eval_results` mapping (``eval_results.json``), beyond ``metric name -> value``:

- ``<metric>_sem``: the standard error of ``<metric>``; ``<metric>_n`` (or, for every metric, ``num_eval_samples``):
  how many values it averages.
- ``"baseline"``: ``{"name": "the SFT policy", <metric>: value, <metric>_sem: ..., <metric>_n: ...}``: the same
  metrics for the model the numbers should be read against.
- ``"definitions"``: ``{<metric>: "what it is"}`` for metrics dpo_ext does not define itself (see `DEFINITIONS`).
- Run settings recorded with the results (``beta``, ``train_steps``, ``method``, ... and any key of the training
  config) are hyperparameters: the card lists them in its Hyperparameters section, never as metrics.
- A list of flat records (``checkpoints``, ``examples``) becomes a table of its own; a mapping of values, one row
  per key.

Only the numbers that are metrics go to the card's ``model-index`` (`reported_metrics`).
"""

import math
from collections.abc import Mapping

from dpo_ext.hub.eval_results import numeric_metrics

BASELINE_KEY, DEFINITIONS_KEY = "baseline", "definitions"
NAMES = {
    "ground_truth_reward": "Ground-truth reward",
    "kl": "KL divergence to the reference",
    "preference_accuracy": "Preference accuracy",
    "win_rate": "Win rate",
}
DEFINITIONS = {
    "ground_truth_reward": "mean ground-truth reward of completions sampled from the policy on the evaluation "
                           "prompts",
    "kl": "sequence-level KL(π ‖ π_ref): mean over completions y sampled from the policy of "
          "log π(y∣x) − log π_ref(y∣x), summed over the completion's tokens",
    "preference_accuracy": "fraction of evaluation preference pairs whose preferred completion gets the higher "
                           "implicit reward",
    "win_rate": "fraction of evaluation comparisons in which the policy's completion is preferred",
}
# Recorded with results by recipes and trainers, but settings of the run, not measurements.
RUN_SETTINGS = frozenset({"method", "beta", "train_steps", "max_steps", "unlikelihood_alpha", "num_completions",
                          "loss_type", "seed", "learning_rate", "num_train_epochs", "epoch", "run_name"})
_COUNT_KEYS = ("num_eval_samples", "num_samples")
_NESTED_TITLES = {"checkpoints": "Evaluations during training", "examples": "Sample completions"}
_MAX_CELL = 300


def is_setting(key: str, training_config: Mapping) -> bool:
    return key in RUN_SETTINGS or key in training_config


def _is_companion(key: str, results: Mapping) -> bool:
    """A standard error or a count that belongs to another metric of `results`."""
    if key in _COUNT_KEYS:
        return True
    for suffix in ("_sem", "_n"):
        if key.endswith(suffix) and key[: -len(suffix)] in results:
            return True
    return False


def reported_metrics(results: Mapping, training_config: Mapping = {}) -> dict:
    """The numbers of `results` that are metrics: finite numbers that are neither run settings, nor a standard error
    or count of another metric, nor the baseline's or the definitions."""
    return {key: value for key, value in numeric_metrics(results).items()
            if not is_setting(key, training_config) and not _is_companion(key, results)}


def settings_in_results(results: Mapping, training_config: Mapping) -> list[tuple[str, object]]:
    """The run settings recorded among `results` (shown with the hyperparameters)."""
    return [(key, value) for key, value in results.items()
            if is_setting(key, training_config) and not isinstance(value, (Mapping, list, tuple))]


def metric_rows(results: Mapping, training_config: Mapping = {}, reward: str | None = None,
                default_definition: str = "not defined in the results (see eval_results.json)") -> list[dict]:
    """One row per metric: ``name``, ``definition`` (`default_definition` for one neither `results` nor
    `DEFINITIONS` define), ``value`` (with its standard error and n) and ``baseline``."""
    baseline = results.get(BASELINE_KEY) if isinstance(results.get(BASELINE_KEY), Mapping) else {}
    definitions = results.get(DEFINITIONS_KEY) if isinstance(results.get(DEFINITIONS_KEY), Mapping) else {}
    rows = []
    for key in reported_metrics(results, training_config):
        definition = definitions.get(key) or DEFINITIONS.get(key)
        if key == "ground_truth_reward" and reward and key not in definitions:
            definition = f"{definition}; reward: {reward}"
        rows.append({
            "name": NAMES.get(key, key),
            "definition": cell(definition or default_definition),
            "value": with_uncertainty(results, key),
            "baseline": with_uncertainty(baseline, key) if key in baseline else "not recorded",
        })
    return rows


def with_uncertainty(results: Mapping, key: str) -> str:
    """``value ± s.e. (n = N)``, or the value and what is missing."""
    text = format_value(results[key])
    sem = results.get(f"{key}_sem")
    n = results.get(f"{key}_n", next((results[k] for k in _COUNT_KEYS if k in results), None))
    if isinstance(sem, (int, float)) and math.isfinite(sem):
        text += f" ± {sem:.2g}"
    else:
        text += " (s.e. not recorded)"
    if isinstance(n, int):
        text += f" (n = {n})"
    return text


def nested_tables(results: Mapping) -> list[dict]:
    """The results that are not single numbers, as ``{"title", "columns", "rows"}`` tables: a list of records, one
    row per record; a mapping, one row per key. Baseline and definitions are shown with the metrics instead."""
    tables = []
    for key, value in results.items():
        if key in (BASELINE_KEY, DEFINITIONS_KEY):
            continue
        title = _NESTED_TITLES.get(key, f"`{key}`")
        if isinstance(value, (list, tuple)) and value and all(isinstance(v, Mapping) for v in value):
            columns = list(dict.fromkeys(k for record in value for k in record))
            rows = [[cell(format_value(record.get(c, "")), _MAX_CELL) for c in columns] for record in value]
            tables.append({"title": title, "columns": columns, "rows": rows})
        elif isinstance(value, Mapping) and value:
            rows = [[cell(str(k)), cell(format_value(v), _MAX_CELL)] for k, v in value.items()]
            tables.append({"title": title, "columns": ["key", "value"], "rows": rows})
    return tables


def format_value(value) -> str:
    """A number, name or list as one table cell: floats to 4 significant digits, a list in its order, a set sorted
    (PEFT keeps target modules in a set, saved in any order), a mapping by its keys."""
    if isinstance(value, (set, frozenset)):
        value = sorted(value, key=str)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, Mapping):  # nested deeper than a table can show: name the keys, the file has the values
        return "see eval_results.json (" + ", ".join(map(str, value)) + ")"
    if isinstance(value, (list, tuple)):
        return ", ".join(format_value(v) for v in value)
    return str(value)


def cell(text: str, limit: int | None = None) -> str:
    """`text` fit for a Markdown table cell: one line, no column separator, at most `limit` characters (sample
    texts are shortened; definitions never are)."""
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if limit is None or len(text) <= limit else text[: limit - 1] + "…"
