"""The Anthropic HH recipe (recipes/hh): the data path (published rows -> prompt / chosen / rejected, single-turn
filter), and run.py end to end at test size (SFT, DPO, evaluation, win rate, staged push) with its configs.

The fixture holds rows in the dataset's published schema (``{"chosen": transcript, "rejected": transcript}``),
including the awkward ones: a multi-turn dialogue, an empty response, identical responses.
"""

import json
import sys
from pathlib import Path

import pytest

sys.path[:0] = [str(Path(__file__).resolve().parents[2] / "recipes" / "hh"),
                str(Path(__file__).resolve().parents[2] / "recipes")]

import hh_data  # noqa: E402
from fixtures import card_metrics, load_recipe, parse_recipe_config, run_sft_dpo_recipe  # noqa: E402

from dpo_ext import PreferenceDataError  # noqa: E402

FIXTURE = Path(__file__).resolve().parent / "data" / "hh_rlhf_sample.jsonl"


def test_split_is_at_the_last_shared_assistant_turn():
    # The two replies share their first letter ("Y"): the split must still fall at the marker, not after the "Y".
    row = hh_data.split_pair("\n\nHuman: Is the sky blue?\n\nAssistant: Yes, on a clear day.",
                             "\n\nHuman: Is the sky blue?\n\nAssistant: Yellow.")
    assert row == {"prompt": "\n\nHuman: Is the sky blue?\n\nAssistant:", "chosen": " Yes, on a clear day.",
                   "rejected": " Yellow."}
    assert row["prompt"] + row["chosen"] == "\n\nHuman: Is the sky blue?\n\nAssistant: Yes, on a clear day."


def test_multi_turn_prompt_keeps_every_earlier_turn():
    chosen = "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Name a fruit.\n\nAssistant: An apple."
    rejected = "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Name a fruit.\n\nAssistant: No."
    row = hh_data.split_pair(chosen, rejected)
    assert row["prompt"] == "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Name a fruit.\n\nAssistant:"
    assert (row["chosen"], row["rejected"]) == (" An apple.", " No.")
    assert not hh_data.is_single_turn(row["prompt"])
    assert hh_data.is_single_turn("\n\nHuman: Hi\n\nAssistant:")


def test_transcripts_without_a_shared_assistant_turn_are_refused_with_their_row():
    with pytest.raises(PreferenceDataError, match="row 7, field 'rejected': .*share no"):
        hh_data.split_pair("\n\nHuman: A\n\nAssistant: B", "\n\nHuman: C\n\nAssistant: D", row=7)


MOVIE = "\n\nHuman: What is a good movie for a rainy day?\n\nAssistant:"
SKY = "\n\nHuman: Is the sky blue?\n\nAssistant:"
FRUIT = "\n\nHuman: Hi\n\nAssistant: Hello! How can I help?\n\nHuman: Name a fruit.\n\nAssistant:"
GRASS = " \n\nHuman: What color is grass?\n\nAssistant:"  # leading whitespace, as some published rows have


def test_training_keeps_every_dialogue_with_its_whole_history_as_the_prompt():
    """The paper trains (SFT and DPO) on the whole dataset: the multi-turn dialogue is kept, its prompt the history
    up to the last assistant turn. Left out and counted: the pair that diverges before its last turn, the empty
    response and the identical responses."""
    rows, stats = hh_data.load_rows("train", data_files=str(FIXTURE))
    assert [r["prompt"] for r in rows] == [MOVIE, FRUIT, SKY, GRASS]
    assert (rows[1]["chosen"], rows[1]["rejected"]) == (" An apple.", " No.")
    assert stats == {"records": 7, "kept": 4, "left_out": {
        "multi_turn": 0, "diverged_before_last_turn": 1, "empty_response": 1, "identical_responses": 1}}


def test_test_split_keeps_single_turn_dialogues_only_leading_whitespace_included():
    rows, stats = hh_data.load_rows("test", data_files=str(FIXTURE), single_turn=True)
    assert [r["prompt"] for r in rows] == [MOVIE, SKY, GRASS]
    assert stats["left_out"] == {"multi_turn": 1, "diverged_before_last_turn": 1, "empty_response": 1,
                                 "identical_responses": 1}


@pytest.mark.parametrize("prompt, single", [
    (GRASS, True), ("\t\n\nHuman: Hi\n\nAssistant:", True), ("\n\nHuman: Hi\n\nAssistant:", True),
    (" " + FRUIT, False), ("  \n\nHuman: A\n\nAssistant: B\n\nHuman: C\n\nAssistant:", False)])
def test_leading_whitespace_does_not_make_a_dialogue_multi_turn(prompt, single):
    assert hh_data.is_single_turn(prompt) is single


def test_pairs_diverging_before_the_last_turn_are_dropped_so_no_response_holds_a_human_turn():
    """The transcripts part after "Hi": the shared prefix ends at the first assistant turn, so each "response" would
    carry a whole human turn (the model would learn to write the human's lines)."""
    record = {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: A joke?\n\nAssistant: Knock knock.",
              "rejected": "\n\nHuman: Hi\n\nAssistant: Go away.\n\nHuman: Rude.\n\nAssistant: Sorry."}
    rows, stats = hh_data.to_rows([record])
    assert rows == [] and stats["left_out"]["diverged_before_last_turn"] == 1
    everything, _ = hh_data.load_rows("train", data_files=str(FIXTURE))
    assert not any(hh_data.HUMAN in r["chosen"] + r["rejected"] for r in everything)


def _write_dialogue(path, turns: int) -> str:
    history = "".join(f"\n\nHuman: Question number {i} about the weather?\n\nAssistant: Answer number {i}."
                      for i in range(turns))
    last = history + "\n\nHuman: And tomorrow?\n\nAssistant:"
    path.write_text(json.dumps({"chosen": last + " Sunny.", "rejected": last + " Rain, I think."}) + "\n")
    return str(path)


def test_a_long_history_keeps_its_end_with_max_prompt_length_as_the_paper(tmp_path):
    """A 30-turn dialogue whose prompt alone exceeds max_length: with max_prompt_length it keeps its last ids (the
    end of the history, with the turn to answer); without, the row is dropped (and no row is left)."""
    import datasets
    from recipe_kit.bpe import train_byte_level_bpe

    from dpo_ext.data.tokenize import prepare_ranked_dataset

    rows, _ = hh_data.load_rows("train", data_files=_write_dialogue(tmp_path / "long.jsonl", 30))
    prompt = rows[0]["prompt"]
    tokenizer = train_byte_level_bpe([prompt + " Sunny. Rain, I think."], 300, ["<eos>", "<pad>"], "<eos>", "<pad>")
    prompt_ids = tokenizer(prompt)["input_ids"]
    assert len(prompt_ids) > 64
    cut = prepare_ranked_dataset(datasets.Dataset.from_list(rows), tokenizer, max_length=64, max_prompt_length=32)
    assert cut[0]["prompt_ids"] == prompt_ids[-32:]
    assert tokenizer.decode(cut[0]["prompt_ids"]).endswith("\n\nHuman: And tomorrow?\n\nAssistant:")
    with pytest.raises(PreferenceDataError, match="no usable rows"):
        prepare_ranked_dataset(datasets.Dataset.from_list(rows), tokenizer, max_length=64)


GOOD = {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello.", "rejected": "\n\nHuman: Hi\n\nAssistant: Go."}


@pytest.mark.parametrize("line, fragments", [
    (json.dumps({"chosen": GOOD["chosen"]}), ["field 'rejected'", "missing"]),
    (json.dumps({**GOOD, "rejected": [GOOD["rejected"]]}), ["field 'rejected'", "list"]),
    (json.dumps({**GOOD, "chosen": None}), ["field 'chosen'", "null"]),
    (json.dumps([GOOD["chosen"], GOOD["rejected"]]), ["JSON object"]),
    ('{"chosen": "unterminated', ["not valid JSON"]),
    (json.dumps({"chosen": "\n\nHuman: A\n\nAssistant: B", "rejected": "\n\nHuman: C\n\nAssistant: D"}),
     ["field 'rejected'", "share no"]),
])
def test_malformed_rows_name_the_file_line_and_field(tmp_path, line, fragments):
    path = tmp_path / "hh_bad.jsonl"
    path.write_text(json.dumps(GOOD) + "\n\n" + line + "\n")  # a blank line 2: the bad row is on line 3
    with pytest.raises(PreferenceDataError) as info:
        hh_data.load_rows("train", data_files=str(path))
    message = str(info.value)
    assert message.startswith(f"{path}, line 3") and all(f in message for f in fragments), message


def test_malformed_records_given_in_memory_name_their_row():
    with pytest.raises(PreferenceDataError, match=r"^row 1, field 'chosen': .*int"):
        hh_data.to_rows([GOOD, {"chosen": 3, "rejected": "x"}])
    with pytest.raises(PreferenceDataError, match=r"^row 0: expected a JSON object, got list"):
        hh_data.to_rows([["a", "b"]])


# -- the recipe end to end, at test size ------------------------------------------------------------------------------

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "hh"


@pytest.fixture(scope="module")
def hh_run(tmp_path_factory):
    """recipes/hh/run.py with configs/test.yaml on the fixture (train and test split alike): SFT, DPO, evaluation,
    the win rate and a staged push, with a tiny policy and reward model saved to a tmp folder."""
    root = tmp_path_factory.mktemp("hh_recipe")
    models, results = run_sft_dpo_recipe("hh", FIXTURE, root)
    return root, models, results


def test_sft_saves_a_complete_model_more_likely_to_give_the_preferred_responses(hh_run):
    """The SFT model is a plain model folder (no adapter), and every SFT row (a prompt, multi-turn ones included,
    and its preferred response) got more likely than under the model it started from: the SFT loss went down on its
    rows."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from dpo_ext import ImplicitRewardScorer

    root, models, _ = hh_run
    sft = root / "sft"
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= {p.name for p in sft.iterdir()}
    assert not (sft / "adapter_config.json").exists()
    rows, _ = hh_data.load_rows("train", data_files=str(FIXTURE))
    scorer = ImplicitRewardScorer(AutoModelForCausalLM.from_pretrained(sft), AutoTokenizer.from_pretrained(sft),
                                  ref_model=AutoModelForCausalLM.from_pretrained(models["policy"]), beta=1.0)
    gained = scorer.score([r["prompt"] for r in rows], [r["chosen"] for r in rows]).rewards  # log pi_sft - log pi_0
    assert (gained > 1.0).all(), gained


def test_sft_and_dpo_train_on_every_dialogue_and_the_win_rate_samples_single_turn_prompts(hh_run):
    root, _, _ = hh_run
    assert json.loads((root / "sft" / "sft_results.json").read_text())["train_rows"] == 4  # FRUIT among them
    assert json.loads((root / "dpo" / "training_config.json").read_text())["max_prompt_length"] == 128
    samples = [json.loads(line) for line in (root / "dpo" / "win_rate_samples.jsonl").read_text().splitlines()]
    assert [s["prompt"] for s in samples] == [MOVIE, SKY]


def test_dpo_trains_an_adapter_on_the_sft_model(hh_run):
    from safetensors.torch import load_file

    root, _, results = hh_run
    out = root / "dpo"
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == str(root / "sft")
    weights = load_file(out / "adapter_model.safetensors")
    lora_b = [w for name, w in weights.items() if "lora_B" in name]
    assert lora_b and all(w.abs().max() > 0 for w in lora_b)  # LoRA B starts at zero: trained, and saved
    assert json.loads((out / "training_config.json").read_text())["beta"] == 0.1
    assert results == json.loads((out / "eval_results.json").read_text())
    assert 0.0 <= results["eval_rewards/accuracies"] <= 1.0 and results["eval_rewards/margins"] != 0


def test_win_rate_counts_its_samples_and_the_sft_side_is_the_sft_model(hh_run):
    """Recomputed from the samples file: the win rates (ties half) against the SFT samples and against the test
    set's preferred responses (the paper's "chosen" baseline), and the mean rewards; the rewards, from the reward
    model read one text at a time; and the SFT sample of each prompt, drawn again from the SFT model alone."""
    import torch
    from recipe_kit.win_rate import SAMPLES_FILE, generation_config
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    from dpo_ext import sampling

    root, models, results = hh_run
    samples = [json.loads(line) for line in (root / "dpo" / SAMPLES_FILE).read_text().splitlines()]
    assert len(samples) == results["win_rate_prompts"] == 2
    assert any(s["policy"] != s["sft"] for s in samples)  # the adapter was on when the policy sampled
    wins = [1.0 if s["reward_policy"] > s["reward_sft"] else 0.5 if s["reward_policy"] == s["reward_sft"] else 0.0
            for s in samples]
    assert results["win_rate"] == pytest.approx(sum(wins) / 2)
    assert results["reward_policy"] == pytest.approx(sum(s["reward_policy"] for s in samples) / 2)
    test_rows, _ = hh_data.load_rows("test", data_files=str(FIXTURE), single_turn=True)
    assert [s["chosen"] for s in samples] == [r["chosen"] for r in test_rows[:2]]
    wins = [1.0 if s["reward_policy"] > s["reward_chosen"] else 0.5 if s["reward_policy"] == s["reward_chosen"]
            else 0.0 for s in samples]
    assert results["win_rate_vs_chosen"] == pytest.approx(sum(wins) / 2)
    assert results["reward_chosen"] == pytest.approx(sum(s["reward_chosen"] for s in samples) / 2)
    reward, reward_tokenizer = (AutoModelForSequenceClassification.from_pretrained(models["reward"]),
                                AutoTokenizer.from_pretrained(models["reward"]))
    sft, tokenizer = AutoModelForCausalLM.from_pretrained(root / "sft"), AutoTokenizer.from_pretrained(root / "sft")
    run = load_recipe("hh").parse(["--config", str(RECIPE / "configs" / "test.yaml")])
    for i, sample in enumerate(samples):
        for side in ("policy", "sft", "chosen"):
            ids = reward_tokenizer(sample["prompt"] + sample[side], return_tensors="pt")
            with torch.no_grad():
                assert reward(**ids).logits[0, 0].item() == pytest.approx(sample[f"reward_{side}"], abs=1e-5)
        config = sampling.generation_config(tokenizer, generation_config(run.recipe))
        again = sampling.sample_shard(sft, [sampling.encode_prompt(sample["prompt"], tokenizer)], 1, config,
                                      seed=run.recipe.generation_seed + i)
        assert tokenizer.decode(again[0][0], skip_special_tokens=True) == sample["sft"]


def test_staged_card_carries_the_preference_accuracy_and_the_win_rate(hh_run):
    root, _, results = hh_run
    staged = root / "staged"
    adapter = "adapter_model.safetensors"
    assert (staged / adapter).read_bytes() == (root / "dpo" / adapter).read_bytes()
    metrics = card_metrics(staged / "README.md")
    assert metrics["preference_accuracy"] == pytest.approx(results["eval_rewards/accuracies"])
    assert metrics["win_rate"] == pytest.approx(results["win_rate"])
    assert metrics["reward_sft"] == pytest.approx(results["reward_sft"])
    assert json.loads((staged / "eval_results.json").read_text())["win_rate"] == results["win_rate"]


@pytest.mark.parametrize("name", ["lora.yaml", "qlora.yaml", "test.yaml"])
def test_configs_start_with_their_launch_commands_and_parse(name):
    """Each config names the commands that run it, and the recipe's parser reads it (on a CPU: --use_cpu true)."""
    run = parse_recipe_config("hh", name)
    if name == "test.yaml":
        assert run.recipe.eval_single_turn and run.training.max_prompt_length < run.training.max_length
        return
    training = run.training
    assert (run.model.model_name_or_path, training.beta, training.learning_rate, training.warmup_steps) == (
        "EleutherAI/pythia-2.8b", 0.1, 1e-6, 150)
    assert training.per_device_train_batch_size * training.gradient_accumulation_steps == 64
    assert run.model.load_in_4bit == (name == "qlora.yaml") and run.recipe.eval_single_turn
    assert (training.max_length, training.max_prompt_length) == (512, 256)  # the paper's, for HH
    assert run.recipe.win_rate_vs_chosen
