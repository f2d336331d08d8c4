"""`dpo-ext score`: implicit rewards of the completions of each input row, written next to the row.

Rows are read with the row rules (`dpo_ext.data.rows.completion_fields` and `check_scored`) before the model loads,
so that bad input fails fast and names the file line and the row's own field.
"""

import argparse
import sys

from dpo_ext.cli.common import (
    Rows,
    add_input_arguments,
    add_model_arguments,
    check_output,
    read_rows,
    scorer_from_arguments,
    write_jsonl,
)
from dpo_ext.data.rows import COMPLETION, COMPLETIONS, PROMPT, PreferenceDataError, check_scored, completion_fields


def register(subparsers) -> None:
    score = subparsers.add_parser(
        "score", help="implicit rewards of completions (JSONL in, JSONL with rewards out)",
        description="Score completions with the implicit reward beta * log pi(y|x) / pi_ref(y|x) of a DPO-trained "
                    "adapter. Rows: {prompt, completion}, {prompt, completions: [...]} or {prompt, chosen, "
                    "rejected}; prompts and completions are text or chat messages. Each output row is the input row "
                    "plus reward(s), policy_logps, ref_logps and num_tokens.")
    add_model_arguments(score)
    add_input_arguments(score, "JSONL file to write")
    score.set_defaults(handler=_score)


def _read(rows: Rows) -> list[tuple[tuple[str, ...], list[str] | None, list]]:
    """Each row's completion format (see `completion_fields`), the names of its completions' fields when they are not
    ``completions[k]`` (``["completion"]``, ``["chosen", "rejected"]``), and the completions to score."""
    parsed = []
    for i, row in enumerate(rows.rows):
        names = None
        try:
            fields = completion_fields(row, i, single=True)
            values = row[COMPLETIONS] if fields == (COMPLETIONS,) else [row.get(field) for field in fields]
            names = None if fields == (COMPLETIONS,) else list(fields)
            check_scored(row.get(PROMPT), values, i)
        except PreferenceDataError as error:
            raise rows.error(error, names) from None
        parsed.append((fields, names, list(values)))
    return parsed


def _score(args: argparse.Namespace) -> int:
    check_output(args.output, args.input)
    rows = read_rows(args.input, args.split)
    parsed = _read(rows)
    scorer = scorer_from_arguments(args)
    try:
        result = scorer.score([row[PROMPT] for row in rows.rows], [values for _, _, values in parsed],
                              normalize=args.normalize, progress=True)
    except ValueError as error:
        names = parsed[error.row][1] if isinstance(error, PreferenceDataError) and error.row is not None else None
        raise rows.error(error, names) from error
    out = []
    for b, (row, (fields, _, values)) in enumerate(zip(rows.rows, parsed)):
        k = len(values)
        rewards = result.rewards[b, :k].tolist()
        extra = {"policy_logps": result.policy_logps[b, :k].tolist(),
                 "ref_logps": None if result.ref_logps is None else result.ref_logps[b, :k].tolist(),
                 "num_tokens": result.num_tokens[b, :k].tolist()}
        if fields == (COMPLETION,):
            extra = {"reward": rewards[0], **{key: v if v is None else v[0] for key, v in extra.items()}}
        elif fields == (COMPLETIONS,):
            extra = {"rewards": rewards, **extra}
        else:
            extra = {"chosen_reward": rewards[0], "rejected_reward": rewards[1], **extra}
        out.append({**row, **extra})
    write_jsonl(args.output, out)
    print(f"Scored {result.rewards.isfinite().sum()} completions of {len(out)} rows -> {args.output}",
          file=sys.stderr)
    return 0
