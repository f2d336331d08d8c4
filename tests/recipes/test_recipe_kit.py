"""recipes/recipe_kit: the small pieces the HH, TL;DR and UltraFeedback recipes share (each recipe's test runs it end
to end; these are the rules those runs do not reach)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "recipes"))

from recipe_kit.arguments import RecipeArguments, files_by_split, first, local_file  # noqa: E402
from recipe_kit.win_rate import distinct_prompts, generation_config  # noqa: E402


def test_data_files_are_split_equals_path_and_a_bare_path_is_the_train_file():
    assert files_by_split(["train=a.jsonl", "test=b.jsonl"]) == {"train": "a.jsonl", "test": "b.jsonl"}
    assert files_by_split(["a.jsonl"]) == {"train": "a.jsonl"}
    assert files_by_split(None) == {} and local_file(None, "test") is None
    with pytest.raises(ValueError, match="give each split once"):
        files_by_split(["a.jsonl", "train=b.jsonl"])
    with pytest.raises(ValueError, match="no test file .*add test=PATH"):
        local_file(["train=a.jsonl"], "test")
    assert first([1, 2, 3], None) == [1, 2, 3] and first([1, 2, 3], 2) == [1, 2]


def test_stages_that_write_the_sft_model_need_its_folder():
    with pytest.raises(ValueError, match="--stage all writes the SFT model: give --sft_output_dir"):
        RecipeArguments()
    with pytest.raises(ValueError, match="must be one of sft, dpo, all"):
        RecipeArguments(stage="ppo")
    assert RecipeArguments(stage="dpo").sft_output_dir is None


def test_win_rate_prompts_are_distinct_in_order_and_greedy_at_temperature_zero():
    chat = [{"role": "user", "content": "hi"}]
    rows = [{"prompt": "a"}, {"prompt": "b"}, {"prompt": "a"}, {"prompt": chat}, {"prompt": list(chat)}]
    assert distinct_prompts(rows, 10) == ["a", "b", chat] and distinct_prompts(rows, 1) == ["a"]
    assert generation_config(RecipeArguments(stage="dpo", temperature=0, max_new_tokens=5)) == {
        "do_sample": False, "max_new_tokens": 5}
    assert generation_config(RecipeArguments(stage="dpo", temperature=0.7))["temperature"] == 0.7
