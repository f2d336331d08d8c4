"""The ``dpo-ext`` command.

Each command family lives in its own module, which exposes ``register(subparsers)``; what they share (arguments,
reading rows, writing outputs) is in `dpo_ext.cli.common`. Heavy imports (torch, transformers, datasets) happen
inside the handlers, so ``dpo-ext --help`` stays fast.
"""

import argparse
import importlib
import sys
from pathlib import Path

from dpo_ext.cli.common import report_error
from dpo_ext.cli.parsing import accept_both_spellings

# Modules that add subcommands, in the order they appear in --help.
_COMMAND_MODULES = (
    "dpo_ext.cli.score",
    "dpo_ext.cli.rerank",
    "dpo_ext.cli.evaluate",
    "dpo_ext.cli.validate",
    "dpo_ext.cli.hub",
    "dpo_ext.cli.train",
    "dpo_ext.cli.sample",
    "dpo_ext.cli.iterate",
    "dpo_ext.cli.label",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dpo-ext",
        description="Check preference data; score, rerank and evaluate with the DPO implicit reward; publish "
                    "adapters to the Hub.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in _COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    accept_both_spellings(parser)  # --reference-free or --reference_free, as the TrlParser commands take them
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] in (["train"], ["precompute-ref"], ["iterate"]):  # their flags are TrlParser's (every trainer field)
        return _train(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except (ValueError, FileNotFoundError, PermissionError) as error:  # input problems: the user's to fix
        report_error(args.command, error)
        return 2


def _train(command: str, argv) -> int:
    try:
        from dpo_ext.cli.train import main as train_main
    except ImportError as error:
        report_error(command, f"{error}; this command needs TRL: pip install 'dpo_ext[trl]'")
        return 2
    try:
        if "--config" in argv[:-1] and not Path(argv[argv.index("--config") + 1]).is_file():  # TrlParser: "Errno 2"
            raise FileNotFoundError(f"--config {argv[argv.index('--config') + 1]}: no such file")
        if command == "iterate":
            from dpo_ext.cli.iterate import main as iterate_main

            return iterate_main(argv)
        return train_main(argv, command)
    except (ValueError, FileNotFoundError, PermissionError) as error:
        report_error(command, error)
        return 2


if __name__ == "__main__":
    sys.exit(main())
