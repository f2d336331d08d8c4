"""`dpo-ext push` and `dpo-ext push-dataset`: publish a trained adapter, or generated preference data, to the
Hugging Face Hub. The Hub client is imported inside the handlers so that `dpo-ext --help` stays fast."""

import argparse
from pathlib import Path

from dpo_ext.cli.common import report_error

_TOKEN_HELP = ("Hugging Face token (default: HF_TOKEN, else the token saved by `hf auth login`; prefer those, "
               "a token typed on the command line stays in the shell history)")


def register(subparsers) -> None:
    push = subparsers.add_parser(
        "push", help="publish a trained adapter with its card, config, eval results and plots",
        description="Publish a trained LoRA adapter to the Hub in one commit: safetensors weights, adapter config, "
                    "tokenizer, training config, evaluation results, plots and a model card. Optimizer state, "
                    "checkpoints, training_args.bin and the ref/ reference copy are never uploaded.")
    push.add_argument("adapter_dir", type=Path, help="folder written by trainer.save_model() / save_pretrained()")
    _add_common(push, "model")
    push.add_argument("--eval-results", metavar="FILE.json", type=Path,
                      help="JSON object of metric -> value (ground_truth_reward, kl, preference_accuracy, win_rate...)")
    push.add_argument("--config", metavar="FILE.yaml", type=Path,
                      help="training config (default: training_config.yaml or training_config.json in "
                           "ADAPTER_DIR; training_args.bin is never read, it is a pickle)")
    push.add_argument("--plot", metavar="PNG", type=Path, action="append", default=[],
                      help="PNG plot to publish and embed in the card (repeatable)")
    push.add_argument("--base-model", help="Hub id of the base model; must match adapter_config.json "
                                           "(required when that records a local path)")
    push.add_argument("--beta", type=float, help="DPO beta; must match the training config (required if it has none)")
    push.add_argument("--dataset", dest="datasets", metavar="ID", action="append",
                      help="training dataset for the card (repeatable; default: from the training config)")
    push.add_argument("--eval-dataset", metavar="ID", help="what the evaluation results were measured on")
    push.set_defaults(handler=_push_adapter)

    push_data = subparsers.add_parser(
        "push-dataset", help="publish generated preference data (ranked or pairwise JSONL/Parquet) with a card",
        description="Publish a folder of ranked (prompt, completions) or pairwise (prompt, chosen, rejected) "
                    "JSONL/Parquet files as a Hub dataset, with a dataset card, in one commit.")
    push_data.add_argument("data_dir", type=Path, help="folder of .jsonl / .parquet files")
    _add_common(push_data, "dataset")
    push_data.add_argument("--source-model", help="model that generated the completions")
    push_data.add_argument("--reward-model", help="what ranked them")
    push_data.add_argument("--description", help="a paragraph for the card")
    push_data.set_defaults(handler=_push_dataset)


def _add_common(parser: argparse.ArgumentParser, repo_type: str) -> None:
    parser.add_argument("--repo-id", required=True, help=f"{repo_type} repository, namespace/name")
    parser.add_argument("--token", help=_TOKEN_HELP)
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument("--dry-run", metavar="DIR", type=Path,
                        help="write the exact files that would be uploaded to DIR and list them; no network")
    parser.add_argument("--endpoint", help="Hub URL (default: HF_ENDPOINT or https://huggingface.co)")
    parser.add_argument("--license", help="license id for the card, one the Hub knows "
                        "(https://huggingface.co/docs/hub/repositories-licenses); default: none, and the card says "
                        "the license is unknown unless the base model's card or the training record states one")
    parser.add_argument("--commit-message", help="commit message")


def _push_adapter(args: argparse.Namespace) -> int:
    from dpo_ext.hub.adapter_push import push_adapter

    # Leave out what was not given, so the library defaults (datasets from the training config...) apply.
    optional = {"datasets": args.datasets, "commit_message": args.commit_message}
    return _run(push_adapter, args, args.adapter_dir, eval_results=args.eval_results, training_config=args.config,
                plots=args.plot, base_model=args.base_model, beta=args.beta, license=args.license,
                eval_dataset=args.eval_dataset, **{key: value for key, value in optional.items() if value})


def _push_dataset(args: argparse.Namespace) -> int:
    from dpo_ext.hub.datasets import push_preference_dataset

    kwargs = {"commit_message": args.commit_message} if args.commit_message else {}
    return _run(push_preference_dataset, args, args.data_dir, license=args.license, source_model=args.source_model,
                reward_model=args.reward_model, description=args.description, **kwargs)


def _run(push, args: argparse.Namespace, source: Path, **kwargs) -> int:
    from dpo_ext.hub.publish import HubUploadError

    try:
        result = push(source, args.repo_id, token=args.token, private=args.private,
                      dry_run=args.dry_run if args.dry_run is not None else False, endpoint=args.endpoint, **kwargs)
    except HubUploadError as error:  # access and input errors exit 2 from `dpo_ext.cli.main`; a failed upload, 1
        report_error(args.command, error)
        return 1
    print(result.summary())
    return 0
