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
    add_input_arguments(evaluate, "also write the metrics to this JSON file", output_required=False)
    evaluate.set_defaults(handler=_eval)


def _eval(args: argparse.Namespace) -> int:
    from dpo_ext.scoring.evaluation import evaluate_preferences

    check_output(args.output)
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
