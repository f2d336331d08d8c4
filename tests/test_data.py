"""Row validation, tokenization (same as TRL's) and collation of ranked data."""

import logging

import datasets
import pytest
import torch

from dpo_ext.data import PreferenceDataError, RankedCollator, normalize_row, prepare_ranked_dataset, tokenize_ranked

CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }} {{ m['content'] }} <eos> {% endfor %}"
    "{% if add_generation_prompt %}assistant {% endif %}"
)


def test_ranked_scored_and_pairwise_rows_normalise():
    assert normalize_row({"prompt": "p", "completions": ["a", "b", "c"], "ranks": [2, 0, 2]})["ranks"] == [1, 0, 1]
    assert normalize_row({"prompt": "p", "completions": ["a", "b", "c"], "scores": [0.1, 3, 0.1]})["ranks"] == [1, 0, 1]
    row = normalize_row({"prompt": "p", "chosen": "good", "rejected": "bad"})
    assert row["completions"] == ["good", "bad"] and row["ranks"] == [0, 1]
    # only the order of ranks matters: 1-based or sparse ranks are the same ranking
    assert normalize_row({"prompt": "p", "completions": ["a", "b", "c"], "ranks": [5, 1, 9]})["ranks"] == [1, 0, 2]


@pytest.mark.parametrize(
    "row, field, message",
    [
        ({"completions": ["a", "b"], "ranks": [0, 1]}, "prompt", "missing"),
        ({"prompt": "p", "completions": ["a"], "ranks": [0]}, "completions", "at least 2"),
        ({"prompt": "p", "completions": ["a", "b"], "ranks": [0, 1, 2]}, "ranks", "3 entries for 2"),
        ({"prompt": "p", "completions": ["a", "b"], "scores": [0.5, float("nan")]}, r"scores\[1\]", "finite"),
        ({"prompt": "p", "completions": ["a", 3], "ranks": [0, 1]}, r"completions\[1\]", "expected a string"),
        ({"prompt": "p", "completions": ["a", "  "], "ranks": [0, 1]}, r"completions\[1\]", "empty"),
        ({"prompt": "p", "completions": ["a", "b"], "ranks": [0, -1]}, r"ranks\[1\]", "non-negative integers"),
        ({"prompt": "p", "completions": ["a", "b"], "ranks": [0, 1.5]}, r"ranks\[1\]", "non-negative integers"),
        ({"prompt": "p", "completions": ["a", "b"], "ranks": [True, False]}, r"ranks\[0\]", "non-negative"),
        ({"prompt": "p", "completions": ["a", "b"]}, "ranks", "missing"),
        ({"prompt": "p", "completions": ["a", "b"], "ranks": [0, 1], "scores": [1, 0]}, "ranks", "both"),
        ({"prompt": "p", "chosen": "a"}, "rejected", "missing"),
        ({"prompt": 7, "chosen": "a", "rejected": "b"}, "prompt", "expected a string"),
    ],
)
def test_bad_rows_name_the_row_and_field(row, field, message):
    with pytest.raises(PreferenceDataError, match=rf"row 12, field '{field}'.*{message}"):
        normalize_row(row, 12)


def test_dataset_errors_name_the_row_index(tokenizer):
    rows = [{"prompt": "the movie", "completions": ["good", "bad"], "scores": [1.0, 0.0]}] * 3
    rows.append({"prompt": "the movie", "completions": ["good", "bad"], "scores": [1.0, None]})
    with pytest.raises(PreferenceDataError, match=r"row 3, field 'scores\[1\]'"):
        prepare_ranked_dataset(datasets.Dataset.from_list(rows), tokenizer)


def test_plain_text_tokenization_matches_trl(tokenizer):
    from trl import DPOConfig, DPOTrainer

    prompt, chosen, rejected = "the movie was ", "good and fun", "bad"
    prompt_ids, completion_ids = tokenize_ranked(prompt, [chosen, rejected], tokenizer)
    eos = tokenizer.eos_token_id
    assert completion_ids[0][-1] == eos and completion_ids[1][-1] == eos
    assert prompt_ids == tokenizer(prompt)["input_ids"]
    # TRL's own preprocessing of the same row
    trl_trainer = DPOTrainer.__new__(DPOTrainer)
    trl_trainer._tokenizer = tokenizer
    trl_row = trl_trainer._prepare_dataset(
        datasets.Dataset.from_list([{"prompt": prompt, "chosen": chosen, "rejected": rejected}]),
        tokenizer, DPOConfig(output_dir="unused", max_length=None, use_cpu=True), "train",
    )[0]
    assert trl_row["prompt_ids"] == prompt_ids
    assert [trl_row["chosen_ids"], trl_row["rejected_ids"]] == completion_ids


def test_conversational_rows_use_the_chat_template(tokenizer):
    tok = tokenizer.__class__(tokenizer_object=tokenizer.backend_tokenizer, eos_token="<eos>", pad_token="<pad>")
    tok.chat_template = CHAT_TEMPLATE
    prompt = [{"role": "user", "content": "the movie"}]
    completions = [[{"role": "assistant", "content": "was good"}], [{"role": "assistant", "content": "was bad"}]]
    prompt_ids, completion_ids = tokenize_ranked(prompt, completions, tok)
    assert tok.decode(prompt_ids).split() == ["<unk>", "the", "movie", "<eos>", "<unk>"]  # roles are unknown words
    assert tok.decode(completion_ids[0]).split() == ["was", "good", "<eos>"]
    dataset = prepare_ranked_dataset(
        datasets.Dataset.from_list([{"prompt": prompt, "completions": completions, "scores": [1.0, 0.0]}]), tok
    )
    assert dataset[0]["completion_ids"] == completion_ids


def test_variable_k_and_dropped_rows_are_counted(tokenizer, caplog):
    rows = [
        {"prompt": "the movie", "completions": ["good", "bad", "fine"], "ranks": [0, 2, 1]},
        {"prompt": "the film", "completions": ["good", "bad"], "ranks": [1, 0]},
        {"prompt": "the plot", "completions": ["good", "bad"], "ranks": [0, 0]},  # no preference
        {"prompt": "the plot was very very boring and", "completions": ["good", "bad"], "ranks": [0, 1]},  # too long
    ]
    with caplog.at_level(logging.WARNING, logger="dpo_ext.data"):
        dataset = prepare_ranked_dataset(datasets.Dataset.from_list(rows), tokenizer, max_length=5)
    assert len(dataset) == 2
    assert [len(c) for c in dataset["completion_ids"]] == [3, 2]
    assert "dropped 1 of 4 rows whose completions are all tied" in caplog.text
    assert "dropped 1 of 3 rows whose prompt alone has max_length=5" in caplog.text


def test_collator_builds_one_row_per_real_completion():
    examples = [
        {"prompt_ids": [5, 6], "completion_ids": [[7, 1], [8, 9, 1], [1]], "ranks": [0, 2, 1]},
        {"prompt_ids": [4], "completion_ids": [[7, 1], [9, 1]], "ranks": [1, 0], "ref_logps": [-1.0, -2.0]},
    ]
    examples[0]["ref_logps"] = [-3.0, -4.0, -5.0]
    batch = RankedCollator(pad_token_id=0)(examples)
    assert batch["input_ids"].shape == (5, 5)
    assert batch["input_ids"][1].tolist() == [5, 6, 8, 9, 1]
    assert batch["completion_mask"][1].tolist() == [0, 0, 1, 1, 1]
    assert batch["attention_mask"][3].tolist() == [1, 1, 1, 0, 0]
    assert batch["slot_index"].tolist() == [0, 1, 2, 3, 4]
    assert batch["ranks"].tolist() == [[0, 2, 1], [1, 0, -1]]
    torch.testing.assert_close(batch["ref_logps"], torch.tensor([[-3.0, -4.0, -5.0], [-1.0, -2.0, 0.0]]))


def test_collator_truncates_keeping_the_start():
    batch = RankedCollator(pad_token_id=0, max_length=4)(
        [{"prompt_ids": [5, 6, 7], "completion_ids": [[1, 2, 3], [4]], "ranks": [0, 1]}]
    )
    assert batch["input_ids"].tolist() == [[5, 6, 7, 1], [5, 6, 7, 4]]
    assert batch["completion_mask"].tolist() == [[0, 0, 0, 1], [0, 0, 0, 1]]
