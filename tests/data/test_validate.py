"""`dpo-ext validate`: every invalid row at once, named by line and field, and the counts training would log."""

import json
import logging

import datasets
import pytest

from dpo_ext.cli import main
from dpo_ext.data.tokenize import prepare_ranked_dataset
from dpo_ext.data.validation import validate_rows

ROWS = [
    {"prompt": "the movie", "chosen": "good", "rejected": "bad"},
    {"prompt": " ", "chosen": "good", "rejected": "bad"},  # empty prompt
    {"prompt": "the film", "completions": ["good", "bad"], "ranks": [0, -1]},  # negative rank
    {"prompt": "the plot", "chosen": "fun", "rejected": "fun"},  # no preference: identical
    {"prompt": "the movie", "chosen": "good", "rejected": "bad"},  # repeats row 0
    {"prompt": "the story", "completions": ["good", "bad"], "scores": [1, float("nan")]},  # NaN score
    {"prompt": "the story", "completions": ["good", "bad", "good"], "scores": [1, 0, 2]},  # one copy collapses
]


def _jsonl(path, rows, blank_line_after=0):
    lines = [json.dumps(r) for r in rows]
    lines.insert(blank_line_after + 1, "")  # a blank line: file lines and row numbers differ from here on
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_every_invalid_row_is_reported_with_its_line_and_field(tmp_path, capsys):
    assert main(["validate", _jsonl(tmp_path / "data.jsonl", ROWS)]) == 1
    out = capsys.readouterr().out
    assert "data.jsonl: 7 rows, 3 usable for training." in out
    assert "data.jsonl, line 3, field 'prompt': empty prompt" in out
    assert "data.jsonl, line 4, field 'ranks[1]': ranks must be non-negative integers" in out
    assert "data.jsonl, line 7, field 'scores[1]': scores must be finite numbers, got nan" in out
    assert "dropped 1 of 4 rows with no preference (1 whose completions are all identical)" in out
    assert "collapsed 2 identical completions" in out
    assert "1 row repeats an earlier row exactly" in out
    assert "FAIL: training would stop (invalid rows)." in out


def test_json_report(tmp_path, capsys):
    assert main(["validate", _jsonl(tmp_path / "data.jsonl", ROWS), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert (report["rows"], report["usable_rows"], report["trainable"], report["invalid_rows"]) == (7, 3, False, 3)
    assert report["no_preference"] == {"identical_completions": 1, "all_tied": 0}
    assert (report["collapsed_completions"], report["duplicate_rows"]) == (2, 1)
    assert [(p["row"], p["line"], p["field"]) for p in report["problems"]] == [
        (1, 3, "prompt"), (2, 4, "ranks[1]"), (5, 7, "scores[1]")]
    assert report["long_prompts"] is None and not report["tokenization_checked"]


def test_same_counts_as_the_trainer_with_a_tokenizer(tokenizer, tmp_path, capsys, caplog):
    def row(prompt, completions, ranks=(0, 1)):  # one format: Dataset.from_list takes the first row's columns
        return {"prompt": prompt + " ", "completions": completions, "ranks": list(ranks)}

    rows = [row("the movie", ["good", "bad"]), row("the plot", ["fun", "fun"]), row("the movie", ["good", "bad"]),
            row("the story", ["good", "bad", "good"], [1, 2, 0]),
            row("the plot was very very boring", ["good", "bad"]),  # the prompt alone reaches max_length
            row("the", ["good fun and a very good film", "bad"]),  # the first completion is cut
            row("we", ["good", "bad"], [1, 1])]  # all tied
    tokenizer.save_pretrained(tmp_path / "tok")
    code = main(["validate", _jsonl(tmp_path / "data.jsonl", rows), "--tokenizer", str(tmp_path / "tok"),
                 "--max-length", "5", "--json"])
    report = json.loads(capsys.readouterr().out)
    with caplog.at_level(logging.WARNING, logger="dpo_ext.data"):
        prepared = prepare_ranked_dataset(datasets.Dataset.from_list(rows), tokenizer, max_length=5)
    assert code == 0 and report["trainable"]
    assert report["usable_rows"] == len(prepared) == 4
    assert report["no_preference"] == {"identical_completions": 1, "all_tied": 1}
    assert (report["long_prompts"], report["truncated_completions"]) == (1, 1)
    for line in validate_rows(rows, tokenizer, 5).summary()[:3]:  # what training logs, word for word
        assert line in caplog.text


def test_tokenized_dataset_folder(tmp_path, capsys):
    rows = [{"prompt_ids": [5, 6], "completion_ids": [[7, 1], [8, 1], [9, 9, 9, 1]], "ranks": [0, 2, 7]},
            {"prompt_ids": [], "completion_ids": [[7, 1], [8, 1]], "ranks": [0, 1]}]
    datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)}).save_to_disk(tmp_path / "bad")
    assert main(["validate", str(tmp_path / "bad"), "--split", "test"]) == 1
    assert "bad[test]" not in (out := capsys.readouterr().out) and "bad, row 2, field 'prompt_ids': empty prompt" in out
    datasets.Dataset.from_list(rows[:1]).save_to_disk(tmp_path / "good")
    assert main(["validate", str(tmp_path / "good"), "--max-length", "5", "--json"]) == 0  # ids: no tokenizer
    report = json.loads(capsys.readouterr().out)
    assert (report["usable_rows"], report["long_prompts"], report["truncated_completions"]) == (1, 0, 1)


@pytest.mark.parametrize("rows, code, message", [
    ([{"prompt": "a", "completions": ["good", "bad"], "ranks": [0, 0]}], 1, "FAIL: training would stop (no usable "
                                                                           "row)."),
    ([ROWS[0]], 0, "OK: training would accept this data."),
])
def test_exit_status(tmp_path, capsys, rows, code, message):
    assert main(["validate", _jsonl(tmp_path / "data.jsonl", rows)]) == code
    assert message in capsys.readouterr().out


def test_unreadable_input(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": \n')
    assert main(["validate", str(bad)]) == 2
    assert "bad.jsonl, line 2: not valid JSON" in capsys.readouterr().err
    assert main(["validate", "someone/no-such-dataset"]) == 2  # offline
    assert "could not load the Hub dataset" in capsys.readouterr().err


def test_validate_counts_prompts_cut_by_max_prompt_length_as_training_cuts_them():
    """Tokenized rows, max_length 8, max_prompt_length 4: row 0 (prompt 10 + completion 3) is cut, not dropped,
    and its completion then fits (4 + 3 <= 8); row 1 (prompt 6 + completion 2 = 8) fits whole."""
    rows = [{"prompt_ids": list(range(11, 21)), "completion_ids": [[1, 2, 3], [4]], "ranks": [0, 1]},
            {"prompt_ids": [21, 22, 23, 24, 25, 26], "completion_ids": [[5, 6], [7]], "ranks": [1, 0]}]
    today = validate_rows(rows, max_length=8)
    assert (today.long_prompts, today.usable_rows) == (1, 1)
    report = validate_rows(rows, max_length=8, max_prompt_length=4)
    assert (report.long_prompts, report.cut_prompts, report.truncated_completions, report.usable_rows) == (0, 1, 0, 2)
    assert report.to_dict()["cut_prompts"] == 1 and report.to_dict()["max_prompt_length"] == 4
    assert any("cut 1 prompt" in line and "max_prompt_length=4" in line for line in report.summary())
