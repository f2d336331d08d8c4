"""What the ``dpo-ext`` commands share: arguments (the model to score with, the input), reading rows (JSON Lines,
JSON, Parquet, CSV, a saved or Hub dataset) so that errors name the file line, checking and writing outputs, and the
one-line error report.

Nothing here imports torch at module level: ``dpo-ext --help`` imports every command module.
"""

import argparse
import sys
from pathlib import Path

# Input rows are read by the library (the benchmarks' local files too); the commands import them from here.
from dpo_ext.data.files import Rows, read_rows  # noqa: F401
from dpo_ext.data.jsonl import write_jsonl  # noqa: F401 - write_jsonl: the commands' writer
from dpo_ext.locations import require_source
from dpo_ext.training.checks import unwritable_folder


def report_error(command: str, error: Exception) -> None:
    """An error that is the user's to fix: one line on stderr, no traceback."""
    print(f"dpo-ext {command}: error: {error}", file=sys.stderr)


# -- arguments -----------------------------------------------------------------------------------------------------

def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The model that scores and its reference (`scorer_from_arguments` reads them)."""
    parser.add_argument("model", help="directory or Hub repo id of a PEFT adapter (a full model needs --ref-model "
                                      "or --reference-free)")
    group = parser.add_argument_group("reference and reward")
    group.add_argument("--base-model", help="base model to load the adapter onto (default: from adapter_config.json)")
    group.add_argument("--ref-model", help="an explicit reference model (default: the base with adapters disabled)")
    group.add_argument("--ref-adapter", default="auto",
                       help="reference adapter: 'auto' (a saved ref/ adapter, TRL's frozen copy, if present), "
                            "'none' (always the base model), or a subfolder/directory name (default: auto)")
    group.add_argument("--reference-free", action="store_true", help="reward = beta * log pi (no reference)")
    group.add_argument("--beta", type=float, default=None,
                       help="the DPO beta of training (default: the one recorded with the adapter, else 0.1); one "
                            "that differs from the recorded beta is refused unless --override-beta")
    group.add_argument("--override-beta", action="store_true",
                       help="score with --beta even though the adapter records another (with a warning)")
    group.add_argument("--normalize", choices=("sum", "mean"), default="sum",
                       help="sum of token log-ratios (the DPO reward), or their mean per token (default: sum)")
    group.add_argument("--tokenization", choices=("trl", "rewardbench"), default="trl",
                       help="trl: as the model was trained (TRL's DPOTrainer); rewardbench: RewardBench's DPO "
                            "tokenization, to reproduce its numbers (default: trl)")
    speed = parser.add_argument_group("speed")
    speed.add_argument("--max-length", type=int, help="truncate prompt + completion to this many tokens")
    speed.add_argument("--max-batch-tokens", type=int,
                       help="tokens per forward (default: 1024 on CPU, 8192 on GPU)")
    speed.add_argument("--no-prefix-sharing", action="store_true", help="score every prompt + completion row "
                                                                         "separately (slower; for debugging)")
    speed.add_argument("--device", help="cpu, cuda, cuda:1... (default: cuda when available)")


def add_input_arguments(parser: argparse.ArgumentParser, output_help: str, output_required: bool = True,
                        input_required: bool = True) -> None:
    parser.add_argument("--input", "-i", required=input_required, help="JSONL/JSON/Parquet file, or a Hub dataset id")
    parser.add_argument("--split", help="dataset split, for Hub datasets (default: train; with --benchmark, the "
                                        "benchmark's own)")
    parser.add_argument("--output", "-o", required=output_required, type=Path, help=output_help)


def scorer_from_arguments(args: argparse.Namespace):
    """The `ImplicitRewardScorer` that `add_model_arguments` describes; a missing model or reference is named before
    anything loads."""
    from dpo_ext.scoring.loading import adapter_config
    from dpo_ext.scoring.scorer import ImplicitRewardScorer
    from dpo_ext.settings import as_number

    if args.reference_free and args.ref_model:
        raise ValueError("--reference-free scores without a reference, so --ref-model would be loaded and never "
                         "used: give one of them")
    for flag, value, minimum in (("--max-length", args.max_length, 2),
                                 ("--max-batch-tokens", args.max_batch_tokens, 1)):
        if value is not None:  # before minutes of loading
            as_number(flag, value, int, minimum=minimum)
    require_source(args.model)
    if adapter_config(args.model) is None and not args.ref_model and not args.reference_free:
        raise ValueError(f"{args.model} is not a PEFT adapter (it has no adapter_config.json), so it carries no "
                         "reference model: pass --ref-model (the model it was trained from) or --reference-free")
    ref_adapter = None if args.ref_adapter.lower() == "none" else args.ref_adapter
    return ImplicitRewardScorer.from_pretrained(
        args.model, base_model=args.base_model, ref_model=args.ref_model, ref_adapter=ref_adapter,
        reference_free=args.reference_free, device=args.device, beta=args.beta, override_beta=args.override_beta,
        max_length=args.max_length,
        max_batch_tokens=args.max_batch_tokens, prefix_sharing=not args.no_prefix_sharing,
        tokenization=args.tokenization,
    )


# -- output --------------------------------------------------------------------------------------------------------

def check_prompts(rows: Rows) -> list:
    """The ``prompt`` of every row, each checked by the row rules before any model loads; a bad one is named by its
    file line and field."""
    from dpo_ext.data.rows import PROMPT, PreferenceDataError, check_prompt

    for index, row in enumerate(rows.rows):
        try:
            check_prompt(row.get(PROMPT), index)
        except PreferenceDataError as error:
            raise rows.error(error) from None
    return [row[PROMPT] for row in rows.rows]


def check_output(path: Path | None, source: str | None = None) -> None:
    """Refuse an output file that cannot be written before the model loads, not after all the scoring work, and one
    that is the input file ``source`` (writing it would destroy the rows being read)."""
    if path is None:
        return
    if source is not None and Path(source).is_file() and path.exists() and path.samefile(source):
        raise ValueError(f"--output {path} is the input file: writing it would replace your rows; give another file")
    if path.is_dir():
        raise ValueError(f"--output {path} is a directory: give a file path, such as {path / 'out.jsonl'}")
    problem = unwritable_folder(path.parent)
    if problem:
        raise ValueError(f"--output {path}: its folder cannot be written ({problem}); choose another file")


