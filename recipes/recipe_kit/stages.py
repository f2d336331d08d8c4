"""The recipes' stages around `dpo_ext.cli.train.run_training`: DPO with the win rate as an extra result, and SFT
then DPO (the HH and TL;DR recipes)."""

import logging
from dataclasses import replace

from recipe_kit.arguments import first
from recipe_kit.sft import train_sft
from recipe_kit.win_rate import win_rate_hook

logger = logging.getLogger(__name__)


def train_dpo(run, train_rows: list[dict], eval_rows: list[dict], card_kwargs: dict, model_name_or_path=None,
              training=None, script=None) -> dict:
    """Preference training from ``model_name_or_path`` (default: ``run.model``'s), evaluated on ``eval_rows`` by the
    trainer (implicit-reward accuracy and ranking metrics) and, with a reward model, by the win rate against the
    starting model; published when ``--push_to_hub`` is set. ``training`` / ``script`` replace ``run.training`` /
    ``run.script`` (a run of several methods gives each its own output folder). Returns the evaluation."""
    from dpo_ext.cli.train import run_training

    model = replace(run.model, model_name_or_path=model_name_or_path) if model_name_or_path else run.model
    more_results = win_rate_hook(run.recipe, eval_rows, model.model_name_or_path, model.dtype)
    return run_training(script or run.script, training or run.training, model, train_rows=train_rows,
                        eval_rows=eval_rows, card_kwargs=card_kwargs, more_results=more_results)


def sft_then_dpo(run, load_split, to_sft_rows, card_kwargs: dict) -> dict:
    """``run.recipe.stage``: SFT on ``to_sft_rows(train_rows)`` into ``sft_output_dir``, then DPO from it.

    Args:
        load_split (`Callable[[str], list[dict]]`): the preference rows of ``"train"`` or ``"test"``.
        to_sft_rows (`Callable[[list[dict]], tuple[list[dict], dict]]`): SFT rows and their counts from pairs.
        card_kwargs (`dict`): passed to `dpo_ext.push_adapter` (``datasets``, ``eval_dataset``, ``eval_split``...).

    Returns:
        `dict`: the DPO evaluation (empty for ``--stage sft``).
    """
    recipe = run.recipe
    train_rows = first(load_split("train"), recipe.max_train_rows)
    if recipe.stage in ("sft", "all"):
        rows, counts = to_sft_rows(train_rows)
        logger.warning("SFT rows: %s", counts)
        train_sft(run, rows)
    if recipe.stage == "sft":
        return {}
    eval_rows = first(load_split("test"), recipe.max_eval_rows)
    return train_dpo(run, train_rows, eval_rows, card_kwargs, model_name_or_path=recipe.sft_output_dir)
