"""The one `trl.TrlParser` of ``dpo-ext train``, ``precompute-ref``, ``iterate`` and the recipes, and the rule that
every ``dpo-ext`` command takes both spellings of its flags.

`trainer_parser` puts a command's own dataclasses in front of `dpo_ext.PLDPOConfig` (every trainer field) and
`trl.ModelConfig` (model, LoRA, QLoRA), so every field is a flag and a YAML key of ``--config``. Its help shows the
flags a first run needs first, ``--config`` among them, then each dataclass's other fields under their own heading:
the ~150 fields of `transformers.TrainingArguments` come last, and each flag is listed once (under its ``_``
spelling), not three lines per flag.
"""

import argparse
import dataclasses

# The flags a first run sets, in the order the help lists them (those a parser lacks are skipped).
COMMON_FIELDS = (
    "model_name_or_path", "dataset_name", "eval_dataset_name", "prompts", "judge", "rounds", "k",
    "use_peft", "lora_r", "lora_alpha", "lora_target_modules",
    "loss_type", "beta", "output_dir", "max_steps", "num_train_epochs", "learning_rate",
    "per_device_train_batch_size", "gradient_accumulation_steps", "max_length",
    "precompute_ref_log_probs", "ref_cache_dir", "push_to_hub", "hub_model_id", "use_cpu",
)
# Headings of the dataclasses every trainer parser has; a command's own dataclasses are headed by their names.
_HEADINGS = {"TrainScriptArguments": "data and publishing", "IterateArguments": "rounds",
             "RecipeArguments": "recipe", "ModelConfig": "model, LoRA and quantization (trl.ModelConfig)",
             "PLDPOConfig": "training (dpo_ext.PLDPOConfig, with every transformers.TrainingArguments field)"}


class _OneSpellingFormatter(argparse.HelpFormatter):
    """Lists a flag under its first spelling only (``--lora_r LORA_R``, not also ``--lora-r LORA_R``)."""

    def _format_action_invocation(self, action):
        if not action.option_strings:
            return super()._format_action_invocation(action)
        seen, shown = set(), []
        for flag in action.option_strings:
            if flag.replace("-", "_") not in seen:
                seen.add(flag.replace("-", "_"))
                shown.append(flag)
        if action.nargs == 0:
            return ", ".join(shown)
        return ", ".join(f"{flag} {self._format_args(action, self._get_default_metavar_for_optional(action))}"
                         for flag in shown)


def trainer_parser(*script_classes, prog: str, description: str | None = None):
    """A `trl.TrlParser` over ``script_classes`` then `dpo_ext.PLDPOConfig` and `trl.ModelConfig`:
    ``parse_args_and_config`` returns one instance of each, in that order.

    Args:
        script_classes (`type`): the command's own dataclasses (`dpo_ext.cli.train.TrainScriptArguments`, a recipe's
            arguments...).
        prog (`str`): the command as the user types it (``"dpo-ext precompute-ref"``), shown in usage and errors.
        description (`str`, *optional*): what the command does, printed above the flags.
    """
    from trl import ModelConfig, TrlParser

    from dpo_ext.training.config import PLDPOConfig

    classes = (*script_classes, PLDPOConfig, ModelConfig)
    parser = TrlParser(classes, prog=prog, description=description, formatter_class=_OneSpellingFormatter,
                       usage=f"{prog} [--config FILE.yaml] [--FLAG VALUE ...]",
                       epilog="Every flag is also a YAML key of --config (flags override the file), and takes both "
                              "spellings: --lora_r or --lora-r.")
    _group_help(parser, classes)
    return parser


def _group_help(parser, classes) -> None:
    """Move the parser's flags, for help only, into: common flags (``--config`` shown), then one heading per
    dataclass. Parsing does not look at groups."""
    parser.add_argument("--config", metavar="FILE.yaml", default=argparse.SUPPRESS,  # read by TrlParser itself
                        help="YAML file of flag values (keys: the flag names); flags on the command line win")
    owner = {}
    for cls in reversed(classes):  # a field two classes share is listed under the first
        owner.update({f.name: cls.__name__ for f in dataclasses.fields(cls)})
    default = parser._optionals  # where TrlParser put every flag (no dataclass names a group)
    common = parser.add_argument_group("common flags")
    shown_order = (*classes[:-2], classes[-1], classes[-2])  # the model before the ~150 training fields
    groups = {cls.__name__: parser.add_argument_group(_heading(cls)) for cls in shown_order}
    by_dest = {}
    for action in default._group_actions:
        by_dest.setdefault(action.dest, []).append(action)
    moved = []
    for dest in ("help", "config", *COMMON_FIELDS):
        moved += [(action, common) for action in by_dest.pop(dest, [])]
    for dest, actions in by_dest.items():
        moved += [(action, groups[owner[dest]]) for action in actions if dest in owner]
    for action, group in moved:
        default._group_actions.remove(action)
        group._group_actions.append(action)
    parser._action_groups = [common, *(g for g in groups.values() if g._group_actions)]


def _heading(cls) -> str:
    """The heading of ``cls``'s flags: its own, or that of the class it extends (a recipe's `RecipeArguments`)."""
    return next((_HEADINGS[base.__name__] for base in cls.__mro__ if base.__name__ in _HEADINGS), cls.__name__)


# -- both spellings ------------------------------------------------------------------------------------------------

def accept_both_spellings(parser: argparse.ArgumentParser) -> None:
    """Let every long flag of ``parser`` and of its subcommands be typed with ``-`` or ``_`` between words
    (``--reference-free`` and ``--reference_free``), as `transformers.HfArgumentParser` does for the TrlParser
    commands. The other spelling is an alias for parsing; help shows the flag as declared."""
    for action in list(parser._actions):
        for flag in action.option_strings:
            if flag.startswith("--"):
                other = "--" + (flag[2:].replace("-", "_") if "-" in flag[2:] else flag[2:].replace("_", "-"))
                parser._option_string_actions.setdefault(other, action)
        if isinstance(action, argparse._SubParsersAction):
            for subparser in dict.fromkeys(action.choices.values()):
                accept_both_spellings(subparser)
