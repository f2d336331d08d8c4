"""`dpo-ext label`: rows in, the same rows with a judge's scores out (written whole), file lines named in errors."""

import json
import sys

import pytest
from fixtures import save_reward_model

from dpo_ext.cli import main
from dpo_ext.judges import load_judge

ROWS = [{"prompt": "the movie was ", "completions": ["good fun", "bad", "boring plot"], "source": "sampled"},
        {"prompt": "i saw it and ", "completions": ["loved it", "hated the actors"], "source": "sampled"}]
JUDGE = '''
def score(prompts, completions):
    return [[float(len(c.split())) for c in cs] for cs in completions]


def nan_for_bad(prompts, completions):
    return [[float("nan") if c == "bad" else 1.0 for c in cs] for cs in completions]
'''


@pytest.fixture
def judge_module(tmp_path, monkeypatch):
    """``label_judge_<test>``: a module in the working directory, as a user would write one."""
    name = f"label_judge_{abs(hash(str(tmp_path)))}"
    (tmp_path / f"{name}.py").write_text(JUDGE)
    monkeypatch.chdir(tmp_path)
    yield name
    sys.modules.pop(name, None)


def write_rows(path, *rows):
    path.write_text("".join(r if isinstance(r, str) else json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_label_adds_scores_keeps_fields_and_leaves_no_partial_file(tmp_path, judge_module, capsys):
    out = tmp_path / "out" / "labelled.jsonl"
    code = main(["label", write_rows(tmp_path / "rows.jsonl", *ROWS), "--judge", f"py:{judge_module}:score",
                 "-o", str(out), "--batch-size", "1"])
    assert code == 0
    labelled = [json.loads(line) for line in out.read_text().splitlines()]
    assert labelled == [{**ROWS[0], "scores": [2.0, 1.0, 2.0]}, {**ROWS[1], "scores": [2.0, 3.0]}]
    assert [p.name for p in out.parent.iterdir()] == ["labelled.jsonl"]
    assert "Labelled 5 completions of 2 rows" in capsys.readouterr().err


def test_label_normalizes_on_request(tmp_path, judge_module):
    out = tmp_path / "labelled.jsonl"
    assert main(["label", write_rows(tmp_path / "rows.jsonl", *ROWS), "--judge", f"py:{judge_module}:score",
                 "-o", str(out), "--normalize", "minmax"]) == 0
    assert [json.loads(line)["scores"] for line in out.read_text().splitlines()] == [[1.0, 0.0, 1.0], [0.0, 1.0]]


def test_label_with_a_reward_model_equals_the_judge(tmp_path, tokenizer):
    folder = save_reward_model(tokenizer, tmp_path / "rm")
    tokenizer.save_pretrained(folder)
    out = tmp_path / "labelled.jsonl"
    assert main(["label", write_rows(tmp_path / "rows.jsonl", *ROWS), "--judge", f"rm:{folder}", "-o", str(out),
                 "--device", "cpu", "--batch-size", "2"]) == 0
    expected = load_judge(f"rm:{folder}", device="cpu", batch_size=5)([r["prompt"] for r in ROWS],
                                                                      [r["completions"] for r in ROWS])
    got = [json.loads(line)["scores"] for line in out.read_text().splitlines()]
    assert got[0] == pytest.approx(expected[0], abs=1e-5) and got[1] == pytest.approx(expected[1], abs=1e-5)


def test_a_nan_score_names_the_file_line_completion_and_judge(tmp_path, judge_module, capsys):
    rows = write_rows(tmp_path / "rows.jsonl", ROWS[1], "\n", ROWS[0])  # ROWS[0] is on line 3
    out = tmp_path / "labelled.jsonl"
    assert main(["label", rows, "--judge", f"py:{judge_module}:nan_for_bad", "-o", str(out)]) == 2
    err = capsys.readouterr().err  # the progress bar's lines, then one error line
    assert "Traceback" not in err and err.endswith("\n") and err.count("dpo-ext label: error: ") == 1
    err = err.splitlines()[-1]
    assert err.startswith("dpo-ext label: error: ")
    assert f"rows.jsonl, line 3, field 'completions[1]': the judge py:{judge_module}:nan_for_bad returned nan" in err
    assert not out.exists()
