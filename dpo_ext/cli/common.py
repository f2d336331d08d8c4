"""What the ``dpo-ext`` commands share: arguments (the model to score with, the input), reading rows (JSON Lines,
JSON, Parquet, CSV, a saved or Hub dataset) so that errors name the file line, checking and writing outputs, and the
one-line error report.

Nothing here imports torch at module level: ``dpo-ext --help`` imports every command module.
"""

import argparse
import json
import sys
from pathlib import Path

from dpo_ext.data.jsonl import iter_jsonl, write_jsonl  # noqa: F401 - write_jsonl: the commands' writer
from dpo_ext.data.rows import PreferenceDataError
from dpo_ext.hub.ids import looks_like_hub_id, offline
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

    if not Path(args.model).exists() and (offline() or not looks_like_hub_id(args.model)):
        raise FileNotFoundError(f"{args.model}: no such directory" +
                                (" (HF_HUB_OFFLINE is set, so the Hub is not searched)" if offline() else ""))
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


# -- input ---------------------------------------------------------------------------------------------------------

class Rows:
    """Input rows and how to name one in an error message (file line, or dataset row)."""

    def __init__(self, source: str, rows: list, lines: list | None = None):
        self.source, self.rows, self.lines = source, rows, lines

    def where(self, index: int) -> str:
        if self.lines is not None:
            return f"{self.source}, line {self.lines[index]}"
        return f"{self.source}, row {index}"

    def describe(self, error: PreferenceDataError, fields: list[str] | None = None) -> str:
        """An error about row ``error.row`` of these rows, named by file line (or row) and field. ``fields`` names
        the row's completions by position (``["chosen", "rejected"]``...), for an error about one of them."""
        field = error.field
        if fields is not None and error.completion is not None:
            field = fields[error.completion]
        return f"{self.where(error.row)}{f', field {field!r}' if field else ''}: {error.problem}"

    def error(self, error: Exception, fields: list[str] | None = None) -> ValueError:
        """``error`` as a `ValueError` that names the input's line and field (or, for another error, the input)."""
        if isinstance(error, PreferenceDataError) and error.row is not None:
            return ValueError(self.describe(error, fields))
        return ValueError(f"{self.source}: {error}")


def read_rows(source: str, split: str = "train", config: str | None = None) -> Rows:
    """Rows of a JSONL / JSON / Parquet / CSV file, a dataset folder, or a Hub dataset split (of configuration
    ``config``). A file holds one split, whatever ``split`` says; a folder or Hub dataset without ``split`` raises
    `KeyError` naming the splits it has. ``split`` `None` is ``"train"``."""
    split = split or "train"
    path = Path(source)
    if path.is_file() and path.suffix in (".jsonl", ".json", ""):
        return _read_json(path)
    if path.is_file() or path.is_dir():
        import datasets

        kind = {".parquet": "parquet", ".csv": "csv"}.get(path.suffix)
        if path.is_file() and kind is None:
            raise ValueError(f"{source}: unsupported file type '{path.suffix}' (use .jsonl, .json, .parquet or .csv)")
        dataset = (datasets.load_dataset(kind, data_files=str(path), split="train") if kind
                   else datasets.load_from_disk(str(path)))
        if isinstance(dataset, datasets.DatasetDict):
            if split not in dataset:
                raise KeyError(f"{source} has no split {split!r} (its splits: {', '.join(dataset)})")
            dataset = dataset[split]
        if len(dataset) == 0:  # as for JSON files: an empty input is a mistake, not a result of nothing
            raise ValueError(f"{source}: no rows")
        return Rows(source, list(dataset))
    if not looks_like_hub_id(source):
        raise FileNotFoundError(f"{source}: no such file, and not a Hub dataset id")
    import datasets

    try:
        return Rows(f"{source}[{split}]", list(datasets.load_dataset(source, name=config, split=split)))
    except Exception as error:  # noqa: BLE001 - offline, missing repo or split: say which and why
        raise ValueError(f"could not load the Hub dataset {source!r} (split {split!r}): {error}") from error


def _read_json(path: Path) -> Rows:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json" and text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON ({error}); give a JSON array of row objects, or JSON Lines "
                             "(one object per line)") from None
        for index, row in enumerate(rows):
            if not isinstance(row, dict):
                raise ValueError(f"{path}, row {index}: expected a JSON object (one preference row), got "
                                 f"{type(row).__name__}")
        lines = None
    else:
        numbered = list(iter_jsonl(path, text.splitlines()))
        rows, lines = [row for _, row in numbered], [number for number, _ in numbered]
    if not rows:
        raise ValueError(f"{path}: no rows")
    return Rows(str(path), rows, lines)


# -- output --------------------------------------------------------------------------------------------------------

def check_output(path: Path | None) -> None:
    """Refuse an output file that cannot be written before the model loads, not after all the scoring work."""
    if path is None:
        return
    if path.is_dir():
        raise ValueError(f"--output {path} is a directory: give a file path, such as {path / 'out.jsonl'}")
    problem = unwritable_folder(path.parent)
    if problem:
        raise ValueError(f"--output {path}: its folder cannot be written ({problem}); choose another file")


