"""`dpo-ext label`: scores from a judge added to every row (`dpo_ext.labeling.label_rows`), for on-policy rounds:
``dpo-ext sample`` writes rows, ``dpo-ext label`` scores them, ``dpo-ext train`` trains on them.

The rows are checked before the judge loads, so bad input fails fast and names the file line and field; so does a
judge that returns a bad score.
"""

import argparse
import sys
from pathlib import Path

from dpo_ext.cli.common import check_output, read_rows, write_jsonl
from dpo_ext.data.rows import PreferenceDataError


def register(subparsers) -> None:
    from dpo_ext.judges.spec import JUDGE_KINDS
    from dpo_ext.labeling import NORMALIZATIONS

    label = subparsers.add_parser(
        "label", help="add scores from a judge to rows of completions (JSONL in, JSONL with scores out)",
        description="Score every completion of every row {prompt, completions: [...]} with a judge and write the "
                    "rows with 'scores' (one per completion, higher = better), ready to train on with any ranked "
                    "loss (the scores are LiPO-lambda's label values). Judges: " + "; ".join(JUDGE_KINDS.values()))
    label.add_argument("input", help="JSONL/JSON/Parquet/CSV file (or dataset folder, or Hub dataset id) of rows")
    label.add_argument("--judge", required=True, metavar="SPEC", help="rm:PATH, implicit:ADAPTER or py:module:function")
    label.add_argument("--output", "-o", required=True, type=Path, help="JSONL file to write")
    label.add_argument("--split", help="dataset split, for dataset folders and Hub datasets (default: train)")
    label.add_argument("--batch-size", type=int, default=8,
                       help="rows per judge call, and texts per reward-model forward (default: 8)")
    label.add_argument("--normalize", choices=NORMALIZATIONS, default="none",
                       help="map each row's scores into [0, 1]: minmax (per row) or sigmoid (a reward model's "
                            "logit); LiPO-lambda's gains grow as 2^score, so unbounded scores need one (default: none)")
    label.add_argument("--device", help="cpu, cuda, cuda:1... for a model judge (default: cuda when available)")
    label.set_defaults(handler=_label)


def _label(args: argparse.Namespace) -> int:
    from dpo_ext.judges.spec import load_judge
    from dpo_ext.labeling import check_label_rows, label_rows

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    check_output(args.output)
    rows = read_rows(args.input, args.split)
    try:
        check_label_rows(rows.rows)
    except PreferenceDataError as error:
        raise rows.error(error) from None
    judge = load_judge(args.judge, device=args.device, batch_size=args.batch_size)
    try:
        labelled = label_rows(rows.rows, judge, batch_size=args.batch_size, normalize=args.normalize, progress=True)
    except PreferenceDataError as error:
        raise rows.error(error) from error
    write_jsonl(args.output, labelled)
    print(f"Labelled {sum(len(row['scores']) for row in labelled)} completions of {len(labelled)} rows with "
          f"{judge.name} -> {args.output}", file=sys.stderr)
    return 0
