"""`dpo-ext eval`: preference accuracy of the implicit reward on pairwise or ranked rows."""

import argparse
import json
import logging
from contextlib import contextmanager
from pathlib import Path

from dpo_ext.cli.common import (
    Rows,
    add_input_arguments,
    add_model_arguments,
    check_output,
    read_rows,
    scorer_from_arguments,
)
from dpo_ext.data.rows import CHOSEN, REJECTED, PreferenceDataError, completion_fields, normalize_row
from dpo_ext.locations import offline

logger = logging.getLogger(__name__)


def register(subparsers) -> None:
    evaluate = subparsers.add_parser(
        "eval", help="preference accuracy of the implicit reward on pairwise or ranked data",
        description="How often the implicit reward agrees with preference data: accuracy (chosen strictly above "
                    "rejected, as RewardBench counts), and for ranked rows top-1 accuracy, pairwise accuracy and "
                    "Kendall's tau. Rows: {prompt, chosen, rejected}, or {prompt, completions, ranks|scores}.")
    add_model_arguments(evaluate)
    add_input_arguments(evaluate, "also write the metrics (with --benchmark: the leaderboard's results record and "
                                  "every score) to this JSON file", output_required=False, input_required=False)
    benchmark = evaluate.add_argument_group("benchmarks")
    benchmark.add_argument("--benchmark", choices=("rewardbench", "rewardbench2"),
                           help="score RewardBench (allenai/reward-bench, split filtered) or RewardBench 2 "
                                "(allenai/reward-bench-2, split test) and aggregate as the benchmark does; --input "
                                "then names local rows in the benchmark's published schema (JSONL, JSON, Parquet, "
                                "CSV, a saved dataset or a Hub dataset id) instead of the benchmark's Hub dataset")
    benchmark.add_argument("--chat", action="store_true",
                           help="with --benchmark: give each prompt as a user message and each completion as the "
                                "assistant's reply, rendered with the tokenizer's chat template, as RewardBench's own "
                                "scripts always do (with --tokenization rewardbench: its leaderboard's numbers)")
    evaluate.set_defaults(handler=_eval)


def _eval(args: argparse.Namespace) -> int:
    from dpo_ext.scoring.evaluation import evaluate_preferences

    check_output(args.output, args.input)
    if args.benchmark:
        return _eval_benchmark(args)
    if args.input is None:
        raise ValueError("give --input (a preference file or Hub dataset), or --benchmark")
    rows = read_rows(args.input, args.split)
    for i, row in enumerate(rows.rows):  # before the model loads: bad input fails fast
        try:
            normalize_row(row, i)
        except PreferenceDataError as error:
            raise rows.error(error) from error
    scorer = scorer_from_arguments(args)
    try:
        metrics = evaluate_preferences(scorer, rows.rows, normalize=args.normalize, progress=True)
    except PreferenceDataError as error:  # name a pairwise row's completion by its own field
        pairwise = error.row is not None and completion_fields(rows.rows[error.row]) == (CHOSEN, REJECTED)
        raise rows.error(error, [CHOSEN, REJECTED] if pairwise else None) from error
    except ValueError as error:
        raise rows.error(error) from error
    text = json.dumps({"input": rows.source, "model": args.model, **metrics}, indent=2)
    print(text)
    if args.output is not None:
        args.output.write_text(text + "\n", encoding="utf-8")
    return 0


def _eval_benchmark(args: argparse.Namespace) -> int:
    from dpo_ext.rewardbench.evaluate import benchmark_module, evaluate_rewardbench, leaderboard_record, results_table

    module = benchmark_module(args.benchmark)
    split = args.split or module.DEFAULT_SPLIT
    if args.input is None and offline():
        raise ValueError(f"--benchmark {args.benchmark} reads {module.DATASET_ID} from the Hub, and HF_HUB_OFFLINE is "
                         "set: unset it, or give --input FILE (the benchmark's rows in its published schema)")
    local_file = args.input is not None and Path(args.input).is_file()
    # a local file holds one split: the benchmark's default split names the Hub's, not the file's
    rows = read_rows(args.input or module.DATASET_ID, args.split if local_file else split)
    with _named_by(rows, module):  # before the model loads: bad rows fail fast
        module.rows_to_inputs(rows.rows, chat=args.chat)
    if args.tokenization == "rewardbench" and not args.chat:
        logger.warning("--tokenization rewardbench without --chat: RewardBench's scripts render every row with a "
                       "chat template, so these scores are not its leaderboard's; add --chat to reproduce them")
    scorer = scorer_from_arguments(args)
    if args.chat and getattr(scorer.tokenizer, "chat_template", None) is None:
        raise ValueError(f"--chat renders each row with the tokenizer's chat template, and the tokenizer of "
                         f"{args.model} has no chat template (RewardBench falls back to a FastChat template there): "
                         "set chat_template in its tokenizer_config.json, or leave out --chat")
    with _named_by(rows, module):
        results = evaluate_rewardbench(scorer, args.benchmark, rows.rows, split=args.split, chat=args.chat,
                                       normalize=args.normalize, progress=True)
    if args.input is not None:
        results["split"] = f"local files ({args.input})" if Path(args.input).exists() else rows.source
    else:
        results["split"] = split
    record = leaderboard_record(results, args.model, args.ref_model or args.base_model or "adapters disabled",
                                reference_free=args.reference_free, chat_template="tokenizer" if args.chat else "none")
    print(results_table(results))
    if args.output is not None:
        # "benchmarks" is what `dpo-ext push --eval-results` publishes: the same file goes to the card
        card = {"overall": results["overall"], **results.get("sections", {}), **results["subsets"]}
        written = {"benchmarks": {results["dataset"]: {k: v for k, v in card.items() if v is not None}},
                   "leaderboard": record, "results": results}
        args.output.write_text(json.dumps(written, indent=2) + "\n", encoding="utf-8")
    return 0


@contextmanager
def _named_by(rows: Rows, module):
    """Re-raise a benchmark row's `PreferenceDataError` (numbered from 0 by the benchmark module or the scorer) as a
    `ValueError` naming the input's file line (or row) and the row's published field (``rejected``, ``chosen[1]``)."""
    try:
        yield
    except PreferenceDataError as error:
        if error.row is None:
            raise
        fields = None if error.completion is None else module.completion_field_names(rows.rows[error.row])
        raise rows.error(error, fields) from error
