"""Judges and `label_rows`: a reward model's scores equal a direct forward, the implicit judge equals
`ImplicitRewardScorer.score`, a Python function is imported from the working directory, a judge's bad output is
named by judge, row and completion, and labelled rows train with LiPO-lambda, the scores arriving as its labels."""

import json
import logging
import math

import datasets
import pytest
import torch
from fixtures import make_model, ranked_rows, save_base_and_adapter, save_reward_model, train_settings
from peft import LoraConfig

from dpo_ext import PLDPOConfig, PLDPOTrainer
from dpo_ext.data.rows import PreferenceDataError
from dpo_ext.judges import FunctionJudge, ImplicitRewardJudge, RewardModelJudge, load_judge
from dpo_ext.labeling import label_rows, normalize_scores
from dpo_ext.scoring.scorer import ImplicitRewardScorer

CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'] }} {{ m['content'] }} <eos> {% endfor %}"
                 "{% if add_generation_prompt %}assistant {% endif %}")
ROWS = [{"prompt": "the movie was ", "completions": ["good fun", "bad", "a very boring plot and the worst ending"],
         "id": 7},
        {"prompt": "i saw it and ", "completions": ["loved it", "hated the actors"], "id": 8}]


@pytest.fixture(scope="module")
def reward_model(tokenizer, tmp_path_factory):
    """A saved reward model whose tokenizer has a chat template (the session tokenizer is left untouched)."""
    import copy

    folder = save_reward_model(tokenizer, tmp_path_factory.mktemp("rm") / "rm")
    chat_tokenizer = copy.deepcopy(tokenizer)
    chat_tokenizer.chat_template = CHAT_TEMPLATE
    chat_tokenizer.save_pretrained(folder)
    return folder


def direct_scores(folder, texts, special_tokens=True):
    """Each text alone through the reward model (no batching, no padding)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    with torch.no_grad():
        return [model(**tokenizer(t, return_tensors="pt", add_special_tokens=special_tokens)).logits[0, 0].item()
                for t in texts]


def test_reward_model_judge_scores_prompt_plus_completion_as_a_direct_forward(reward_model):
    judge = load_judge(f"rm:{reward_model}", device="cpu", batch_size=2)  # 5 texts: 3 forwards, padded
    assert isinstance(judge, RewardModelJudge) and judge.name == f"rm:{reward_model}"
    scores = judge([r["prompt"] for r in ROWS], [r["completions"] for r in ROWS])
    expected = direct_scores(reward_model, [r["prompt"] + c for r in ROWS for c in r["completions"]])
    assert [len(s) for s in scores] == [3, 2]
    assert sum(scores, []) == pytest.approx(expected, abs=1e-5)
    assert len(set(sum(scores, []))) == 5  # the texts are told apart


def test_reward_model_judge_renders_chat_prompts_with_its_own_template(reward_model):
    from transformers import AutoTokenizer

    prompt = [{"role": "user", "content": "the movie was"}]
    judge = load_judge(f"rm:{reward_model}", device="cpu")
    scores = judge([prompt], [["good", [{"role": "assistant", "content": "bad"}]]])[0]
    tokenizer = AutoTokenizer.from_pretrained(reward_model)
    texts = [tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": c}], tokenize=False)
             for c in ("good", "bad")]
    assert texts[0] == "user the movie was <eos> assistant good <eos> "
    assert scores == pytest.approx(direct_scores(reward_model, texts, special_tokens=False), abs=1e-5)


def test_recipe_win_rate_scores_with_the_package_judge(reward_model, monkeypatch):
    """The recipes' reward scores are the judge's (one implementation): same numbers, and through its class."""
    import sys
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "recipes"))
    sys.modules.pop("recipe_kit.win_rate", None)
    from recipe_kit import win_rate

    calls = []
    original = RewardModelJudge.score_flat
    monkeypatch.setattr(RewardModelJudge, "score_flat",
                        lambda self, p, c: calls.append(len(p)) or original(self, p, c))
    scores = win_rate.reward_scores(str(reward_model), ["the movie was "] * 2, ["good", "bad plot"], batch_size=1)
    assert calls == [2]
    assert scores == pytest.approx(direct_scores(reward_model, ["the movie was good", "the movie was bad plot"]),
                                   abs=1e-5)


def test_reward_model_with_two_outputs_is_refused_before_weights_load(tokenizer, tmp_path):
    folder = save_reward_model(tokenizer, tmp_path / "classifier", num_labels=2)
    tokenizer.save_pretrained(folder)
    with pytest.raises(ValueError, match="has 2 outputs .*num_labels=1"):
        load_judge(f"rm:{folder}", device="cpu")


def test_a_causal_lm_is_not_a_reward_model(tokenizer, tmp_path):
    make_model(tokenizer).save_pretrained(tmp_path / "lm")
    tokenizer.save_pretrained(tmp_path / "lm")
    with pytest.raises(ValueError, match="GPT2LMHeadModel, not a sequence-classification reward model"):
        load_judge(f"rm:{tmp_path / 'lm'}", device="cpu")


def test_implicit_judge_equals_the_scorer(tokenizer, tmp_path):
    root = save_base_and_adapter(tokenizer, tmp_path, ["c_attn", "c_proj"], lora_scale=0.3, seed=0)
    (root / "adapter" / "training_config.json").write_text(json.dumps({"beta": 0.5}))
    judge = load_judge(f"implicit:{root / 'adapter'}", device="cpu")
    assert isinstance(judge, ImplicitRewardJudge) and judge.scorer.beta == 0.5  # from the training record
    scores = judge([r["prompt"] for r in ROWS], [r["completions"] for r in ROWS])
    result = ImplicitRewardScorer.from_pretrained(str(root / "adapter"), device="cpu").score(
        [r["prompt"] for r in ROWS], [r["completions"] for r in ROWS])
    assert scores[0] == pytest.approx(result.rewards[0].tolist(), abs=1e-6)
    assert scores[1] == pytest.approx(result.rewards[1, :2].tolist(), abs=1e-6)
    assert all(math.isfinite(s) and s != 0 for s in sum(scores, []))


def test_py_judge_is_imported_from_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "my_length_judge.py").write_text(
        "def score(prompts, completions):\n    return [[len(c) / 10 for c in cs] for cs in completions]\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.path", [p for p in __import__("sys").path if p not in ("", str(tmp_path))])
    judge = load_judge("py:my_length_judge:score")
    assert isinstance(judge, FunctionJudge) and judge.name == "py:my_length_judge:score"
    assert label_rows(ROWS, judge)[1]["scores"] == [0.8, 1.6]


@pytest.mark.parametrize("spec, fragments", [
    ("nope:x", ["judge 'nope:x'", "unknown kind 'nope'", "rm:PATH", "implicit:ADAPTER", "py:module:function"]),
    ("models/rm", ["no KIND: prefix"]),
    ("py:no_such_module_xyz:f", ["cannot import module 'no_such_module_xyz'", "ModuleNotFoundError"]),
    ("py:json:no_such_function", ["module 'json'", "has no attribute 'no_such_function'"]),
    ("py:json", ["expected py:module:function"]),
])
def test_bad_specs_are_named(spec, fragments):
    with pytest.raises(ValueError) as info:
        load_judge(spec)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_missing_model_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="judge 'rm:.*nothing_here': .*no such directory"):
        load_judge(f"rm:{tmp_path / 'nothing_here'}")


def test_label_rows_adds_scores_and_keeps_every_other_field():
    judge = FunctionJudge(lambda prompts, completions: [[float(-k) for k in range(len(c))] for c in completions])
    labelled = label_rows(ROWS, judge, batch_size=1)
    assert labelled == [{**ROWS[0], "scores": [0.0, -1.0, -2.0]}, {**ROWS[1], "scores": [0.0, -1.0]}]
    assert "scores" not in ROWS[0]  # the input rows are not modified


def test_chat_prompts_get_assistant_messages_as_completions():
    prompt = [{"role": "user", "content": "the movie was"}]
    labelled = label_rows([{"prompt": prompt, "completions": ["good", "bad"]}],
                          FunctionJudge(lambda p, c: [[1.0, 0.0]]))
    assert labelled[0]["completions"] == [[{"role": "assistant", "content": "good"}],
                                          [{"role": "assistant", "content": "bad"}]]


def test_normalizations_keep_the_order_and_map_into_the_unit_interval():
    assert normalize_scores([3.0, -1.0, 1.0], "minmax") == [1.0, 0.0, 0.5]
    assert normalize_scores([2.0, 2.0], "minmax") == [0.5, 0.5]
    assert normalize_scores([0.0, 800.0, -800.0], "sigmoid") == [0.5, 1.0, 0.0]  # no overflow either way
    assert normalize_scores([math.log(3)], "sigmoid") == pytest.approx([0.75])
    assert normalize_scores([5.0, -2.0], "none") == [5.0, -2.0]
    judge = FunctionJudge(lambda p, c: [[4.0, -4.0, 0.0]] * len(p))
    assert label_rows(ROWS[:1], judge, normalize="minmax")[0]["scores"] == [1.0, 0.0, 0.5]


def test_scores_outside_the_unit_interval_warn_for_lipo(caplog):
    with caplog.at_level(logging.WARNING, logger="dpo_ext.labeling"):
        label_rows(ROWS[:1], FunctionJudge(lambda p, c: [[4.0, -4.0, 0.0]]))
    assert "outside [0, 1]" in caplog.text and "--normalize" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="dpo_ext.labeling"):
        label_rows(ROWS[:1], FunctionJudge(lambda p, c: [[1.0, 0.0, 0.5]]))
    assert caplog.text == ""


@pytest.mark.parametrize("output, fragments", [
    ([[1.0, float("nan"), 0.0], [1.0, 0.0]], ["row 0, field 'completions[1]'", "returned nan, not a finite number"]),
    ([[1.0, 0.0, 0.0], [float("inf"), 0.0]], ["row 1, field 'completions[0]'", "returned inf"]),
    ([[1.0, 0.0, 0.0], [1.0]], ["row 1, field 'completions'", "returned 1 scores for the row's 2 completions"]),
    ([[1.0, "high", 0.0], [1.0, 0.0]], ["row 0, field 'completions[1]'", "'high' (str), not a number"]),
    ([[1.0, True, 0.0], [1.0, 0.0]], ["completions[1]", "True (bool), not a number"]),
    ([[1.0, 0.0, 0.0]], ["row 0", "returned 1 score lists for a batch of 2 rows"]),
    (None, ["row 0", "returned a NoneType for a batch of 2 rows"]),
])
def test_bad_judge_output_names_judge_row_and_completion(output, fragments):
    with pytest.raises(PreferenceDataError) as info:
        label_rows(ROWS, FunctionJudge(lambda p, c: output, name="py:judges:bad"), batch_size=2)
    for fragment in ["the judge py:judges:bad", *fragments]:
        assert fragment in str(info.value)


def test_tensor_output_is_accepted():
    scores = label_rows(ROWS[:1], FunctionJudge(lambda p, c: torch.tensor([[0.5, 0.25, 1.0]])))[0]["scores"]
    assert scores == [0.5, 0.25, 1.0] and all(type(s) is float for s in scores)


@pytest.mark.parametrize("row, fragments", [
    ({"prompt": "the movie was ", "chosen": "good", "rejected": "bad"}, ["row 0", "completions", "missing"]),
    ({"prompt": "the movie was ", "completions": []}, ["row 0", "empty list of completions"]),
    ({"completions": ["good"]}, ["row 0", "prompt", "missing"]),
    ({"prompt": "x ", "completions": ["a", "b"], "ranks": [0, 1]}, ["row 0", "ranks", "drop 'ranks'"]),
])
def test_bad_rows_are_refused_before_the_judge_runs(row, fragments):
    calls = []
    with pytest.raises(PreferenceDataError) as info:
        label_rows([row], FunctionJudge(lambda p, c: calls.append(1)))
    assert calls == []
    for fragment in fragments:
        assert fragment in str(info.value)


def test_labelled_rows_train_with_lipo_lambda_and_the_scores_are_its_labels(tokenizer, tmp_path, monkeypatch):
    import dpo_ext.training.trainer as trainer_module

    rows = [{"prompt": r["prompt"], "completions": r["completions"]} for r in ranked_rows(4, k=3, seed=4)]
    good = FunctionJudge(lambda p, c: [[x.count("good") - 1.0 for x in cs] for cs in c])
    labelled = label_rows(rows, good, normalize="sigmoid")
    seen, original = [], trainer_module.lipo_lambda_loss

    def recording(policy, ref, beta, ranks, labels):
        seen.append(labels.detach().clone())
        return original(policy, ref, beta, ranks, labels)

    monkeypatch.setattr(trainer_module, "lipo_lambda_loss", recording)
    args = PLDPOConfig(**train_settings(tmp_path, loss_type="lipo_lambda", per_device_train_batch_size=4,
                                        max_steps=1, max_length=32, seed=0, learning_rate=1e-3))
    trainer = PLDPOTrainer(make_model(tokenizer), args=args, train_dataset=datasets.Dataset.from_list(labelled),
                           processing_class=tokenizer,
                           peft_config=LoraConfig(r=4, target_modules=["c_attn"], fan_in_fan_out=True,
                                                  task_type="CAUSAL_LM"))
    trainer.train()
    assert len(seen) == 1 and seen[0].shape == (4, 3)
    assert sorted(map(tuple, seen[0].tolist())) == sorted(tuple(row["scores"]) for row in labelled)
    assert math.isfinite(trainer.state.log_history[0]["loss"])


def test_scores_that_will_not_be_lipo_labels_do_not_warn(caplog):
    """The same out-of-range scores as above, labelled for a loss that reads only their order: no warning."""
    with caplog.at_level(logging.WARNING, logger="dpo_ext.labeling"):
        label_rows(ROWS[:1], FunctionJudge(lambda p, c: [[4.0, -4.0, 0.0]]), lipo_labels=False)
    assert "outside [0, 1]" not in caplog.text
