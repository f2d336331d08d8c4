"""The recipes' arguments: the parser of ``dpo-ext train`` (`dpo_ext.cli.parsing.trainer_parser`) over the recipe's
own fields (`RecipeArguments`, or a recipe's subclass), `dpo_ext.cli.train.TrainScriptArguments` (``hub_dry_run``),
`dpo_ext.PLDPOConfig` (every trainer field) and `trl.ModelConfig` (model, LoRA, QLoRA). Every field is a YAML key of
``--config file.yaml`` and a flag; flags override the file.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

STAGES = ("sft", "dpo", "all")


@dataclass
class RecipeArguments:
    stage: str = field(default="all", metadata={
        "help": "sft: fine-tune on the preferred responses only; dpo: preference training only (from sft_output_dir "
                "when it is set, else from model_name_or_path); all: both, in that order.", "choices": list(STAGES)})
    sft_output_dir: str | None = field(default=None, metadata={
        "help": "Folder of the SFT model (a complete model: safetensors + tokenizer). The sft stage writes it; the "
                "dpo stage starts from it."})
    data_files: list[str] | None = field(default=None, metadata={
        "help": "Local files in the dataset's published schema, as SPLIT=PATH: train=PATH test=PATH (a PATH alone is "
                "the train file). None: the Hub dataset."})
    max_train_rows: int | None = field(default=None, metadata={
        "help": "Keep the first N training rows (after the data module's filters); None: all."})
    max_eval_rows: int | None = field(default=None, metadata={
        "help": "Keep the first N test rows (evaluation and win-rate prompts); None: all."})
    sft_num_train_epochs: float = field(default=1.0, metadata={"help": "SFT epochs."})
    sft_learning_rate: float = field(default=1e-6, metadata={"help": "SFT learning rate."})
    sft_max_length: int = field(default=512, metadata={"help": "SFT: max tokens of prompt + response."})
    sft_use_peft: bool = field(default=False, metadata={
        "help": "SFT trains a LoRA (the LoRA / QLoRA fields) and saves the base with it merged; default: every "
                "weight."})
    reward_model_name: str | None = field(default=None, metadata={
        "help": "Hub id or folder of an AutoModelForSequenceClassification reward model (one output) for the win "
                "rate against the SFT policy; None: no win rate."})
    reward_batch_size: int = field(default=8, metadata={"help": "Texts per forward of the reward model."})
    win_rate_prompts: int = field(default=256, metadata={"help": "Distinct test prompts the win rate samples."})
    win_rate_vs_chosen: bool = field(default=False, metadata={
        "help": "Also report the win rate against each test prompt's preferred (chosen) response in the data, the "
                "DPO paper's baseline (text responses only)."})
    max_new_tokens: int = field(default=128, metadata={"help": "Win rate: tokens sampled per completion at most."})
    temperature: float = field(default=1.0, metadata={"help": "Win rate: sampling temperature (0: greedy)."})
    generation_seed: int = field(default=0, metadata={
        "help": "Win rate: prompt i is sampled with seed generation_seed + i, for the policy and the SFT policy "
                "alike."})

    def __post_init__(self):
        if self.stage not in STAGES:
            raise ValueError(f"--stage must be one of {', '.join(STAGES)}, got {self.stage!r}")
        if self.stage in ("sft", "all") and not self.sft_output_dir:
            raise ValueError(f"--stage {self.stage} writes the SFT model: give --sft_output_dir")
        if self.win_rate_prompts < 0 or self.max_new_tokens < 1 or self.temperature < 0:
            raise ValueError("--win_rate_prompts must be >= 0, --max_new_tokens >= 1 and --temperature >= 0")


class Run(NamedTuple):
    """The parsed arguments of one recipe run."""

    recipe: RecipeArguments
    script: object  # dpo_ext.cli.train.TrainScriptArguments
    training: object  # dpo_ext.PLDPOConfig
    model: object  # trl.ModelConfig


def parse_args(arguments=RecipeArguments, argv=None, prog=None) -> Run:
    """``argv`` (default: the command line) parsed into a `Run`; ``arguments``: the recipe's dataclass."""
    import os
    import sys

    from dpo_ext.cli.parsing import trainer_parser
    from dpo_ext.cli.train import TrainScriptArguments

    parser = trainer_parser(arguments, TrainScriptArguments, prog=prog or os.path.basename(sys.argv[0]))
    return Run(*parser.parse_args_and_config(argv))


def parse_layered(classes: tuple, defaults: Path, argv: list[str], prog: str, description: str,
                  shorthands: dict | None = None) -> tuple:
    """The parser of `parse_args` over ``classes`` with three layers: the YAML file ``defaults`` (always read), then
    ``--config FILE.yaml``, then the flags. ``shorthands`` maps a flag to the config file it stands for (``{"--quick":
    "configs/quick.yaml"}``). Returns the instances of ``classes``, then `PLDPOConfig` and `trl.ModelConfig`."""
    import yaml

    from dpo_ext.cli.parsing import trainer_parser

    argv = list(argv)
    for flag, path in (shorthands or {}).items():
        if flag in argv:
            if "--config" in argv:
                raise ValueError(f"{flag} is shorthand for --config {path}; pass one of them, not both.")
            argv.remove(flag)
            argv = ["--config", str(path)] + argv
    parser = trainer_parser(*classes, prog=prog, description=description)
    unknown = parser.set_defaults_with_config(**yaml.safe_load(Path(defaults).read_text()))
    if unknown:
        raise ValueError(f"{defaults} sets fields no argument class has: {unknown[::2]}")
    return parser.parse_args_and_config(argv)


def files_by_split(data_files: list[str] | None) -> dict[str, str]:
    """``["train=a.jsonl", "test=b.jsonl"]`` as ``{"train": "a.jsonl", "test": "b.jsonl"}``; a bare path is the
    train file."""
    files = {}
    for entry in data_files or ():
        split, sep, path = entry.partition("=")
        split, path = (split, path) if sep else ("train", entry)
        if not split or not path or split in files:
            raise ValueError(f"--data_files {entry!r}: give each split once, as SPLIT=PATH (train=..., test=...)")
        files[split] = path
    return files


def local_file(data_files: list[str] | None, split: str) -> str | None:
    """The local file of ``split``, or `None` when the recipe reads the Hub dataset (no ``data_files``)."""
    files = files_by_split(data_files)
    if not files:
        return None
    if split not in files:
        raise ValueError(f"--data_files has no {split} file (it has {', '.join(files)}): add {split}=PATH")
    return files[split]


def first(rows: list, limit: int | None) -> list:
    """The first ``limit`` rows (all of them for `None`)."""
    return rows if limit is None else rows[:limit]
