"""The one parser of the TrlParser commands (`dpo_ext.cli.parsing.trainer_parser`): grouped help that names its own
command and shows --config; and both spellings (``--max-length`` / ``--max_length``) on every ``dpo-ext`` command."""

from pathlib import Path

import pytest

from dpo_ext.cli import build_parser, main
from dpo_ext.cli.parsing import trainer_parser


@pytest.mark.parametrize("command", ["train", "precompute-ref", "iterate"])
def test_trainer_help_names_its_command_and_shows_config_and_the_common_flags_first(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: dpo-ext {command} [--config FILE.yaml]")  # precompute-ref said "dpo-ext train"
    headings = [line for line in text.splitlines() if line and not line.startswith(" ") and line.endswith(":")]
    assert headings[0] == "common flags:" and headings[-1].startswith("training (dpo_ext.PLDPOConfig")
    common = text[text.index("common flags:"):].split("\n\n")[0]
    for flag in ("--config FILE.yaml", "--model_name_or_path", "--use_peft", "--lora_r", "--loss_type", "--beta",
                 "--output_dir", "--max_steps", "--learning_rate", "--per_device_train_batch_size"):
        assert f"  {flag}" in common, flag
    assert "--lora-r LORA_R" not in text  # each flag once, under one spelling (was three lines for every flag)
    assert "  --warmup_steps" in text[text.index(headings[-1]):]  # the rest of TrainingArguments, under its heading


def test_the_recipes_parse_with_the_same_builder(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "recipes"))
    from recipe_kit.arguments import RecipeArguments, parse_args
    from trl import ModelConfig

    from dpo_ext import PLDPOConfig
    from dpo_ext.cli.train import TrainScriptArguments

    run = parse_args(RecipeArguments, ["--stage", "dpo", "--lora-r", "8", "--beta", "0.3", "--output_dir", "o"],
                     prog="recipes/x/run.py")
    assert run.model.lora_r == 8 and run.training.beta == 0.3 and run.recipe.stage == "dpo"
    assert isinstance(run.script, TrainScriptArguments) and isinstance(run.model, ModelConfig)
    assert isinstance(run.training, PLDPOConfig)
    assert trainer_parser(RecipeArguments, prog="p").format_help().index("recipe:") > 0


# Every command that has a flag of two or more words, each spelling parsed to the same value.
SPELLINGS = [
    (["score", "m", "-i", "x", "-o", "y", "--reference{}free"], "reference_free", True),
    (["score", "m", "-i", "x", "-o", "y", "--max{}length", "7"], "max_length", 7),
    (["rerank", "m", "-i", "x", "-o", "y", "--max{}batch{}tokens", "9"], "max_batch_tokens", 9),
    (["eval", "m", "-i", "x", "--base{}model", "b"], "base_model", "b"),
    (["validate", "x", "--max{}prompt{}length", "5"], "max_prompt_length", 5),
    (["label", "x", "--judge", "py:a:b", "-o", "y", "--batch{}size", "3"], "batch_size", 3),
    (["sample", "m", "-i", "x", "-o", "y", "--max{}new{}tokens", "4"], "max_new_tokens", 4),
    (["push-dataset", "d", "--repo{}id", "a/b"], "repo_id", "a/b"),
    (["push", "d", "--repo{}id", "a/b", "--commit{}message", "c"], "commit_message", "c"),
]


@pytest.mark.parametrize("argv, dest, value", SPELLINGS, ids=lambda v: v[0] if isinstance(v, list) else None)
@pytest.mark.parametrize("separator", ["-", "_"])
def test_every_command_takes_both_spellings(argv, dest, value, separator):
    args = build_parser().parse_args([a.replace("{}", separator) for a in argv])
    assert getattr(args, dest) == value


@pytest.mark.parametrize("command", ["train", "precompute-ref", "iterate"])
@pytest.mark.parametrize("separator", ["-", "_"])
def test_trainer_commands_take_both_spellings(command, separator):
    from dpo_ext.cli.iterate import make_parser as iterate_parser
    from dpo_ext.cli.train import make_parser

    parser = iterate_parser() if command == "iterate" else make_parser(command)
    parsed = parser.parse_args_and_config([f"--lora{separator}r", "6", f"--max{separator}steps", "3",
                                           "--output_dir", "o"])
    assert parsed[-1].lora_r == 6 and parsed[-2].max_steps == 3
