"""`dpo-ext train`: train a causal LM on preference rows with `PLDPOTrainer`, the way ``trl dpo`` does for DPO.

Arguments come from `trl.TrlParser` over three dataclasses, so every field is a command-line flag and a YAML key
(``--config file.yaml``; the command line overrides the file):

- `TrainScriptArguments` (below): the dataset (a Hub id, a saved dataset folder, or a JSONL/JSON/Parquet/CSV file),
  its splits and column names, and the dry-run folder for ``--push_to_hub``;
- `dpo_ext.PLDPOConfig`: every trainer field (``beta``, ``loss_type``, ``prefix_sharing``, ``reference``, ...);
- `trl.ModelConfig`: ``model_name_or_path``, ``dtype``, LoRA (``use_peft``, ``lora_r``, ...) and QLoRA
  (``load_in_4bit``).

It runs under ``accelerate launch -m dpo_ext.cli.train`` (DDP, FSDP, DeepSpeed) as under plain ``python``. At the
end it evaluates the implicit reward on the test split (``eval_rewards/accuracies`` and the ranking metrics, through
the trainer, so sharded models work), writes ``eval_results.json`` next to the adapter, and with ``--push_to_hub``
publishes the adapter with a card carrying those results (`dpo_ext.push_adapter`). Recipes call `run_training` with
their own converted rows.

``dpo-ext precompute-ref`` takes the same flags and only writes the reference log-probs, with their fingerprint, to
``--ref_cache_dir`` (`dpo_ext.reference.cache`); a later ``dpo-ext train --precompute_ref_log_probs --ref_cache_dir``
of the same inputs reuses them, and refuses them, naming what changed, otherwise.
"""

import gc
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

# What the card reports of the trainer's end-of-training evaluation (trainer key -> card name); numbers from
# `run_training`'s more_results go to the card under their own names.
CARD_METRICS = {"eval_rewards/accuracies": "preference_accuracy", "eval_rewards/top1_accuracy": "top1_accuracy",
                "eval_rewards/pairwise_accuracy": "pairwise_accuracy", "eval_rewards/kendall_tau": "kendall_tau",
                "eval_rewards/margins": "reward_margin"}
HELP = "train a causal LM on preference rows with PLDPOTrainer (TRL-style flags and --config YAML)"
PRECOMPUTE_HELP = ("write reference log-probs with their fingerprint to --ref_cache_dir (the flags of train); a train "
                   "run with the same inputs reuses them")
PRECOMPUTE_DESCRIPTION = ("Write the reference log-probs of the train (and test) rows, with their fingerprint, to "
                          "--ref_cache_dir; no training. Takes the flags of dpo-ext train: a later train run with the "
                          "same model, LoRA, tokenizer, max_length and rows reuses them.")
EVAL_RESULTS = "eval_results.json"


@dataclass
class TrainScriptArguments:
    dataset_name: str | None = field(
        default=None, metadata={"help": "Hub dataset id, saved dataset folder, or a .jsonl/.json/.parquet/.csv file "
                                        "of preference rows (pairwise, ranked or scored; see dpo_ext.data)."})
    dataset_config: str | None = field(default=None, metadata={"help": "Hub dataset configuration name."})
    dataset_train_split: str = field(default="train", metadata={"help": "Split to train on."})
    dataset_test_split: str | None = field(
        default="test", metadata={"help": "Split evaluated at the end (implicit-reward accuracy); 'none' to skip."})
    eval_dataset_name: str | None = field(
        default=None, metadata={"help": "A separate file or dataset for evaluation (its split: dataset_test_split)."})
    dataset_columns: list[str] | None = field(
        default=None, metadata={"help": "Rename columns to the row format, as ours=theirs pairs, e.g. "
                                        "prompt=question chosen=response_j rejected=response_k."})
    hub_dry_run: str | None = field(
        default=None, metadata={"help": "With --push_to_hub: stage the upload (adapter, card, results) in this "
                                        "folder instead of sending it."})


def make_parser(command: str = "train"):
    """The `trl.TrlParser` of ``dpo-ext train`` (or ``precompute-ref``, which takes the same flags)."""
    from dpo_ext.cli.parsing import trainer_parser

    description = (PRECOMPUTE_DESCRIPTION if command == "precompute-ref" else
                   "Train a causal LM on preference rows with PLDPOTrainer (Plackett-Luce DPO; K = 2 is DPO).")
    return trainer_parser(TrainScriptArguments, prog=f"dpo-ext {command}", description=description)


def register(subparsers) -> None:
    """Lists the commands in ``dpo-ext --help``; `dpo_ext.cli.main` hands their arguments to `main` unparsed,
    because `TrlParser` (not argparse subparsers) reads them."""
    subparsers.add_parser("train", help=HELP, add_help=False)
    subparsers.add_parser("precompute-ref", add_help=False, help=PRECOMPUTE_HELP)


# -- data ----------------------------------------------------------------------------------------------------------

def _renamed(rows, columns: list[str] | None):
    """``rows`` (`dpo_ext.cli.common.Rows`) with columns renamed ours=theirs; each keeps its file line."""
    from dpo_ext.cli.common import Rows

    if not columns:
        return rows
    mapping = {}
    for pair in columns:
        ours, sep, theirs = pair.partition("=")
        if not sep or not ours or not theirs:
            raise ValueError(f"--dataset_columns {pair!r}: give ours=theirs, e.g. prompt=question")
        mapping[theirs] = ours
    first = rows.rows[0]
    missing = sorted(set(mapping) - set(first))
    if missing:
        raise ValueError(f"{rows.source}: no column {', '.join(map(repr, missing))} to rename (columns: "
                         f"{', '.join(first)})")
    renamed = [{mapping.get(k, k): v for k, v in row.items()} for row in rows.rows]
    return Rows(rows.source, renamed, rows.lines)


def load_split(source: str, split: str, config: str | None = None, columns: list[str] | None = None):
    """The rows of one split of ``source`` (see `TrainScriptArguments.dataset_name`), columns renamed, as a
    `dpo_ext.cli.common.Rows` (``.rows``; ``.error()`` names a row by its file line). A folder or Hub dataset without
    ``split`` raises `KeyError`."""
    from dpo_ext.cli.common import read_rows

    return _renamed(read_rows(source, split, config), columns)


def check_rows(rows) -> None:
    """The trainer's row rules (`dpo_ext.data.validation.validate_rows`, as `dpo-ext validate` applies them) on
    every row of ``rows`` (`Rows`), before the model loads: seconds, where loading takes minutes. The first invalid
    row is named by its file line and field. Tokenization is checked by the trainer (`build_trainer` names the
    line of a row it refuses)."""
    from dpo_ext.data.validation import validate_rows

    report = validate_rows(rows.rows)
    if report.problems:
        raise rows.error(report.problems[0])
    if not report.trainable:
        raise ValueError(f"{rows.source}: no usable row ({'; '.join(report.summary())}); `dpo-ext validate "
                         f"{rows.source}` reports every row")


def names_a_split(split: str | None) -> bool:
    return split not in (None, "", "none", "None")


# -- models --------------------------------------------------------------------------------------------------------

def load_policy(model_args, training_args):
    """The model ``model_args`` names (`dpo_ext.modeling.loading.load_causal_lm`: a causal LM, weights from
    safetensors only and all of them), quantized for QLoRA when asked."""
    import torch
    from trl import get_quantization_config

    from dpo_ext.modeling.loading import load_causal_lm
    from dpo_ext.training.engines import check_launch

    if not model_args.model_name_or_path:
        raise ValueError("--model_name_or_path is required (a Hub id or a local model folder)")
    quantization = get_quantization_config(model_args)
    check_launch(quantized=quantization is not None, quant_storage=model_args.bnb_4bit_quant_storage,
                 dtype=model_args.dtype)  # before minutes of loading
    kwargs = {"revision": model_args.model_revision, "attn_implementation": model_args.attn_implementation}
    if model_args.dtype not in (None, "auto"):
        kwargs["dtype"] = getattr(torch, model_args.dtype)
    if quantization is not None:
        if not model_args.use_peft:
            raise ValueError("--load_in_4bit / --load_in_8bit train a LoRA on a quantized base (QLoRA): add "
                             "--use_peft")
        if not torch.cuda.is_available():
            raise ValueError("--load_in_4bit / --load_in_8bit need a CUDA GPU (bitsandbytes); on this machine "
                             "train in full precision without them")
        from accelerate import PartialState

        kwargs.update(quantization_config=quantization, device_map={"": PartialState().local_process_index})
    model = load_causal_lm(model_args.model_name_or_path, what="--model_name_or_path",
                           hint="pass a causal LM's local folder or Hub id", **kwargs)
    if quantization is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=training_args.gradient_checkpointing)
    return model


def lora_config(model_args, model=None):
    """`trl.get_peft_config` of ``model_args`` (`trl.ModelConfig`), except that one plain module name stays a name:
    `trl.ModelConfig` turns a one-item ``lora_target_modules`` list into a string, which PEFT reads as a regular
    expression over full module paths (``c_attn`` would then match no module). Given ``model``, ``fan_in_fan_out``
    follows it: GPT-2's Conv1D layers store weights transposed (PEFT would correct it itself, with a warning)."""
    from trl import get_peft_config

    config = get_peft_config(model_args)
    targets = getattr(config, "target_modules", None)
    if isinstance(targets, str) and targets != "all-linear" and targets.isidentifier():
        config.target_modules = {targets}
    if config is not None and model is not None:
        from transformers.pytorch_utils import Conv1D

        config.fan_in_fan_out = any(isinstance(module, Conv1D) for module in model.modules())
    return config


# -- the run -------------------------------------------------------------------------------------------------------

def run_training(script_args, training_args, model_args, train_rows=None, eval_rows=None, card_kwargs=None,
                 more_results=None) -> dict:
    """Train, save the adapter (or model) to ``training_args.output_dir``, evaluate, and publish when asked.

    Args:
        train_rows, eval_rows (`list[dict]`, *optional*): preference rows; loaded from ``script_args`` when omitted
            (``eval_rows``: only when a test split is named).
        card_kwargs (`dict`, *optional*): extra arguments of `dpo_ext.push_adapter` (``datasets``, ``license``...).
        more_results (*optional*): called on the main process with the saved adapter's folder once training and
            the trainer's evaluation are done; the numbers it returns join ``eval_results.json`` and the card
            (a recipe's generation win rate, say).

    Returns:
        `dict`: the end-of-training evaluation (``eval_*`` metrics, and ``more_results``'s; empty without either).
    """
    push, training_args.push_to_hub = training_args.push_to_hub, False  # dpo_ext publishes, after evaluation
    if push:
        _check_publishing(training_args, script_args)
    train_rows, eval_rows = _rows(script_args, train_rows, eval_rows)
    trainer = build_trainer(training_args, model_args, train_rows, eval_rows)
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)
    results = trainer.evaluate() if _listed(eval_rows) else {}
    if trainer.accelerator.is_main_process:
        if more_results is not None:
            results.update(more_results(training_args.output_dir))
        (Path(training_args.output_dir) / EVAL_RESULTS).write_text(json.dumps(results, indent=2) + "\n")
        _report(training_args.output_dir, trainer.reference_summary, results)
        if push:
            _publish(training_args, script_args, model_args, results, card_kwargs or {})
    trainer.accelerator.wait_for_everyone()
    return results


def _report(output_dir, reference: str, results: dict) -> None:
    """What a run leaves, on stdout: where the adapter and the evaluation went, the reference, the final numbers."""
    print(f"adapter: {output_dir}")
    print(f"reference: {reference}")
    if results:
        shown = " ".join(f"{key.removeprefix('eval_')}={value:.4g}" if isinstance(value, float) else
                         f"{key.removeprefix('eval_')}={value}" for key, value in results.items()
                         if not isinstance(value, (dict, list)))
        print(f"evaluation ({Path(output_dir) / EVAL_RESULTS}): {shown}")
    else:
        print("evaluation: none (no test split; --eval_dataset_name FILE evaluates on one)")


def build_trainer(training_args, model_args, train_rows, eval_rows):
    """`PLDPOTrainer` on the model ``model_args`` names, with the LoRA its flags ask for. ``train_rows`` and
    ``eval_rows`` are lists of rows, or `Rows` read from files (checked before the model loads; a row the trainer
    refuses is then named by its file line)."""
    from dpo_ext.cli.common import Rows
    from dpo_ext.data.rows import PreferenceDataError
    from dpo_ext.modeling.tokenizers import load_tokenizer
    from dpo_ext.training.trainer import PLDPOTrainer

    read = {name: rows for name, rows in (("train", train_rows), ("eval", eval_rows)) if isinstance(rows, Rows)}
    for rows in read.values():
        check_rows(rows)
    model = load_policy(model_args, training_args)
    tokenizer = load_tokenizer(model_args.model_name_or_path, "--model_name_or_path", model_args.model_revision)
    try:
        return PLDPOTrainer(model, args=training_args, train_dataset=_listed(train_rows),
                            eval_dataset=_listed(eval_rows), processing_class=tokenizer,
                            peft_config=lora_config(model_args))
    except PreferenceDataError as error:
        rows = read.get(error.dataset)
        if rows is None or error.row is None:
            raise
        raise rows.error(error) from None


def _listed(rows):
    return getattr(rows, "rows", rows)  # a Rows' list, or the list (or None) given


def precompute_reference(script_args, training_args, model_args) -> dict:
    """`dpo-ext precompute-ref`: fill ``training_args.ref_cache_dir`` with the reference log-probs of the train (and
    test) rows, each file with the fingerprint of what produced it; no training. A `dpo-ext train` of the same
    model, adapter settings, tokenizer, ``max_length`` and data, given the folder, reuses them, on this machine or
    another. Returns the fingerprint of the train rows."""
    if not training_args.ref_cache_dir:
        raise ValueError("--ref_cache_dir is required: the folder to write the reference log-probs to")
    trainer = build_trainer(training_args, model_args, *_rows(script_args))
    logger.warning("Reference log-probs (%s) written to %s", trainer.reference.name, training_args.ref_cache_dir)
    return trainer.reference_fingerprint


def _rows(script_args, train_rows=None, eval_rows=None) -> tuple:
    """``(train_rows, eval_rows)``: those given, else loaded as ``script_args`` say (eval rows only when a test split
    is named; `None` when there are none)."""
    if train_rows is None:
        try:
            train_rows = load_split(script_args.dataset_name or _missing_dataset(), script_args.dataset_train_split,
                                    script_args.dataset_config, script_args.dataset_columns)
        except KeyError as error:  # a dataset folder without that split
            raise ValueError(f"--dataset_train_split: {error.args[0]}") from None
    if eval_rows is None and names_a_split(script_args.dataset_test_split):
        eval_rows = _eval_rows(script_args)
    return train_rows, eval_rows


def _missing_dataset():
    raise ValueError("--dataset_name is required (a Hub dataset id, a dataset folder, or a .jsonl file)")


def _eval_rows(script_args):
    source, split = script_args.eval_dataset_name or None, script_args.dataset_test_split
    if source is None:
        source = script_args.dataset_name
        if source is None:  # rows given in Python, and no dataset named to evaluate on
            return None
        if Path(source).is_file():  # one file is one split: never evaluate on the training rows
            logger.warning("%s is a single file (the training split): no evaluation at the end; give a test file "
                           "with --eval_dataset_name, or --dataset_test_split none to silence this", source)
            return None
    elif Path(source).is_file():  # a test file holds one split: the default test split name does not apply to it
        split = None
    try:
        return load_split(source, split, script_args.dataset_config, script_args.dataset_columns)
    except KeyError as error:  # a dataset folder without that split
        logger.warning("%s: no evaluation at the end (name a split with --dataset_test_split, or a file with "
                       "--eval_dataset_name)", error.args[0])
        return None


def _check_publishing(training_args, script_args) -> None:
    """Before any work: a push needs a repository id, and (unless staged) a token that can write to it."""
    if not training_args.hub_model_id:
        raise ValueError("--push_to_hub needs --hub_model_id (namespace/name of the adapter repository)")
    if script_args.hub_dry_run is None:
        from dpo_ext.hub.publish import check_hub_access

        check_hub_access(training_args.hub_model_id, token=training_args.hub_token)


def _publish(training_args, script_args, model_args, results: dict, card_kwargs: dict) -> None:
    from dpo_ext.hub.adapter_push import push_adapter
    from dpo_ext.locations import looks_like_hub_id

    dataset = script_args.eval_dataset_name or script_args.dataset_name
    hub_datasets = [d for d in (script_args.dataset_name, script_args.eval_dataset_name)
                    if d and not Path(d).exists() and looks_like_hub_id(d)]
    card_kwargs = {"datasets": hub_datasets,
                   "eval_dataset": dataset, "eval_split": script_args.dataset_test_split, **card_kwargs}
    result = push_adapter(
        training_args.output_dir, training_args.hub_model_id, token=training_args.hub_token,
        private=bool(training_args.hub_private_repo), dry_run=script_args.hub_dry_run or False,
        eval_results={CARD_METRICS.get(key, key): value for key, value in results.items()
                      if key in CARD_METRICS or not key.startswith("eval_") and key != "epoch"},
        base_model=model_args.model_name_or_path, **card_kwargs)
    logger.warning("%s", result.summary())


def main(argv=None, command: str = "train") -> int:
    """``dpo-ext train`` (or, with ``command="precompute-ref"``, ``dpo-ext precompute-ref``) on ``argv``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if command == "precompute-ref":
        argv = ["--precompute_ref_log_probs", "true", *argv]  # what the command is for
    script_args, training_args, model_args = make_parser(command).parse_args_and_config(argv)
    try:
        if command == "precompute-ref":
            precompute_reference(script_args, training_args, model_args)
        else:
            run_training(script_args, training_args, model_args)
    finally:
        close_process_group()
    return 0


def close_process_group() -> None:
    """Destroy the process group a multi-process launch opened (the Trainer opens it and never closes it) and collect
    what still refers to it, while the interpreter is alive.

    Left to interpreter shutdown, a gloo worker thread freeing a finished collective (it holds Python tensors) wants
    the GIL after finalisation began; Python ends that thread and C++ aborts the process ("terminate called without
    an active exception", SIGABRT) after a successful run: 5 of 14 two-process runs here, 0 of 16 with this."""
    dist = sys.modules.get("torch.distributed")  # never imported here just to close: the fast paths skip torch
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.barrier()  # no rank tears down while another still talks to it
        dist.destroy_process_group()
        gc.collect()


if __name__ == "__main__":  # accelerate launch -m dpo_ext.cli.train ...
    logging.basicConfig(level=logging.INFO)
    sys.exit(main())
