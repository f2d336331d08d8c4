"""A DPO model scored on RewardBench 1 or 2 by its implicit reward: the benchmark's rows -> `ImplicitRewardScorer` ->
the benchmark's aggregation (`dpo_ext.rewardbench.v1` / `v2`), plus the results record its leaderboard reads.

Every completion of a row is scored, ties and repeats included, exactly as the benchmarks count them; rows are not
passed through `dpo_ext.scoring.evaluation.evaluate_preferences`, which skips rows without a preference.
"""

from dpo_ext.rewardbench import v1, v2

BENCHMARKS = {"rewardbench": v1, "rewardbench2": v2}


def benchmark_module(benchmark: str):
    if benchmark not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {benchmark!r}: choose one of {', '.join(BENCHMARKS)}")
    return BENCHMARKS[benchmark]


def evaluate_rewardbench(scorer, benchmark: str = "rewardbench", rows=None, *, split: str | None = None,
                         data_files=None, chat: bool = False, beta=None, normalize: str = "sum",
                         reference_free=None, progress: bool = False) -> dict:
    """Score every row of RewardBench (``"rewardbench"``) or RewardBench 2 (``"rewardbench2"``) with ``scorer``.

    Args:
        scorer ([`ImplicitRewardScorer`]): the model and its reference.
        benchmark (`str`): ``"rewardbench"`` or ``"rewardbench2"``.
        rows (*optional*): the benchmark's rows; default: loaded from the Hub (``split``, the benchmark's default
            when `None`) or from ``data_files`` (local files in the published schema).
        chat (`bool`): give each prompt as one user message (rendered with the tokenizer's chat template).
        beta, normalize, reference_free: as in `ImplicitRewardScorer.score`. RewardBench's own reference-free
            default averages log-probs per token: ``reference_free=True, normalize="mean"``.

    Returns:
        `dict`: the benchmark's `aggregate` (``subsets``, ``overall``, ...) plus ``benchmark``, ``dataset`` and
        ``split`` (the Hub split, ``"local files"`` or ``"rows given"``).

    Raises:
        `ValueError`: when there is no row to score.
        `PreferenceDataError`: for a row that is not in the benchmark's schema (naming its position in the rows and
            its field), or one the scorer cannot score (naming it as ``prompt i, completion k``).
    """
    module = benchmark_module(benchmark)
    split = split or module.DEFAULT_SPLIT
    source = "rows given" if rows is not None else "local files" if data_files is not None else split
    rows = module.load_rows(split, data_files) if rows is None else list(rows)
    if not rows:  # aggregating nothing would give a table of n/a that reads like a result
        where = data_files if data_files is not None else source
        raise ValueError(f"{where}: no rows to score; give rows of {module.DATASET_ID} in its published schema")
    prompts, completions, meta = module.rows_to_inputs(rows, chat=chat)
    result = scorer.score(prompts, completions, beta=beta, normalize=normalize, reference_free=reference_free,
                          progress=progress)
    return {"benchmark": benchmark, "dataset": module.DATASET_ID, "split": source, **module.aggregate(result, meta)}


def leaderboard_record(results: dict, model: str, ref_model: str | None, reference_free: bool = False,
                       chat_template: str = "tokenizer") -> dict:
    """The results file the benchmark's own scripts write for a DPO model (``scripts/run_dpo.py`` of RewardBench 1,
    ``scripts/run_v2.py`` of RewardBench 2): ``model``, ``ref_model`` (RewardBench 1), ``model_type`` and
    ``chat_template``, then each subset's score under its name."""
    record = {"model": model}
    if results["benchmark"] == "rewardbench":
        record["ref_model"] = ref_model
    record["model_type"] = "DPO Ref. Free" if reference_free else "DPO"
    record["chat_template"] = chat_template
    return {**record, **results["subsets"]}


def results_table(results: dict) -> str:
    """A readable Markdown table: overall, sections (RewardBench 1), then every subset."""
    lines = ["| | score |", "|---|---|"]

    def row(name, value):
        lines.append(f"| {name} | {'n/a' if value is None else f'{value:.4f}'} |")

    row(f"**{results['benchmark']} overall**", results["overall"])
    for section, value in results.get("sections", {}).items():
        row(f"**{section}**", value)
    for subset, value in results["subsets"].items():
        row(subset, value)
    return "\n".join(lines)
