"""Results on Hub benchmarks (`dpo_ext.hub.eval_results`): the card's `model-index` and the `.eval_results/` files the
Hub reads for a benchmark's leaderboard are rendered from one `eval_results` mapping, staged together and uploaded in
the same commit (through the loopback Hub of `tests/hub_server.py`)."""

import json
import logging

import pytest
import yaml
from fixtures import TOKEN
from test_hub import EVAL, make_adapter, push

from dpo_ext.hub.eval_results import HubBenchmark

RB2 = "allenai/reward-bench-2"
RB2_RESULTS = {"overall": 0.71875, "Factuality": 0.625, "Precise IF": 0.5, "Math": 0.75, "Safety": 0.875,
               "Focus": 0.9375, "Ties": 0.625}
# RewardBench 2 as it would be once registered on the Hub with two leaderboards (it is not, as far as dpo_ext knows).
RB2_ON_HUB = HubBenchmark(RB2, tasks={"overall": "overall", "factuality": "Factuality"})
RB2_FILE = ".eval_results/reward-bench-2.yaml"
RB2_YAML = """\
- dataset:
    id: allenai/reward-bench-2
    task_id: overall
  value: 0.71875
- dataset:
    id: allenai/reward-bench-2
    task_id: factuality
  value: 0.625
"""
WITH_RB2 = {**EVAL, "benchmarks": {RB2: RB2_RESULTS}}


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    return make_adapter(tmp_path_factory)  # test_hub's adapter folder


def staged(adapter, folder, **kwargs) -> dict[str, bytes]:
    """Stage the adapter as `push` in test_hub does, but as a dry run (no network), into `folder`; its files by path
    in the repository."""
    from dpo_ext import push_adapter

    folder_in, _, plot = adapter
    result = push_adapter(folder_in, "alice/tiny-pl", dry_run=folder, plots=[plot], **kwargs)
    return {p.relative_to(result.staging_dir).as_posix(): p.read_bytes()
            for p in result.staging_dir.rglob("*") if p.is_file()}


def model_index(readme: bytes) -> dict:
    """The card's `model-index` as {(dataset id, metric): EvalResult}."""
    from huggingface_hub import ModelCard

    return {(r.dataset_type, r.metric_type): r for r in ModelCard(readme.decode()).data.eval_results or []}


def leaderboard_files(files: dict) -> list[str]:
    return sorted(path for path in files if path.startswith(".eval_results/"))


def test_registered_benchmark_gets_its_eval_results_file_with_the_card_numbers(adapter, tmp_path):
    from huggingface_hub import ModelCard, parse_eval_result_entries

    results_file = tmp_path / "eval.json"  # as `dpo-ext push --eval-results` reads it
    results_file.write_text(json.dumps(WITH_RB2))
    files = staged(adapter, tmp_path / "staged", eval_results=results_file, hub_benchmarks=[RB2_ON_HUB])

    assert leaderboard_files(files) == [RB2_FILE]
    assert files[RB2_FILE].decode() == RB2_YAML
    entries = parse_eval_result_entries(yaml.safe_load(files[RB2_FILE]))  # the Hub client's own reader
    assert [(e.dataset_id, e.task_id) for e in entries] == [(RB2, "overall"), (RB2, "factuality")]

    # One source: every number of the file is the card's, and both are those passed in.
    index = model_index(files["README.md"])
    for entry in entries:
        metric = RB2_ON_HUB.tasks[entry.task_id]
        assert entry.value == index[(RB2, metric)].metric_value == RB2_RESULTS[metric]
    assert {metric: r.metric_value for (dataset, metric), r in index.items() if dataset == RB2} == RB2_RESULTS
    assert {metric: r.metric_value for (dataset, metric), r in index.items() if dataset != RB2} == EVAL
    assert {(r.dataset_name, r.dataset_split) for (dataset, _), r in index.items() if dataset == RB2} == {
        ("RewardBench 2", "test")}  # split and name from the known entry, which RB2_ON_HUB leaves unset
    assert json.loads(files["eval_results.json"]) == WITH_RB2

    text = ModelCard(files["README.md"].decode()).text
    assert f"[`{RB2_FILE}`]({RB2_FILE})" in text and "(split `test`)" in text
    assert "| Factuality | score on RewardBench 2, aggregated as the benchmark's own code does | 0.625 " in text
    assert "| Preference accuracy | fraction of evaluation preference pairs whose preferred completion gets the " \
           "higher implicit reward | 0.75 (s.e. not recorded) | not recorded |" in text


def test_no_eval_results_file_unless_a_registered_benchmark_is_named(adapter, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="dpo_ext")
    plain = staged(adapter, tmp_path / "plain", eval_results=EVAL, hub_benchmarks=[RB2_ON_HUB])
    assert leaderboard_files(plain) == [] and {m for _, m in model_index(plain["README.md"])} == set(EVAL)
    assert "not a benchmark registered" not in caplog.text

    # RewardBench 2 is known but not registered: its numbers go to the model-index only, and the log says why.
    known = staged(adapter, tmp_path / "known", eval_results=WITH_RB2)
    assert leaderboard_files(known) == []
    index = model_index(known["README.md"])
    assert {metric: r.metric_value for (dataset, metric), r in index.items() if dataset == RB2} == RB2_RESULTS
    assert f"{RB2} is not a benchmark registered on the Hub" in caplog.text and "hub_benchmarks=" in caplog.text

    # A task whose metric has no number gets no entry (and no file when none is left).
    partial = staged(adapter, tmp_path / "partial", eval_results={"benchmarks": {RB2: {"overall": None}}},
                     hub_benchmarks=[RB2_ON_HUB])
    assert leaderboard_files(partial) == []
    assert "no leaderboard entry for task 'overall' of allenai/reward-bench-2" in caplog.text


def test_push_uploads_the_eval_results_file_in_the_same_commit(adapter, hub, tmp_path):
    from huggingface_hub import parse_eval_result_entries

    dry = staged(adapter, tmp_path / "staged", eval_results=WITH_RB2, hub_benchmarks=[RB2_ON_HUB])
    result = push(adapter, hub, eval_results=WITH_RB2, hub_benchmarks=[RB2_ON_HUB])

    assert len(hub.commits) == 1
    files = hub.files("alice/tiny-pl")
    assert files == dry and RB2_FILE in {f.path for f in result.files}
    preuploaded = {f["path"] for r in hub.calls("POST", "/api/models/alice/tiny-pl/preupload") for f in
                   json.loads(r.body)["files"]}
    assert RB2_FILE in preuploaded
    assert [e.value for e in parse_eval_result_entries(yaml.safe_load(files[RB2_FILE]))] == [0.71875, 0.625]
    assert TOKEN not in files[RB2_FILE].decode()


def test_known_benchmarks_are_those_dpo_ext_computes():
    from huggingface_hub import constants

    from dpo_ext.hub.eval_results import EVAL_RESULTS_FOLDER, KNOWN_BENCHMARKS, benchmark_table
    from dpo_ext.rewardbench import v1, v2

    assert EVAL_RESULTS_FOLDER == constants.EVAL_RESULTS_FOLDER
    assert {(b.dataset_id, b.split, b.name) for b in KNOWN_BENCHMARKS.values()} == {
        (v1.DATASET_ID, v1.DEFAULT_SPLIT, v1.NAME), (v2.DATASET_ID, v2.DEFAULT_SPLIT, v2.NAME)}
    assert not any(b.registered for b in KNOWN_BENCHMARKS.values())  # see the module docstring

    table = benchmark_table([RB2_ON_HUB, HubBenchmark("someone/bench", split="dev", tasks={"main": "score"})])
    assert table[RB2].tasks == RB2_ON_HUB.tasks and table[RB2].split == "test" and table[RB2].registered
    assert table["someone/bench"].path == ".eval_results/bench.yaml" and not KNOWN_BENCHMARKS[RB2].registered
    assert benchmark_table(RB2_ON_HUB)[RB2].registered  # one entry, not in a list


def test_eval_results_files_takes_only_numbers_on_registered_benchmarks():
    from dpo_ext.hub.eval_results import eval_results_files

    assert eval_results_files(WITH_RB2) == {}  # not registered
    assert eval_results_files(EVAL, [RB2_ON_HUB]) == {}  # no benchmark named
    odd = {"benchmarks": {RB2: {"overall": True, "Factuality": float("nan")}}}  # neither is a published number
    assert eval_results_files(odd, [RB2_ON_HUB]) == {}
    assert eval_results_files(WITH_RB2, [RB2_ON_HUB]) == {RB2_FILE: RB2_YAML}


@pytest.mark.parametrize("eval_results, message", [
    ({"benchmarks": [0.7]}, "'benchmarks' in .* must map benchmark dataset ids to their results"),
    ({"benchmarks": {"reward-bench-2": {"overall": 0.7}}}, "'reward-bench-2', which is not a Hub dataset id"),
    ({"benchmarks": {RB2: 0.7}}, "the results on allenai/reward-bench-2 must be a mapping"),
    ('{"benchmarks": {"allenai/reward-bench-2": {"overall": NaN}}}',
     r"'overall' \(on allenai/reward-bench-2\) in .*eval.json is nan, expected a finite number"),
], ids=["list", "bare-name", "number", "nan"])
def test_malformed_benchmark_results_are_named(adapter, tmp_path, eval_results, message):
    if isinstance(eval_results, str):
        (tmp_path / "eval.json").write_text(eval_results)
        eval_results = tmp_path / "eval.json"
    with pytest.raises(ValueError, match=message):
        staged(adapter, tmp_path / "staged", eval_results=eval_results)


def test_hub_benchmark_entries_are_checked():
    with pytest.raises(ValueError, match="'reward-bench-2' is not a Hub dataset id"):
        HubBenchmark("reward-bench-2")
    with pytest.raises(ValueError, match="must map task ids"):
        HubBenchmark(RB2, tasks=["overall"])
    with pytest.raises(TypeError, match="takes HubBenchmark entries"):
        from dpo_ext.hub.eval_results import benchmark_table

        benchmark_table([RB2])
