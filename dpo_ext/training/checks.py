"""Checks the trainer runs before training starts, so that a bad setting or row fails now, naming what and where,
rather than hours into a run inside torch (or never, training silently on garbage)."""

import os
import tempfile

from dpo_ext.data.rows import PreferenceDataError, normalize_row
from dpo_ext.data.validation import rows_as_dataset
from dpo_ext.modeling.models import vocabulary_problem


def unwritable_folder(folder) -> str | None:
    """Why files cannot be written into ``folder`` (created if missing), or None. A real write is tried: permission
    bits say nothing to root, and nothing about read-only mounts."""
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        return error.strerror or str(error)
    return None


def check_output_dir(args) -> None:
    """Fail now, not at the first checkpoint hours into the run, when output_dir cannot be written."""
    problem = unwritable_folder(args.output_dir) if args.should_save else None
    if problem:
        raise ValueError(f"output_dir {args.output_dir!r} cannot be written ({problem}): checkpoints and the trained "
                         "adapter go there; choose a writable folder")


def rows_to_dataset(rows: list, name: str):
    """A list of dicts as a `datasets.Dataset` (`dpo_ext.data.validation.rows_as_dataset`: every row's columns, a
    value of another type than the rows above named), each row checked by the row rules first."""
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            raise PreferenceDataError(f"expected a dict, got {type(row).__name__}", index, dataset=name)
        try:
            normalize_row(row, index)
        except PreferenceDataError as error:
            raise error.located(dataset=name) from None
    return rows_as_dataset(rows, name)


def check_rows_fit(dataset, name: str, limit: int | None, max_length: int | None, vocab_size: int | None) -> None:
    """Rows the model cannot take fail inside torch at the first such batch (a device-side assert on a GPU),
    possibly hours in: token ids outside the vocabulary (pre-tokenized data from another tokenizer) and rows longer
    than the model's positions. Find them before training starts."""
    check_length = limit is not None and (max_length is None or max_length > limit)
    for start in range(0, len(dataset), 1000):
        batch = dataset[start : start + 1000]
        for offset, (prompt, completions) in enumerate(zip(batch["prompt_ids"], batch["completion_ids"])):
            row = batch["row_index"][offset] if "row_index" in batch else start + offset
            fields = [("prompt_ids", prompt)] + [(f"completion_ids[{k}]", c) for k, c in enumerate(completions)]
            for field, ids in fields:
                problem = vocabulary_problem(ids, vocab_size)
                if problem is not None:
                    raise PreferenceDataError(problem, row, field, name)
            length = len(prompt) + max(len(c) for c in completions)
            if max_length is not None:
                length = min(length, max_length)
            if check_length and length > limit:
                raise PreferenceDataError(
                    f"prompt + completion is {length} tokens, more than the model's {limit} positions; set "
                    f"max_length={limit} or lower (longer rows are then truncated)", row, dataset=name)


def check_weights_present(model, what: str) -> None:
    """Refuse a model whose weights are not all on this process: empty "meta" tensors (loaded on another process
    only) or DeepSpeed ZeRO-3 partitions. The trainer runs it before any engine shards it (`dpo_ext.training.engines`
    says which launch settings cause this)."""
    for name, param in model.named_parameters():
        if param.is_meta or (hasattr(param, "ds_id") and param.numel() == 0):
            raise ValueError(
                f"{what}'s weight {name!r} is not on this process (an empty meta tensor, or a ZeRO-3 partition): "
                "PLDPOTrainer runs the model before the engine shards it, so every process needs the whole model. "
                "Under accelerate, set fsdp_cpu_ram_efficient_loading: false (FSDP) or zero3_init_flag: false "
                "(DeepSpeed ZeRO-3), as the configs in recipes/accelerate/ do")
