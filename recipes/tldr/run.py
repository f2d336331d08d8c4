"""Reddit TL;DR summarization (DPO paper, section 6.2): SFT on the preferred summaries, then DPO.

    python recipes/tldr/run.py --config recipes/tldr/configs/lora.yaml
    accelerate launch --config_file recipes/accelerate/ddp.yaml recipes/tldr/run.py \
        --config recipes/tldr/configs/lora.yaml --gradient_accumulation_steps 1

Rows: `tldr_data` (Reddit posts only, TRL's TL;DR prompt). SFT and the win rate: `recipe_kit`. Training, evaluation
and publishing: `dpo_ext.cli.train.run_training`. See README.md.
"""

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # tldr_data, and recipe_kit in recipes/

import tldr_data  # noqa: E402
from recipe_kit.arguments import RecipeArguments, files_by_split, local_file, parse_args  # noqa: E402
from recipe_kit.sft import sft_rows  # noqa: E402
from recipe_kit.stages import sft_then_dpo  # noqa: E402

logger = logging.getLogger("tldr")


@dataclass
class TLDRArguments(RecipeArguments):
    tldr_dataset: str = field(default=tldr_data.DATASET, metadata={
        "help": f"{tldr_data.DATASET} (comparisons) or {tldr_data.PREFERENCE_DATASET} (the same, as TRL rows)."})
    tldr_test_split: str = field(default="validation", metadata={
        "help": "The Hub split evaluated on (the comparisons' held-out split is 'validation')."})


def parse(argv=None):
    """The run's `recipe_kit.arguments.Run` from ``argv`` (default: the command line)."""
    return parse_args(TLDRArguments, argv, prog="recipes/tldr/run.py")


def main(argv=None) -> dict:
    run = parse(argv)
    recipe = run.recipe

    def load_split(split):
        hub_split = recipe.tldr_test_split if split == "test" else split
        rows, counts = tldr_data.load_rows(hub_split, local_file(recipe.data_files, split), recipe.tldr_dataset)
        logger.warning("TL;DR %s: %s", split, counts)
        return rows

    card = {"datasets": [] if recipe.data_files else [recipe.tldr_dataset],
            "eval_dataset": files_by_split(recipe.data_files).get("test", recipe.tldr_dataset),
            "eval_split": "test" if recipe.data_files else recipe.tldr_test_split}
    return sft_then_dpo(run, load_split, sft_rows, card)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
