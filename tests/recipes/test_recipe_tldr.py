"""The Reddit TL;DR recipe (recipes/tldr): the data path (published comparisons -> prompt / chosen / rejected, Reddit
posts only), and run.py end to end at test size (SFT as a merged LoRA, DPO, evaluation, win rate, staged push) with
its configs.

The fixture holds comparisons in the published schema of ``openai/summarize_from_feedback`` (``comparisons``),
including the awkward ones: a CNN/DM article (``post`` null), identical summaries, an empty summary, a summary with no
leading space, and one record in OpenAI's own form (no ``site`` / ``article`` keys) repeating the first post.
"""

import json
import sys
from pathlib import Path

import pytest

sys.path[:0] = [str(Path(__file__).resolve().parents[2] / "recipes" / "tldr"),
                str(Path(__file__).resolve().parents[2] / "recipes")]

import tldr_data  # noqa: E402
from fixtures import card_metrics, launch_commands, parse_recipe_config, run_sft_dpo_recipe  # noqa: E402
from recipe_kit.sft import sft_rows  # noqa: E402

from dpo_ext import PreferenceDataError  # noqa: E402

FIXTURE = Path(__file__).resolve().parent / "data" / "tldr_comparisons_sample.jsonl"

BASIL = ("SUBREDDIT: r/gardening\n\nTITLE: Basil wilting despite daily watering\n\nPOST: My basil keeps wilting even "
         "though I water it every day.\nIt sits on a sunny windowsill. What am I doing wrong?\n\nTL;DR:")
MOVE = ("SUBREDDIT: r/careeradvice\n\nTITLE: Should I move for a job?\n\nPOST: Got an offer in another city with 20% "
        "more pay. My partner can work remotely.\n\nTL;DR:")
EXPECTED_ROWS = [
    {"prompt": BASIL, "chosen": " I water my basil daily but it still wilts, why?", "rejected": " basil bad"},
    # choice 1; the rejected summary was published without its leading space
    {"prompt": MOVE, "chosen": " Offered a job elsewhere for 20% more pay; partner can work remotely. Should I move?",
     "rejected": " I will take the job."},
    {"prompt": BASIL, "chosen": " I water my basil daily but it still wilts, why?",
     "rejected": " Basil on a windowsill wilts."},
]
EXPECTED_STATS = {"records": 6, "kept": 3,
                  "left_out": {"not_reddit": 1, "empty_summary": 1, "identical_summaries": 1}}


def fixture_records() -> list[dict]:
    return [json.loads(line) for line in FIXTURE.read_text().splitlines()]


def comparison(**changes) -> dict:
    record = {"info": {"id": "t3_x", "post": "P", "title": "T", "subreddit": "s", "site": None, "article": None},
              "summaries": [{"text": " a", "policy": "ref", "note": None},
                            {"text": " b", "policy": "sup", "note": None}],
              "choice": 0, "worker": "w", "batch": "batch3", "split": "train", "extra": {"confidence": 5}}
    record.update(changes)
    return record


def test_prompt_is_trl_template_with_the_posts_blank_lines_collapsed():
    assert tldr_data.reddit_prompt("cats", "Hi", "one\n\ntwo\nthree") == (
        "SUBREDDIT: r/cats\n\nTITLE: Hi\n\nPOST: one\ntwo\nthree\n\nTL;DR:")
    assert tldr_data.response(" kept as is") == " kept as is"
    assert tldr_data.response("no space") == " no space"


def test_fixture_in_the_published_schema_keeps_reddit_pairs_and_counts_the_rest():
    rows, stats = tldr_data.load_rows(data_files=str(FIXTURE))
    assert rows == EXPECTED_ROWS
    assert stats == EXPECTED_STATS
    # The same records read without `datasets` (OpenAI's row lacks the keys `datasets` fills with null) agree.
    assert tldr_data.to_rows(fixture_records()) == (EXPECTED_ROWS, EXPECTED_STATS)


def test_trl_preference_form_gives_the_same_rows(tmp_path):
    # Rows as trl-lib/tldr-preference publishes them: the same prompt, the summaries as published, and its CNN/DM
    # prompts start with "TITLE: ".
    trl_rows = [
        {"prompt": BASIL, "chosen": " I water my basil daily but it still wilts, why?", "rejected": " basil bad"},
        {"prompt": MOVE, "chosen": " Offered a job elsewhere for 20% more pay; partner can work remotely. Should I "
                                   "move?", "rejected": "I will take the job."},
        {"prompt": "TITLE: Council approves new bridge\n\nThe city council voted.\n\nTL;DR:", "chosen": " Yes.",
         "rejected": " No."},
        {"prompt": MOVE, "chosen": " same ", "rejected": " same"},
    ]
    path = tmp_path / "tldr_preference.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in trl_rows))
    rows, stats = tldr_data.load_rows(data_files=str(path))
    assert rows == EXPECTED_ROWS[:2]
    assert stats == {"records": 4, "kept": 2,
                     "left_out": {"not_reddit": 1, "empty_summary": 0, "identical_summaries": 1}}


@pytest.mark.parametrize("changes, field, says", [
    ({"choice": None}, "choice", "expected 0 or 1"),
    ({"choice": 2}, "choice", "found 2"),
    ({"summaries": [{"text": " a", "policy": "ref", "note": None}]}, "summaries", "two summaries"),
    ({"summaries": [{"text": " a"}, {"policy": "sup"}]}, r"summaries\[1\].text", "missing or null"),
    ({"info": {"id": "t3_x", "post": "P", "title": "T", "subreddit": None}}, "info.subreddit", "expected a string"),
    ({"info": {"id": "t3_x", "title": "T"}}, "info.post", "news article, info.article"),
])
def test_malformed_comparison_is_refused_naming_its_row_and_field(changes, field, says):
    records = [comparison(), comparison(), comparison(**changes)]
    with pytest.raises(PreferenceDataError, match=rf"^row 2, field '{field}': .*{says}.*fix or remove this row"):
        tldr_data.to_rows(records)


def test_conversational_or_unknown_rows_are_refused():
    conversational = {"prompt": MOVE, "chosen": [{"role": "assistant", "content": " Yes."}], "rejected": " No."}
    with pytest.raises(PreferenceDataError, match="^row 0, field 'chosen': expected a string, found a list"):
        tldr_data.any_to_rows([conversational])
    with pytest.raises(PreferenceDataError, match=r"columns \['completion', 'prompt'\]; expected"):
        tldr_data.any_to_rows([{"prompt": "p", "completion": "c"}])


def test_hub_datasets_are_read_the_way_datasets_5_can(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(path, **kwargs):
        calls.append((path, kwargs))
        return fixture_records()

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert tldr_data.load_rows(split="validation") == (EXPECTED_ROWS, EXPECTED_STATS)
    # The main branch holds only a loading script, which datasets >= 4 refuses: read the Hub's parquet export.
    assert calls[-1] == ("openai/summarize_from_feedback",
                         {"revision": "refs/convert/parquet",
                          "data_files": {"validation": "comparisons/validation/*.parquet"}, "split": "validation"})
    tldr_data.load_rows(dataset=tldr_data.PREFERENCE_DATASET)
    assert calls[-1] == ("trl-lib/tldr-preference", {"split": "train"})


def test_sft_rows_are_the_preferred_summaries_once_each():
    sft, stats = sft_rows(EXPECTED_ROWS)
    assert sft == [{"prompt": BASIL, "completion": " I water my basil daily but it still wilts, why?"},
                   {"prompt": MOVE, "completion": " Offered a job elsewhere for 20% more pay; partner can work "
                                                  "remotely. Should I move?"}]
    assert stats == {"pairs": 3, "kept": 2, "left_out": {"repeated": 1}}


# -- the recipe end to end, at test size ------------------------------------------------------------------------------

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "tldr"


@pytest.fixture(scope="module")
def tldr_run(tmp_path_factory):
    """recipes/tldr/run.py with configs/test.yaml (its SFT is a LoRA merged into the saved model) on the fixture,
    train and test split alike, with a tiny policy and reward model saved to a tmp folder, and a staged push."""
    root = tmp_path_factory.mktemp("tldr_recipe")
    models, results = run_sft_dpo_recipe("tldr", FIXTURE, root)
    return root, models, results


def test_sft_lora_is_merged_into_a_complete_model_more_likely_to_give_the_preferred_summaries(tldr_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from dpo_ext import ImplicitRewardScorer

    root, models, _ = tldr_run
    sft = root / "sft"
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= {p.name for p in sft.iterdir()}
    assert not (sft / "adapter_config.json").exists()  # a plain model: the adapter is merged in (kept in adapter/)
    assert json.loads((sft / "adapter" / "adapter_config.json").read_text())["r"] == 4
    summaries, _ = sft_rows(EXPECTED_ROWS)
    scorer = ImplicitRewardScorer(AutoModelForCausalLM.from_pretrained(sft), AutoTokenizer.from_pretrained(sft),
                                  ref_model=AutoModelForCausalLM.from_pretrained(models["policy"]), beta=1.0)
    gained = scorer.score([r["prompt"] for r in summaries], [r["completion"] for r in summaries]).rewards
    assert (gained > 1.0).all(), gained  # log pi_sft - log pi_0 of each SFT row: the SFT loss went down on them


def test_dpo_adapter_evaluation_and_staged_card(tldr_run):
    from safetensors.torch import load_file

    root, _, results = tldr_run
    out, staged = root / "dpo", root / "staged"
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == str(root / "sft")
    assert all(w.abs().max() > 0 for name, w in load_file(out / "adapter_model.safetensors").items()
               if "lora_B" in name)
    assert json.loads((out / "training_config.json").read_text())["beta"] == 0.5
    assert results == json.loads((out / "eval_results.json").read_text())
    # Three comparisons of two posts: the win rate samples each post once
    assert results["win_rate_prompts"] == 2 and results["win_rate"] in (0.0, 0.25, 0.5, 0.75, 1.0)
    metrics = card_metrics(staged / "README.md")
    assert metrics["preference_accuracy"] == pytest.approx(results["eval_rewards/accuracies"])
    assert metrics["win_rate"] == pytest.approx(results["win_rate"])
    assert metrics["reward_policy"] == pytest.approx(results["reward_policy"])


@pytest.mark.parametrize("name", ["lora.yaml", "qlora.yaml", "test.yaml"])
def test_configs_start_with_their_launch_commands_and_parse(name):
    run = parse_recipe_config("tldr", name)
    if name == "test.yaml":
        return
    training = run.training
    assert (training.beta, training.learning_rate, training.warmup_steps) == (0.5, 1e-6, 150)
    assert training.per_device_train_batch_size * training.gradient_accumulation_steps == 64
    assert run.model.load_in_4bit == (name == "qlora.yaml") and run.recipe.sft_use_peft  # 6.9B: SFT as a LoRA
    if name == "lora.yaml":  # and the paper's SFT of every weight: fp32 weights, sharded by FSDP
        commands = launch_commands(RECIPE / "configs" / name)
        assert commands[2].startswith("accelerate launch --config_file recipes/accelerate/fsdp.yaml")
        assert commands[2].endswith("--sft_use_peft false --sft_learning_rate 5e-7 --dtype float32")
