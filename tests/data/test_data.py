"""Row validation, tokenization (same as TRL's) and collation of ranked data."""

import json
import logging
import math
import pickle

import datasets
import pytest
import torch
from fixtures import make_model, ranked_rows

from dpo_ext.data.collate import PackedRankedCollator, RankedCollator
from dpo_ext.data.rows import ALL_TIED, IDENTICAL, PreferenceDataError, normalize_row
from dpo_ext.data.tokenize import prepare_ranked_dataset, tokenize_ranked

CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }} {{ m['content'] }} <eos> {% endfor %}"
    "{% if add_generation_prompt %}assistant {% endif %}"
)


def test_ranked_scored_and_pairwise_rows_normalise():
    assert normalize_row({"prompt": "p", "completions": ["a", "b", "c"], "ranks": [2, 0, 2]}).ranks == [1, 0, 1]
    assert normalize_row({"prompt": "p", "completions": ["a", "b", "c"], "scores": [0.1, 3, 0.1]}).ranks == [1, 0, 1]
    row = normalize_row({"prompt": "p", "chosen": "good", "rejected": "bad"})
    assert row.completions == ["good", "bad"] and row.ranks == [0, 1] and row.no_preference is None
    # only the order of ranks matters: 1-based or sparse ranks are the same ranking
    assert normalize_row({"prompt": "p", "completions": ["a", "b", "c"], "ranks": [5, 1, 9]}).ranks == [1, 0, 2]


@pytest.mark.parametrize("prompt", ["", "  \n", [{"role": "user", "content": " "}, {"role": "system", "content": ""}]])
def test_empty_prompts_are_refused_saying_what_to_do(prompt):
    with pytest.raises(PreferenceDataError, match=r"^row 3, field 'prompt': empty prompt.*BOS token") as info:
        normalize_row({"prompt": prompt, "chosen": "a", "rejected": "b"}, 3)
    assert (info.value.row, info.value.field, info.value.dataset) == (3, "prompt", None)


def _merging_tokenizer():
    """BPE that merges 'a' + 'b' into one token: the prompt 'a' gives no token of its own before 'b...'."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<eos>": 1, "a": 2, "b": 3, "c": 4, "ab": 5}
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.BPE(vocab=vocab, merges=[("a", "b")])),
                                   eos_token="<eos>", pad_token="<pad>")


def test_a_prompt_that_merges_into_every_completion_is_refused():
    tok = _merging_tokenizer()
    # a longer prompt keeps the tokens before the merge; the merged token starts every completion
    assert tokenize_ranked("ca", ["b", "c"], tok) == ([4], [[5, 1], [2, 4, 1]])
    rows = [{"prompt": "ca", "completions": ["b", "c"], "ranks": [0, 1]},
            {"prompt": "a", "completions": ["b", "c"], "ranks": [0, 1]}]  # 'a' + 'b' is one token: no prompt left
    with pytest.raises(PreferenceDataError, match=r"^eval dataset, row 1, field 'prompt': .*no token of its own"):
        prepare_ranked_dataset(datasets.Dataset.from_list(rows), tok, name="eval")


def test_identical_completions_collapse_into_the_best_ranked_copy():
    row = normalize_row({"prompt": "p", "completions": ["a", "b", "a", "c"], "ranks": [3, 1, 0, 2],
                         "ref_logps": [-1.0, -2.0, -1.5, -3.0]})
    assert (row.completions, row.ranks, row.ref_logps, row.num_collapsed) == (["a", "b", "c"], [0, 1, 2],
                                                                              [-1.0, -2.0, -3.0], 1)
    assert normalize_row({"prompt": "p", "chosen": "same", "rejected": "same"}).no_preference == IDENTICAL
    chat = [{"role": "assistant", "content": "x"}]
    row = normalize_row({"prompt": [{"role": "user", "content": "p"}], "completions": [chat, list(chat)],
                         "scores": [1, 0]})
    assert row.completions == [chat] and row.no_preference == IDENTICAL
    assert normalize_row({"prompt": "p", "completions": ["a", "b"], "ranks": [4, 4]}).no_preference == ALL_TIED


def test_rows_without_preference_are_dropped_and_repeats_counted(tokenizer, caplog):
    ok = {"prompt": "the movie", "completions": ["good", "bad"], "ranks": [0, 1]}
    rows = [
        ok,
        dict(ok),  # an exact repeat: kept (a weighting choice) but counted
        {"prompt": "the film", "completions": ["good", "good"], "ranks": [0, 1]},  # chosen == rejected
        {"prompt": "the plot", "completions": ["good", "bad", "good"], "ranks": [1, 0, 2]},  # one copy collapses
        {"prompt": "the story", "completions": ["good", "bad"], "ranks": [0, 0]},  # all tied
    ]
    with caplog.at_level(logging.INFO, logger="dpo_ext.data"):
        dataset = prepare_ranked_dataset(datasets.Dataset.from_list(rows), tokenizer)
    assert dataset["row_index"] == [0, 1, 3]
    assert dataset["ranks"] == [[0, 1], [0, 1], [1, 0]]
    assert "collapsed 2 identical completions" in caplog.text
    assert "dropped 2 of 5 rows with no preference (1 whose completions are all identical, 1 whose completions " \
           "are all tied)" in caplog.text
    assert "1 row repeats an earlier row exactly" in caplog.text


@pytest.mark.parametrize("ref_logps, field, message", [
    ([-1.0, float("nan")], r"ref_logps\[1\]", "finite"),
    ([-1.0, float("inf")], r"ref_logps\[1\]", "finite"),
    ([-1.0], "ref_logps", "1 entries for 2 completions"),
    (None, "ref_logps", "missing"),
])
def test_ref_logps_must_be_k_finite_numbers(ref_logps, field, message):
    text = {"prompt": "p", "chosen": "a", "rejected": "b", "ref_logps": ref_logps}
    tokens = {"prompt_ids": [5], "completion_ids": [[6], [7]], "ranks": [0, 1], "ref_logps": ref_logps}
    for row in (text, tokens):
        with pytest.raises(PreferenceDataError, match=rf"row 4, field '{field}': .*{message}"):
            normalize_row(row, 4)


def test_tokenized_datasets_are_checked_and_their_ranks_made_dense(tokenizer):
    rows = [{"prompt_ids": [5, 6], "completion_ids": [[7, 1], [8, 1], [9, 1], [10, 1]], "ranks": [0, 1, 2, 5],
             "ref_logps": [-1.0, -2.0, -3.0, -4.0], "row_index": None},
            {"prompt_ids": [5], "completion_ids": [[7, 1], [8, 1]], "ranks": [1, 0], "ref_logps": [-1.0, -2.0],
             "row_index": 42}]
    dataset = prepare_ranked_dataset(datasets.Dataset.from_list(rows), tokenizer)
    assert dataset["ranks"] == [[0, 1, 2, 3], [1, 0]]
    assert dataset["row_index"] == [0, 42]  # its own index, unless it had one
    assert dataset["ref_logps"][0] == [-1.0, -2.0, -3.0, -4.0]


@pytest.mark.parametrize("change, field, message", [
    ({"prompt_ids": []}, "prompt_ids", "empty prompt"),
    ({"completion_ids": [[7, 1], []]}, r"completion_ids\[1\]", "non-empty list of token ids"),
    ({"completion_ids": [[7, 1]], "ranks": [0]}, "completion_ids", "at least 2"),
    ({"ranks": [0, -1]}, r"ranks\[1\]", "non-negative integers"),
    ({"ranks": [0, 1, 2]}, "ranks", "3 entries for 2"),
    ({"ref_logps": [-1.0, math.nan]}, r"ref_logps\[1\]", "finite"),
])
def test_bad_tokenized_rows_name_the_dataset_row_and_field(tokenizer, change, field, message):
    good = {"prompt_ids": [5], "completion_ids": [[7, 1], [8, 1]], "ranks": [0, 1], "ref_logps": [-1.0, -2.0]}
    dataset = datasets.Dataset.from_list([good, {**good, **change}])
    with pytest.raises(PreferenceDataError, match=rf"^train dataset, row 1, field '{field}': .*{message}"):
        prepare_ranked_dataset(dataset, tokenizer)


def test_errors_carry_the_dataset_row_and_field_and_survive_pickling(tokenizer):
    rows = [{"prompt": "the movie", "chosen": "good", "rejected": "bad"}] * 2
    rows.append({"prompt": "the movie", "chosen": " ", "rejected": "bad"})
    with pytest.raises(PreferenceDataError) as info:
        prepare_ranked_dataset(datasets.Dataset.from_list(rows), tokenizer, name="eval")
    error = info.value
    assert str(error) == "eval dataset, row 2, field 'chosen': empty completion"
    assert (error.dataset, error.row, error.field, error.problem) == ("eval", 2, "chosen", "empty completion")
    copy = pickle.loads(pickle.dumps(error))  # datasets.map(num_proc=...) sends errors between processes
    assert (str(copy), copy.row, copy.field) == (str(error), 2, "chosen")


def test_scorer_errors_count_prompts_keep_the_completion_and_survive_pickling():
    error = PreferenceDataError("empty completion", 1, "completions[0]", completion=0, unit="prompt")
    assert str(error) == "prompt 1, completion 0: empty completion"
    copy = pickle.loads(pickle.dumps(error))
    assert (str(copy), copy.row, copy.field, copy.completion, copy.unit) == (str(error), 1, "completions[0]", 0,
                                                                             "prompt")
    assert str(copy.located(row=4, unit="row")) == "row 4, field 'completions[0]': empty completion"


def test_both_collators_carry_the_dataset_row_numbers(tokenizer):
    rows = ranked_rows(4, k=3)
    rows[1]["ranks"] = [0, 0, 0]  # dropped: the batch must name the rows that are left
    examples = list(prepare_ranked_dataset(datasets.Dataset.from_list(rows), tokenizer))
    for collator in (RankedCollator(pad_token_id=0), PackedRankedCollator(pad_token_id=0)):
        row_index = collator(examples)["row_index"]
        assert row_index.dtype == torch.long and row_index.tolist() == [0, 2, 3]
        bare = [{k: v for k, v in e.items() if k != "row_index"} for e in examples]
        assert "row_index" not in collator(bare)
        with pytest.raises(PreferenceDataError, match="row 7, field 'prompt_ids': empty"):
            collator([{**examples[0], "prompt_ids": [], "row_index": 7}])


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


def test_integral_float_ranks_are_ranks(tokenizer):
    """Arrow stores a ranks column as floats once one row has a float: 0.0 is rank 0, 0.5 stays an error."""
    assert normalize_row({"prompt": "p", "completions": ["a", "b"], "ranks": [1.0, 0.0]}).ranks == [1, 0]
    rows = [{"prompt": "the movie ", "completions": ["good", "bad"], "ranks": [0, 1]}] * 2
    dataset = prepare_ranked_dataset(datasets.Dataset.from_list(rows + [{**rows[0], "ranks": [1.0, 0.0]}]), tokenizer)
    assert dataset["ranks"] == [[0, 1], [0, 1], [1, 0]]
    for bad in ([0.5, 1.0], [math.nan, 0.0], [math.inf, 0.0], [-1.0, 0.0]):
        with pytest.raises(PreferenceDataError, match=r"field 'ranks\[0\]'"):
            normalize_row({"prompt": "p", "completions": ["a", "b"], "ranks": bad}, 0)


def test_chat_messages_need_string_role_and_content():
    chat = {"prompt": [{"role": "user", "content": "p"}], "chosen": [{"role": "assistant", "content": ""},
                                                                       {"role": "assistant", "content": "a"}],
            "rejected": [{"role": "assistant", "content": "b"}]}
    assert normalize_row(chat).completions[0][0]["content"] == ""  # one empty message among others is fine
    for field, message in (("prompt", {"role": None, "content": "p"}), ("chosen", {"role": "assistant"}),
                           ("rejected", {"role": "assistant", "content": 3})):
        with pytest.raises(PreferenceDataError, match=rf"row 4, field '{field}': message 0"):
            normalize_row({**chat, field: [message]}, 4)


def test_an_empty_dataset_is_named(tokenizer):
    empty = datasets.Dataset.from_dict({"prompt": [], "completions": [], "ranks": []})
    with pytest.raises(PreferenceDataError, match="eval dataset is empty"):
        prepare_ranked_dataset(empty, tokenizer, name="eval")


def test_plain_text_tokenization_matches_trl(tokenizer, tmp_path):
    from trl import DPOConfig, DPOTrainer

    prompt, chosen, rejected = "the movie was ", "good and fun", "bad"
    prompt_ids, completion_ids = tokenize_ranked(prompt, [chosen, rejected], tokenizer)
    eos = tokenizer.eos_token_id
    assert completion_ids[0][-1] == eos and completion_ids[1][-1] == eos
    assert prompt_ids == tokenizer(prompt)["input_ids"]
    # TRL's own preprocessing of the same row: the train_dataset a DPOTrainer holds once built
    config = DPOConfig(output_dir=str(tmp_path), max_length=None, use_cpu=True, bf16=False, report_to="none",
                       gradient_checkpointing=False)
    trl_trainer = DPOTrainer(make_model(tokenizer), ref_model=make_model(tokenizer), args=config,
                             processing_class=tokenizer,
                             train_dataset=datasets.Dataset.from_list(
                                 [{"prompt": prompt, "chosen": chosen, "rejected": rejected}]))
    trl_row = trl_trainer.train_dataset[0]
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
    assert "dropped 1 of 4 rows with no preference (1 whose completions are all tied)" in caplog.text
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


def test_max_prompt_length_keeps_the_prompt_end_where_prompt_and_longest_completion_overflow(caplog):
    """The DPO paper's rule (``preference_datasets.py: tokenize_batch_element``, ``truncation_mode`` keep_end for HH),
    worked by hand with max_length 8 and max_prompt_length 4 on tokenized rows (ids as given, nothing re-tokenized):

    row 0: prompt 10 ids + longest completion 3 = 13 > 8 -> the prompt keeps its last 4 ids, 17..20;
    row 1: prompt 6 ids + longest completion 2 = 8, fits -> kept whole although longer than 4 (as the paper);
    row 2: prompt 6 ids + longest completion 3 = 9 > 8 -> cut to its last 4 ids, 33..36;
    row 3: prompt 3 ids + 2 = 5, fits -> unchanged.
    Without max_prompt_length (today's rule) row 0, whose prompt alone reaches max_length, is dropped instead.
    """
    from dpo_ext.data.tokenize import keep_prompt_end

    rows = [
        {"prompt_ids": list(range(11, 21)), "completion_ids": [[1, 2, 3], [4]], "ranks": [0, 1]},
        {"prompt_ids": [21, 22, 23, 24, 25, 26], "completion_ids": [[5, 6], [7]], "ranks": [1, 0]},
        {"prompt_ids": [31, 32, 33, 34, 35, 36], "completion_ids": [[8], [9, 9, 9]], "ranks": [0, 1]},
        {"prompt_ids": [41, 42, 43], "completion_ids": [[5, 6], [7]], "ranks": [0, 1]},
    ]
    cut = prepare_ranked_dataset(datasets.Dataset.from_list(rows), None, max_length=8, max_prompt_length=4)
    assert cut["prompt_ids"] == [[17, 18, 19, 20], [21, 22, 23, 24, 25, 26], [33, 34, 35, 36], [41, 42, 43]]
    assert cut["completion_ids"] == [r["completion_ids"] for r in rows]  # completions are the collator's to cut
    assert cut["row_index"] == [0, 1, 2, 3]
    assert keep_prompt_end([1, 2, 3], [[4, 5]], max_length=8, max_prompt_length=2) == [1, 2, 3]
    assert keep_prompt_end([1, 2, 3], [[4, 5, 6, 7, 8, 9]], max_length=8, max_prompt_length=2) == [2, 3]
    with caplog.at_level(logging.WARNING, logger="dpo_ext.data"):
        today = prepare_ranked_dataset(datasets.Dataset.from_list(rows), None, max_length=8)
    assert today["row_index"] == [1, 2, 3] and today["prompt_ids"][1] == rows[2]["prompt_ids"]
    assert "dropped 1 of 4 rows whose prompt alone has max_length=8" in caplog.text


def test_max_prompt_length_must_be_below_max_length(tmp_path):
    from dpo_ext import PLDPOConfig
    from dpo_ext.settings import SettingError

    common = dict(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    assert PLDPOConfig(**common).max_prompt_length is None
    assert PLDPOConfig(**common, max_length=512, max_prompt_length=256).max_prompt_length == 256
    for max_length, max_prompt_length in ((512, 512), (None, 256)):
        with pytest.raises(SettingError, match=r"PLDPOConfig.max_prompt_length .* below PLDPOConfig.max_length"):
            PLDPOConfig(**common, max_length=max_length, max_prompt_length=max_prompt_length)


def test_a_bom_jsonl_file_reads_the_same_in_every_command_and_is_published_as_datasets_loads_it(tmp_path):
    """One rule for a byte-order mark: `read_rows` (validate, train, score...) and `dpo-ext push-dataset` read a
    BOM-prefixed JSONL file as the same file without it; push-dataset publishes it as it is, and `datasets`' JSON
    loader (what the Hub's users load it with) gives the rows of the BOM-less file."""
    from dpo_ext.data.files import read_rows
    from dpo_ext.hub.datasets import inspect_data_file, stage_preference_dataset

    rows = [{"prompt": "the movie was ", "chosen": "good", "rejected": "bad"},
            {"prompt": "the plot ", "chosen": "held", "rejected": "sagged"}]
    text = "".join(json.dumps(row) + "\n" for row in rows)
    (tmp_path / "plain").mkdir()
    (tmp_path / "bom").mkdir()
    (tmp_path / "plain" / "train.jsonl").write_text(text, encoding="utf-8")
    (tmp_path / "bom" / "train.jsonl").write_bytes(b"\xef\xbb\xbf" + text.encode())

    read = read_rows(tmp_path / "bom" / "train.jsonl")
    assert (read.rows, read.lines) == (rows, [1, 2])
    assert inspect_data_file(tmp_path / "bom" / "train.jsonl").card_entry() == \
        inspect_data_file(tmp_path / "plain" / "train.jsonl").card_entry()
    stage_preference_dataset(tmp_path / "bom", tmp_path / "staged", repo_id="alice/prefs")
    staged = tmp_path / "staged" / "pairwise" / "train.jsonl"
    assert staged.read_bytes() == (tmp_path / "bom" / "train.jsonl").read_bytes()
    loaded = datasets.load_dataset("json", data_files=str(staged), split="train", cache_dir=str(tmp_path / "cache"))
    assert loaded.column_names == ["prompt", "chosen", "rejected"] and list(loaded) == rows
