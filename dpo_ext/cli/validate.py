"""`dpo-ext validate`: check preference data against the trainer's row rules before a run, every problem at once.

The rules and their code are the trainer's (`dpo_ext.data.validation`); this module reads the data and prints.
"""

import argparse
import json

from dpo_ext.cli.common import read_rows


def register(subparsers) -> None:
    validate = subparsers.add_parser(
        "validate", help="check preference data against the trainer's row rules, reporting every problem at once",
        description="Check every row of a preference dataset with the trainer's own rules and report, at once, "
                    "every invalid row (file line or row number, and field) and what training would drop or "
                    "normalise: rows with no preference, identical completions collapsed, exact duplicate rows and, "
                    "with --tokenizer and --max-length, rows whose prompt is too long (or, with --max-prompt-length, "
                    "prompts that would be cut) and completions that would be cut. Exit status: 0 when training "
                    "would accept the data, 1 when it would fail (an invalid row, or no usable row), 2 when the data "
                    "cannot be read.")
    validate.add_argument("data", help="JSONL/JSON/Parquet/CSV file, a dataset folder (save_to_disk), or a Hub "
                                       "dataset id")
    validate.add_argument("--split", default="train", help="dataset split, for folders and Hub datasets "
                                                           "(default: train)")
    validate.add_argument("--tokenizer", help="tokenizer folder or Hub id of the model to train: also check "
                                              "tokenization, and lengths with --max-length")
    validate.add_argument("--max-length", type=int, help="the training max_length (needs --tokenizer unless the "
                                                         "rows are tokenized)")
    validate.add_argument("--max-prompt-length", type=int,
                          help="the training max_prompt_length: a prompt that does not fit with its longest "
                               "completion keeps its last tokens (counted as cut, not dropped); needs --max-length")
    validate.add_argument("--json", action="store_true", help="print the report as JSON")
    validate.set_defaults(handler=_validate)


def _validate(args: argparse.Namespace) -> int:
    from dpo_ext.data.tokenize import check_length_settings
    from dpo_ext.data.validation import validate_rows

    check_length_settings(args.max_length, args.max_prompt_length, ("--max-length", "--max-prompt-length"))
    rows = read_rows(args.data, args.split)
    tokenizer = None
    if args.tokenizer:
        from dpo_ext.modeling.tokenizers import load_tokenizer

        tokenizer = load_tokenizer(args.tokenizer, "--tokenizer")
    report = validate_rows(rows.rows, tokenizer, args.max_length, args.max_prompt_length)
    if args.json:
        problems = [{"row": e.row, "line": rows.lines[e.row] if rows.lines else None, "field": e.field,
                     "problem": e.problem, "message": rows.describe(e)} for e in report.problems]
        print(json.dumps({"data": rows.source, **report.to_dict(), "problems": problems}, indent=2))
    else:
        print(_text(report, rows))
    return 0 if report.trainable else 1


def _text(report, rows) -> str:
    lines = [f"{rows.source}: {report.num_rows} rows, {report.usable_rows} usable for training."]
    if report.problems:
        count = len(report.problems)
        lines.append(f"{count} invalid row{'s' if count > 1 else ''} (training stops at the first; the first problem "
                     "of each):")
        lines += [f"  {rows.describe(error)}" for error in report.problems]
    notes = report.summary()
    if notes:
        lines.append("What training would drop or normalise:")
        lines += [f"  - {note}" for note in notes]
    if not report.tokenization_checked and report.long_prompts is None:
        lines.append("Not checked without --tokenizer: prompts that merge into a completion's first token, and "
                     "lengths against --max-length.")
    if report.trainable:
        lines.append("OK: training would accept this data.")
    else:
        why = "invalid rows" if report.problems else "no usable row"
        lines.append(f"FAIL: training would stop ({why}).")
    return "\n".join(lines)
