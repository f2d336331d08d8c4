"""`dpo-ext eval`: preference accuracy of the implicit reward on pairwise or ranked rows."""

import argparse
import json

from dpo_ext.cli.common import add_input_arguments, add_model_arguments, check_output, read_rows, scorer_from_arguments
from dpo_ext.data.rows import CHOSEN, REJECTED, PreferenceDataError, completion_fields, normalize_row


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
                                "then names local JSON lines in the benchmark's published schema instead of the Hub")
    benchmark.add_argument("--chat", action="store_true",
                           help="with --benchmark: give each prompt as a user message, rendered with the chat "
                                "template")
    evaluate.set_defaults(handler=_eval)


def _eval(args: argparse.Namespace) -> int:
    from dpo_ext.scoring.evaluation import evaluate_preferences

    check_output(args.output)
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
    rows = module.load_rows(args.split or module.DEFAULT_SPLIT, args.input)  # before the model loads
    scorer = scorer_from_arguments(args)
    results = evaluate_rewardbench(scorer, args.benchmark, rows, split=args.split, chat=args.chat,
                                   normalize=args.normalize, progress=True)
    if args.input is not None:
        results["split"] = f"local files ({args.input})"
    record = leaderboard_record(results, args.model, args.ref_model or args.base_model or "adapters disabled",
                                reference_free=args.reference_free)
    print(results_table(results))
    if args.output is not None:
        # "benchmarks" is what `dpo-ext push --eval-results` publishes: the same file goes to the card
        card = {"overall": results["overall"], **results.get("sections", {}), **results["subsets"]}
        written = {"benchmarks": {results["dataset"]: {k: v for k, v in card.items() if v is not None}},
                   "leaderboard": record, "results": results}
        args.output.write_text(json.dumps(written, indent=2) + "\n", encoding="utf-8")
    return 0
