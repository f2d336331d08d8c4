"""Anthropic HH dialogue (DPO paper, section 6.2): SFT on the preferred responses, then DPO, both on every dialogue
of the train split; evaluated on the single-turn dialogues of the test split.

    python recipes/hh/run.py --config recipes/hh/configs/lora.yaml
    accelerate launch --config_file recipes/accelerate/ddp.yaml recipes/hh/run.py \
        --config recipes/hh/configs/lora.yaml --gradient_accumulation_steps 1

Rows: `hh_data` (the prompt is the dialogue up to its last assistant turn; pairs that part before it are dropped).
SFT and the win rate: `recipe_kit`. Training, evaluation and publishing: `dpo_ext.cli.train.run_training`.
See README.md.
"""

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # hh_data, and recipe_kit in recipes/

import hh_data  # noqa: E402
from recipe_kit.arguments import RecipeArguments, files_by_split, local_file, parse_args  # noqa: E402
from recipe_kit.sft import sft_rows  # noqa: E402
from recipe_kit.stages import sft_then_dpo  # noqa: E402

logger = logging.getLogger("hh")


@dataclass
class HHArguments(RecipeArguments):
    hh_subset: str | None = field(default=None, metadata={
        "help": "One folder of Anthropic/hh-rlhf (helpful-base, harmless-base, ...); None: the whole dataset."})
    eval_single_turn: bool = field(default=True, metadata={
        "help": "Evaluate (preference accuracy, win rate) on the single-turn dialogues of the test split only, as the "
                "paper does; training always uses every dialogue, multi-turn included."})


def parse(argv=None):
    """The run's `recipe_kit.arguments.Run` from ``argv`` (default: the command line)."""
    return parse_args(HHArguments, argv, prog="recipes/hh/run.py")


def main(argv=None) -> dict:
    run = parse(argv)
    recipe = run.recipe

    def load_split(split):
        rows, counts = hh_data.load_rows(split, local_file(recipe.data_files, split), recipe.hh_subset,
                                         single_turn=split == "test" and recipe.eval_single_turn)
        logger.warning("HH %s: %s", split, counts)
        return rows

    card = {"datasets": [] if recipe.data_files else [hh_data.DATASET],
            "eval_dataset": files_by_split(recipe.data_files).get("test", hh_data.DATASET), "eval_split": "test"}
    return sft_then_dpo(run, load_split, sft_rows, card)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
