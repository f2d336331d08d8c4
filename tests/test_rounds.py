"""On-policy rounds (`dpo_ext.rounds`, `dpo-ext iterate`): each round samples, labels, trains and evaluates; a killed
run resumes to the same result as an uninterrupted one; the rounds are recorded with the adapter."""

import json

import pytest
import torch
from fixtures import make_model, train_settings
from peft import LoraConfig
from safetensors.torch import load_file

from dpo_ext import PLDPOConfig
from dpo_ext.cli import main as cli_main
from dpo_ext.rounds import RoundSettings, run_rounds

LORA = dict(r=4, lora_alpha=8, target_modules=["c_attn"], lora_dropout=0.0, task_type="CAUSAL_LM")
PROMPTS = ["the movie was ", "the plot was ", "i saw it and ", "the actors were ", "the ending was ", "we liked "]
JUDGE = '''
def good_words(prompts, completions):
    """One point per 'good' or 'great', minus one per 'bad' or 'awful'."""
    def score(text):
        words = text.split()
        return float(words.count("good") + words.count("great") - words.count("bad") - words.count("awful"))
    return [[score(c) for c in row] for row in completions]
'''


@pytest.fixture
def judge(tmp_path, monkeypatch):
    (tmp_path / "rounds_judge.py").write_text(JUDGE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "py:rounds_judge:good_words"


def _args(run_dir, **overrides):
    return PLDPOConfig(**train_settings(run_dir, **{**dict(
        output_dir=str(run_dir), loss_type="lipo_lambda", per_device_train_batch_size=3, learning_rate=1e-2,
        max_steps=2, max_length=32, seed=0, beta=0.5, save_strategy="steps", save_steps=1), **overrides}))


def _run(tokenizer, run_dir, judge, **settings):
    settings = RoundSettings(**{**dict(rounds=2, k=3, judge=judge, generation={"max_new_tokens": 6}, eval_k=2,
                                       seed=3), **settings})
    return run_rounds(lambda: make_model(tokenizer), tokenizer, PROMPTS, _args(run_dir), settings,
                      peft_config=LoraConfig(**LORA), eval_prompts=PROMPTS[:3])


def _adapter(run_dir, r):
    return load_file(run_dir / f"round-{r}" / "adapter" / "adapter_model.safetensors")


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_two_rounds_sample_label_train_and_evaluate(tokenizer, tmp_path, judge):
    summaries = _run(tokenizer, tmp_path / "run", judge)
    assert [s["round"] for s in summaries] == [1, 2]
    for r, summary in enumerate(summaries, start=1):
        folder = tmp_path / "run" / f"round-{r}"
        samples, labelled = _lines(folder / "samples.jsonl"), _lines(folder / "labelled.jsonl")
        assert [row["prompt"] for row in samples] == PROMPTS and all(len(row["completions"]) == 3 for row in samples)
        for row in labelled:  # the judge's scores are the training labels, completion by completion
            assert row["scores"] == [sum(w in ("good", "great") for w in c.split())
                                     - sum(w in ("bad", "awful") for w in c.split()) for c in row["completions"]]
        assert summary["eval_prompts"] == 3 and summary["eval_judge_sem"] is not None
        assert json.loads((folder / "round.json").read_text()) == summary
        # every round's reference is the base (round 2 starts from round 1's adapter: base_model by choice)
        record = json.loads((folder / "adapter" / "dpo_ext_reference.json").read_text())
        assert record["reference"] == "disabled_adapters" and record["loss_type"] == "lipo_lambda"
        config = json.loads((folder / "adapter" / "training_config.json").read_text())
        assert (config["round"], config["on_policy_rounds"], config["judge"]) == (r, 2, judge)
    # round 2 sampled from round 1's policy, not from the base: other samples than round 1's with the same seed
    assert _lines(tmp_path / "run" / "round-1" / "samples.jsonl") != _lines(tmp_path / "run" / "round-2" /
                                                                             "samples.jsonl")
    assert any(not torch.equal(a, b) for a, b in zip(_adapter(tmp_path / "run", 1).values(),
                                                     _adapter(tmp_path / "run", 2).values()))


def test_a_killed_run_resumes_to_the_same_result(tokenizer, tmp_path, judge, monkeypatch):
    """Killed twice (in round 1's training after checkpoint-1, and in round 2's labelling), then resumed: the same
    samples, labels and adapters, to the bit, as an uninterrupted run."""
    import dpo_ext.rounds as rounds
    from dpo_ext.training.trainer import PLDPOTrainer

    _run(tokenizer, tmp_path / "whole", judge)

    calls = {"loss": 0}
    compute_loss = PLDPOTrainer.compute_loss

    def dies_at_step_2(self, *args, **kwargs):
        calls["loss"] += 1
        if calls["loss"] == 2:
            raise KeyboardInterrupt("killed")
        return compute_loss(self, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(PLDPOTrainer, "compute_loss", dies_at_step_2)
        with pytest.raises(KeyboardInterrupt):
            _run(tokenizer, tmp_path / "cut", judge)
    assert (tmp_path / "cut" / "round-1" / "train" / "checkpoint-1").is_dir()
    assert not (tmp_path / "cut" / "round-1" / "round.json").exists()

    label = rounds._label
    with monkeypatch.context() as patch:
        patch.setattr(rounds, "_label", lambda rows, spec, *more: (_ for _ in ()).throw(KeyboardInterrupt())
                      if (tmp_path / "cut" / "round-1" / "round.json").exists() else label(rows, spec, *more))
        with pytest.raises(KeyboardInterrupt):
            _run(tokenizer, tmp_path / "cut", judge)
    assert (tmp_path / "cut" / "round-2" / "samples.jsonl").is_file()
    assert not (tmp_path / "cut" / "round-2" / "labelled.jsonl").exists()

    _run(tokenizer, tmp_path / "cut", judge)
    for r in (1, 2):
        for name in ("samples.jsonl", "labelled.jsonl"):
            assert _lines(tmp_path / "cut" / f"round-{r}" / name) == _lines(tmp_path / "whole" / f"round-{r}" / name)
        whole, cut = _adapter(tmp_path / "whole", r), _adapter(tmp_path / "cut", r)
        assert whole.keys() == cut.keys() and all(torch.equal(whole[n], cut[n]) for n in whole)
    for name in ("eval_judge_mean", "train_loss"):
        assert json.loads((tmp_path / "cut" / "round-2" / "round.json").read_text())[name] == \
            json.loads((tmp_path / "whole" / "round-2" / "round.json").read_text())[name]


def test_reference_previous_trains_against_the_round_start(tokenizer, tmp_path, judge):
    _run(tokenizer, tmp_path / "run", judge, reference="previous")
    record = json.loads((tmp_path / "run" / "round-2" / "adapter" / "dpo_ext_reference.json").read_text())
    assert record["reference"] == "adapter_copy"  # a frozen copy of round 1's adapter


def test_settings_are_checked_before_anything_runs(tokenizer, tmp_path, judge):
    for settings, fragment in ((dict(k=1), "k must be at least 2"), (dict(rounds=0), "rounds must be"),
                               (dict(judge=""), "a judge is required"), (dict(reference="x"), "reference must be"),
                               (dict(judge="self", eval_judge=None), "evaluation judge cannot be 'self'")):
        with pytest.raises(ValueError, match=fragment):
            _run(tokenizer, tmp_path / "run", **{"judge": judge, **settings})
    with pytest.raises(ValueError, match="pass start_adapter, a trained adapter"):
        _run(tokenizer, tmp_path / "run", judge="self", eval_judge=judge)
    assert not (tmp_path / "run").exists()


def test_iterate_command(tokenizer, tmp_path, judge, capsys):
    make_model(tokenizer).save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    code = cli_main(["iterate", "--model_name_or_path", str(tmp_path / "base"), "--prompts",
                     str(tmp_path / "prompts.jsonl"), "--eval_prompts", str(tmp_path / "prompts.jsonl"), "--judge",
                     judge, "--rounds", "1", "--k", "3", "--eval_k", "2", "--max_new_tokens", "6", "--use_peft",
                     "--lora_r", "4", "--lora_target_modules", "c_attn", "--loss_type", "all_pairs", "--max_steps",
                     "1", "--per_device_train_batch_size", "3", "--use_cpu", "--report_to", "none", "--save_strategy",
                     "no", "--output_dir", str(tmp_path / "out")])
    assert code == 0
    out = capsys.readouterr().out
    assert "round=1" in out and "eval_judge_mean=" in out
    assert (tmp_path / "out" / "round-1" / "adapter" / "adapter_model.safetensors").is_file()


def test_a_judge_object_and_a_slice_of_prompts_per_round(tokenizer, tmp_path):
    """A program's own judge object labels the rows and names itself in the records; with prompts_per_round=4 over
    6 prompts, round 1 samples prompts 0-3 and round 2 prompts 4, 5, 0, 1 (wrapping)."""
    from dpo_ext.judges import FunctionJudge

    lengths = FunctionJudge(lambda prompts, completions: [[float(len(c)) for c in row] for row in completions],
                            name="length judge")
    _run(tokenizer, tmp_path / "run", lengths, prompts_per_round=4)
    for r, expected in ((1, PROMPTS[:4]), (2, PROMPTS[4:] + PROMPTS[:2])):
        folder = tmp_path / "run" / f"round-{r}"
        assert [row["prompt"] for row in _lines(folder / "samples.jsonl")] == expected
        for row in _lines(folder / "labelled.jsonl"):
            assert row["scores"] == [float(len(c)) for c in row["completions"]]
        assert json.loads((folder / "round.json").read_text())["judge"] == "length judge"
        assert json.loads((folder / "adapter" / "training_config.json").read_text())["judge"] == "length judge"
    with pytest.raises(ValueError, match="prompts_per_round must be"):
        _run(tokenizer, tmp_path / "other", lengths, prompts_per_round=0)


def test_self_judged_rounds_can_start_from_a_finished_round_judged_otherwise(tokenizer, tmp_path, judge):
    """Round 1 judged by the function, copied into a second run whose later rounds are self-rewarded: round 2 is
    labelled by round 1's implicit reward (scores that are not the function's), round 1 is read back unchanged."""
    import shutil

    from dpo_ext.judges import ImplicitRewardJudge

    _run(tokenizer, tmp_path / "judged", judge, rounds=1)
    shutil.copytree(tmp_path / "judged" / "round-1", tmp_path / "self" / "round-1")
    summaries = _run(tokenizer, tmp_path / "self", "self", eval_judge=judge)
    assert summaries[0] == json.loads((tmp_path / "judged" / "round-1" / "round.json").read_text())
    assert summaries[1]["judge"] == "self"
    labelled = _lines(tmp_path / "self" / "round-2" / "labelled.jsonl")
    implicit = ImplicitRewardJudge.from_pretrained(str(tmp_path / "self" / "round-1" / "adapter"),
                                                   base_model=make_model(tokenizer))
    expected = implicit([row["prompt"] for row in labelled], [row["completions"] for row in labelled])
    for row, scores in zip(labelled, expected):
        assert row["scores"] == pytest.approx(scores, abs=1e-5)


def test_callbacks_reach_every_rounds_trainer(tokenizer, tmp_path, judge):
    """A callback given to run_rounds sees each round's training: two trainings of max_steps=2 steps each."""
    from transformers import TrainerCallback

    seen = []

    class Steps(TrainerCallback):
        def on_train_end(self, args, state, control, **kwargs):
            seen.append((args.output_dir, state.global_step))

    settings = RoundSettings(rounds=2, k=2, judge=judge, generation={"max_new_tokens": 4}, seed=1)
    run_rounds(lambda: make_model(tokenizer), tokenizer, PROMPTS[:3], _args(tmp_path / "run"), settings,
               peft_config=LoraConfig(**LORA), callbacks=[Steps()])
    assert seen == [(str(tmp_path / "run" / f"round-{r}" / "train"), 2) for r in (1, 2)]


def test_only_lipo_rounds_warn_about_labels_outside_the_unit_interval(tokenizer, tmp_path, caplog):
    """A judge scoring 2.0 and 3.0: rounds trained with LiPO-lambda warn that the labels are not in [0, 1]; the same
    rounds with Plackett-Luce (which reads only the order) do not."""
    import logging

    from dpo_ext.judges import FunctionJudge

    big = FunctionJudge(lambda prompts, completions: [[2.0 + (k % 2) for k in range(len(row))] for row in completions],
                        name="big scores")
    settings = RoundSettings(rounds=1, k=2, judge=big, generation={"max_new_tokens": 4}, seed=1)
    for loss_type, warns in (("lipo_lambda", True), ("plackett_luce", False)):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="dpo_ext.labeling"):
            run_rounds(lambda: make_model(tokenizer), tokenizer, PROMPTS[:2],
                       _args(tmp_path / loss_type, loss_type=loss_type), settings, peft_config=LoraConfig(**LORA))
        assert ("outside [0, 1]" in caplog.text) == warns, loss_type
