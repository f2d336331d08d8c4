"""The UltraFeedback recipe (recipes/ultrafeedback): the data path (published records -> scored rows, the binarized
pairs of ``HuggingFaceH4/ultrafeedback_binarized`` and every pair, and the held-out split by prompt), and run.py end to
end at test size (the three methods on the same prompts and steps, their evaluation, the comparison, staged pushes).

The fixture holds six records in the dataset's published schema, with the awkward cases: ties (a different pair tied
under each rating, and two completions tied for best), an ``"N/A"`` rating, a completion rated ``"N/A"`` on every
aspect, a prompt whose completions all score the same, three completions instead of four, an empty response, and
the same response twice. Expected scores are the means of the ratings written in each test.
"""

import json
import math
import re
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path[:0] = [str(Path(__file__).resolve().parents[2] / "recipes" / "ultrafeedback"),
                str(Path(__file__).resolve().parents[2] / "recipes")]

import ultrafeedback_data as uf  # noqa: E402
from fixtures import card_metrics, load_recipe, parse_recipe_config  # noqa: E402

from dpo_ext import PreferenceDataError, normalize_row  # noqa: E402

FIXTURE = Path(__file__).resolve().parent / "data" / "ultrafeedback_sample.jsonl"
FAST = settings(max_examples=60, deadline=None, derandomize=True, database=None)

COLOUR = ["Red.", "Green is a primary colour of light.", "Blue, along with red and yellow.", "Colours are nice."]
EGG = ["Place the egg in boiling water for 7 to 9 minutes, then cool it in cold water.", "I cannot help with cooking.",
       "Put it in the microwave.", "Simmer it for about 8 minutes and move it to an ice bath."]
KNUCKLES = ["You will get arthritis.", "Nothing bad is known to happen, though it may annoy people nearby.",
            "Studies have found no link between knuckle cracking and arthritis.", "Your fingers will fall off."]


def records() -> list[dict]:
    return [json.loads(line) for line in FIXTURE.read_text().splitlines()]


def by_prompt(pairs) -> dict:
    out = {}
    for pair in pairs:
        out.setdefault(pair["prompt"], []).append((pair["chosen"], pair["rejected"]))
    return out


def test_fine_grained_score_is_the_mean_of_the_ratings_that_are_numbers():
    colour = records()[0]["completions"]
    # Ratings (helpfulness, honesty, instruction_following, truthfulness): 5 5 5 5 | 3 4 3 2 | 4 N/A 4 4 | 3 3 3 3
    assert [uf.score(c) for c in colour] == [5.0, 3.0, 4.0, 3.0]
    assert [uf.score(c, "overall") for c in colour] == [9.0, 6.0, 6.0, 4.5]
    assert [uf.score(c, "honesty") for c in colour] == [5.0, 4.0, None, 3.0]
    egg = records()[1]["completions"]
    assert uf.score(egg[1]) is None and uf.score(egg[1], "helpfulness") is None  # every rating "N/A"
    assert uf.score(egg[1], "overall") == 2.0
    # The same mean as the published fine-grained_score (null where every rating is "N/A")
    for record in records():
        assert [uf.score(c) for c in record["completions"]] == [c["fine-grained_score"] for c in record["completions"]]


def test_missing_scores_are_none_and_unknown_ratings_are_refused():
    assert uf.score({"overall_score": None}, "overall") is None
    assert uf.score({"overall_score": float("nan")}, "overall") is None
    assert uf.score({"annotations": None}) is None
    with pytest.raises(ValueError, match="unknown rating 'mean'.*fine_grained, overall, helpfulness"):
        uf.score(records()[0]["completions"][0], "mean")


def test_fixture_gives_one_scored_row_per_prompt_and_counts_what_is_left_out():
    rows, stats = uf.load_rows(data_files=str(FIXTURE))
    assert rows == [
        {"prompt": "Name a primary colour.", "completions": COLOUR, "scores": [5.0, 3.0, 4.0, 3.0]},
        # The completion rated "N/A" on every aspect has no fine-grained score
        {"prompt": "How do I boil an egg?", "completions": [EGG[0], EGG[2], EGG[3]], "scores": [4.5, 2.0, 4.5]},
        # "Paris." twice (4.0 and 5.0): one copy, at the first's place, with the higher score
        {"prompt": "What is the capital of France?", "completions": ["Paris.", "Lyon.", "Marseille."],
         "scores": [5.0, 2.0, 1.0]},
        {"prompt": "What happens if you crack your knuckles a lot?", "completions": KNUCKLES,
         "scores": [2.5, 3.75, 5.0, 1.25]},
    ]
    # The prime-number prompt is all tied; the fish prompt keeps one completion (one empty, one all "N/A")
    assert stats == {"records": 6, "kept": 4,
                     "left_out": {"empty_prompt": 0, "fewer_than_2_scored": 1, "all_tied": 1},
                     "completions_left_out": {"unscored": 2, "empty_response": 1, "identical_response": 1}}
    for index, row in enumerate(rows):  # every row is one the trainer takes as it is
        normalized = normalize_row(row, index)
        assert normalized.no_preference is None and normalized.num_collapsed == 0


def test_overall_score_rows_differ_where_the_ratings_do():
    rows, stats = uf.to_ranked_rows(records(), rating="overall")
    assert [row["scores"] for row in rows] == [[9.0, 6.0, 6.0, 4.5], [8.5, 2.0, 3.0, 8.0], [6.0, 3.0],
                                               [8.5, 3.0, 2.0], [5.0, 7.0, 9.5, 2.0]]
    assert rows[1]["completions"] == EGG and rows[2]["completions"] == ["Fish have no legs; they swim with fins.",
                                                                        "Four."]
    assert stats["left_out"] == {"empty_prompt": 0, "fewer_than_2_scored": 0, "all_tied": 1}
    assert stats["completions_left_out"] == {"unscored": 0, "empty_response": 1, "identical_response": 1}


def test_all_pairs_are_every_untied_pair_higher_score_chosen():
    rows, _ = uf.to_ranked_rows(records())
    pairs = by_prompt(uf.all_pairs(rows))
    # Scores 5, 3, 4, 3: six pairs less the tie between the 2nd and 4th
    assert pairs["Name a primary colour."] == [(COLOUR[0], COLOUR[1]), (COLOUR[0], COLOUR[2]), (COLOUR[0], COLOUR[3]),
                                               (COLOUR[2], COLOUR[1]), (COLOUR[2], COLOUR[3])]
    # Scores 4.5, 2, 4.5: the two best are tied, so each is paired only with the worst
    assert pairs["How do I boil an egg?"] == [(EGG[0], EGG[2]), (EGG[3], EGG[2])]
    assert len(pairs["What is the capital of France?"]) == 3
    assert len(pairs["What happens if you crack your knuckles a lot?"]) == 6


def test_binarized_pair_is_the_best_against_a_strictly_worse_one_seeded_by_prompt():
    rows, _ = uf.to_ranked_rows(records())
    pairs = uf.binarized_pairs(rows, seed=0)
    assert [p["prompt"] for p in pairs] == [r["prompt"] for r in rows]
    assert [p["chosen"] for p in pairs] == [COLOUR[0], EGG[0], "Paris.", KNUCKLES[2]]
    # Tied for best (EGG[0] and EGG[3]): the first is chosen, and the only worse one is rejected, whatever the seed
    assert all(uf.binarized_pairs(rows[1:2], seed)[0]["rejected"] == EGG[2] for seed in range(10))
    assert uf.binarized_pairs(rows, seed=0) == pairs  # reproducible
    # The draw follows the prompt, not the row's position: reversed rows give the same pairs, reversed
    assert uf.binarized_pairs(rows[::-1], seed=0) == pairs[::-1]
    # Over seeds, every worse completion is drawn, and never the best
    drawn = {uf.binarized_pairs(rows[:1], seed)[0]["rejected"] for seed in range(30)}
    assert drawn == set(COLOUR[1:])
    all_pairs = uf.all_pairs(rows)
    assert all(pair in all_pairs for seed in range(5) for pair in uf.binarized_pairs(rows, seed))
    # Under one seed, prompts with the same scores still draw independently (not all the same position)
    alike = [{"prompt": f"prompt {i}", "completions": ["w", "x", "y", "z"], "scores": [3, 2, 1, 0]} for i in range(30)]
    assert {pair["rejected"] for pair in uf.binarized_pairs(alike, seed=0)} == {"x", "y", "z"}


def test_ranked_rows_pair_like_scored_rows():
    rows, _ = uf.to_ranked_rows(records())
    ranked = [normalize_row(row).as_row() for row in rows]
    assert ranked[0]["ranks"] == [0, 2, 1, 2] and ranked[0]["scores"] == rows[0]["scores"]  # labels kept
    assert uf.all_pairs(ranked) == uf.all_pairs(rows)
    assert uf.binarized_pairs(ranked, seed=3) == uf.binarized_pairs(rows, seed=3)


def test_held_out_split_is_by_prompt_text_and_shared_by_rows_and_pairs():
    prompts = [f"prompt number {i}" for i in range(2000)]
    train, test = uf.split_by_prompt([{"prompt": p} for p in prompts], test_fraction=0.1)
    assert len(train) + len(test) == 2000 and 160 <= len(test) <= 240
    assert uf.split_by_prompt([{"prompt": p} for p in prompts[::-1]], test_fraction=0.1)[1] == test[::-1]
    assert uf.split_by_prompt([{"prompt": "a"}], test_fraction=0.0) == ([{"prompt": "a"}], [])
    assert uf.split_by_prompt([{"prompt": "a"}], test_fraction=1.0) == ([], [{"prompt": "a"}])
    # A different salt draws a different held-out set
    assert uf.split_by_prompt([{"prompt": p} for p in prompts], 0.1, salt="other")[1] != test
    with pytest.raises(ValueError, match="between 0 and 1"):
        uf.in_test_split("a", 1.5)
    rows, _ = uf.to_ranked_rows(records())
    held_out = {row["prompt"] for row in uf.split_by_prompt(rows, test_fraction=0.5)[1]}
    assert 0 < len(held_out) < len(rows)
    for pairs in (uf.all_pairs(rows), uf.binarized_pairs(rows, seed=0)):
        assert {pair["prompt"] for pair in uf.split_by_prompt(pairs, test_fraction=0.5)[1]} == held_out
    held_out_records = uf.split_by_prompt(records(), test_fraction=0.5, key="instruction")[1]
    assert held_out <= {record["instruction"] for record in held_out_records}


@pytest.mark.parametrize("edit, field, problem", [
    (lambda r: r.pop("completions"), "completions", "missing"),
    (lambda r: r.update(completions="Red."), "completions", "expected a list"),
    (lambda r: r.update(instruction=None), "instruction", "expected a string"),
    (lambda r: r["completions"][2].pop("annotations"), "completions[2].annotations", "missing"),
    (lambda r: r["completions"][1]["annotations"]["honesty"].update(Rating="high"),
     "completions[1].annotations.honesty.Rating", "expected a rating such as '4'"),
    (lambda r: r["completions"][1]["annotations"]["honesty"].update(Rating="7"),
     "completions[1].annotations.honesty.Rating", "off the 1-5 scale: got '7'"),
    (lambda r: r["completions"][2]["annotations"]["helpfulness"].update(Rating="0"),
     "completions[2].annotations.helpfulness.Rating", "off the 1-5 scale"),
    (lambda r: r["completions"][0]["annotations"]["truthfulness"].update(Rating=-3),
     "completions[0].annotations.truthfulness.Rating", "off the 1-5 scale"),
    (lambda r: r["completions"][3]["annotations"].update(truthfulness="5"),
     "completions[3].annotations.truthfulness", "expected an object"),
    (lambda r: r["completions"][0].update(response=["Red."]), "completions[0].response", "expected a string"),
    (lambda r: r["completions"].__setitem__(1, "Green."), "completions[1]", "expected an object"),
])
def test_malformed_record_is_refused_naming_its_row_and_field(edit, field, problem):
    bad = records()
    edit(bad[4])
    with pytest.raises(PreferenceDataError, match=f"row 4, field '{re.escape(field)}': {re.escape(problem)}") as caught:
        uf.to_ranked_rows(bad)
    assert (caught.value.row, caught.value.field) == (4, field)


def test_overall_score_of_the_wrong_type_is_refused_only_when_it_is_used():
    bad = records()
    bad[0]["completions"][1]["overall_score"] = "6"
    with pytest.raises(PreferenceDataError, match="row 0, field 'completions\\[1\\].overall_score': expected a num"):
        uf.to_ranked_rows(bad, rating="overall")
    assert uf.to_ranked_rows(bad)[1]["kept"] == 4


RATING = st.sampled_from(["1", "2", "3", "4", "5", "N/A"])
COMPLETION = st.tuples(st.sampled_from(["a", "b", "c", "d", "e", " "]), st.lists(RATING, min_size=4, max_size=4))


@FAST
@given(st.lists(st.lists(COMPLETION, max_size=6), max_size=5), st.integers(0, 2**32))
def test_pairs_never_tie_and_binarized_pairs_are_among_all_pairs(prompts, seed):
    """For any records: every row has 2+ distinct non-empty completions, not all tied, scored by the mean of their
    numeric ratings; all_pairs holds every untied pair exactly once; the binarized pair is one of them, its chosen the
    row's best; and every count adds up."""
    recs = [{"instruction": f"prompt {i}", "completions": [
        {"response": text, "annotations": {a: {"Rating": r} for a, r in zip(uf.ASPECTS, ratings)}}
        for text, ratings in completions]} for i, completions in enumerate(prompts)]
    rows, stats = uf.to_ranked_rows(recs)
    assert stats["kept"] == len(rows) and stats["kept"] + sum(stats["left_out"].values()) == len(recs)
    rated = [[(text, any(r != "N/A" for r in ratings)) for text, ratings in completions] for completions in prompts]
    usable = [{text for text, has_number in record if has_number and text.strip()} for record in rated]
    assert stats["completions_left_out"] == {
        "unscored": sum(not has_number for record in rated for _, has_number in record),
        "empty_response": sum(has_number and not text.strip() for record in rated for text, has_number in record),
        "identical_response": sum(sum(has_number and bool(text.strip()) for text, has_number in record) - len(texts)
                                  for record, texts in zip(rated, usable))}
    for row in rows:  # a row holds each usable response of its record once
        assert sorted(row["completions"]) == sorted(usable[int(row["prompt"].split()[1])])
    all_pairs, binarized = uf.all_pairs(rows), uf.binarized_pairs(rows, seed)
    assert len(binarized) == len(rows)
    expected_pairs = 0
    for row, pair in zip(rows, binarized):
        scores = dict(zip(row["completions"], row["scores"]))
        assert len(scores) == len(row["completions"]) >= 2 and len(set(row["scores"])) >= 2
        assert all(text.strip() for text in scores)
        assert scores[pair["chosen"]] == max(row["scores"]) > scores[pair["rejected"]]
        assert pair in all_pairs
        groups = [row["scores"].count(s) for s in set(row["scores"])]
        expected_pairs += (len(scores) * (len(scores) - 1) - sum(g * (g - 1) for g in groups)) // 2
    assert len(all_pairs) == expected_pairs
    assert all(pair["chosen"] != pair["rejected"] for pair in all_pairs)
    for record in recs:
        for completion in record["completions"]:
            numbers = [float(a["Rating"]) for a in completion["annotations"].values() if a["Rating"] != "N/A"]
            assert uf.score(completion) == (sum(numbers) / len(numbers) if numbers else None)


# -- the recipe end to end, at test size ------------------------------------------------------------------------------

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "ultrafeedback"
METHODS = ("pl_dpo", "binarized", "all_pairs")


@pytest.fixture(scope="module")
def uf_run(tmp_path_factory):
    """recipes/ultrafeedback/run.py --method all with configs/test.yaml on the fixture (half the prompts held out),
    chat rows through a tiny tokenizer's chat template, a tiny policy and reward model, and staged pushes."""
    from recipe_kit import tiny_models

    root = tmp_path_factory.mktemp("uf_recipe")
    models = tiny_models.build(root / "tiny", [str(FIXTURE)], chat_template=True)
    results = load_recipe("ultrafeedback").main([
        "--config", str(RECIPE / "configs" / "test.yaml"), "--model_name_or_path", models["policy"],
        "--reward_model_name", models["reward"], "--data_files", f"train={FIXTURE}", "--output_dir", str(root / "runs"),
        "--push_to_hub", "--hub_model_id", "me/uf-tiny", "--hub_dry_run", str(root / "staged")])
    return root, results


def held_out_split():
    rows, _ = uf.load_rows(data_files=str(FIXTURE), rating="overall")
    return uf.split_by_prompt(rows, test_fraction=0.5)


def test_three_methods_train_on_the_same_prompts_for_the_same_steps_and_are_evaluated_on_the_same_rows(uf_run):
    root, results = uf_run
    recipe = load_recipe("ultrafeedback")
    train, test = held_out_split()
    assert 0 < len(test) < len(test) + len(train)
    info = {m: json.loads((root / "runs" / m / "run_info.json").read_text()) for m in METHODS}
    expected_eval = recipe.prompts_digest([recipe.as_chat(row) for row in test])
    expected_train = recipe.prompts_digest([recipe.as_chat(row) for row in train])
    for method in METHODS:
        assert info[method]["eval_prompts_sha256"] == expected_eval and info[method]["eval_rows"] == len(test)
        assert info[method]["train_prompts_sha256"] == expected_train
    assert [info[m]["train_rows"] for m in METHODS] == [len(train), len(train), len(uf.all_pairs(train))]
    assert len(uf.all_pairs(train)) > len(train)  # so equal steps is a real constraint on all_pairs
    for method in METHODS:  # the steps each trainer took, from its epoch count: max_steps of batches of 2 rows
        steps_per_epoch = math.ceil(info[method]["train_rows"] / 2)
        assert round(results[method]["epoch"] * steps_per_epoch) == info[method]["max_steps"] == 3
        assert {"eval_rewards/accuracies", "eval_rewards/top1_accuracy", "eval_rewards/kendall_tau",
                "win_rate"} <= set(results[method])


def test_comparison_tabulates_each_methods_results(uf_run):
    root, results = uf_run
    table = json.loads((root / "runs" / "comparison.json").read_text())
    assert list(table) == list(METHODS)
    markdown = (root / "runs" / "comparison.md").read_text().splitlines()
    for method in METHODS:
        assert table[method]["eval_rewards/kendall_tau"] == results[method]["eval_rewards/kendall_tau"]
        row = next(line for line in markdown if line.startswith(f"| {method} |"))
        assert f"| {results[method]['eval_rewards/top1_accuracy']:.4f} |" in row
        assert f"| {results[method]['win_rate']:.4f} |" in row
    assert "Evaluated on the same" in markdown[-1]
    # --method compare rebuilds the same table from the folders
    assert load_recipe("ultrafeedback").compare(root / "runs") == table


def test_each_method_is_staged_with_a_card_carrying_its_ranking_metrics_and_win_rate(uf_run):
    root, results = uf_run
    for method in METHODS:
        staged = root / "staged" / method
        assert (staged / "adapter_model.safetensors").read_bytes() == \
            (root / "runs" / method / "adapter_model.safetensors").read_bytes()
        assert (staged / "chat_template.jinja").is_file()  # the chat rows' template travels with the adapter
        metrics = card_metrics(staged / "README.md")
        for key, name in (("eval_rewards/accuracies", "preference_accuracy"), ("eval_rewards/top1_accuracy",
                          "top1_accuracy"), ("eval_rewards/kendall_tau", "kendall_tau"), ("win_rate", "win_rate")):
            assert metrics[name] == pytest.approx(results[method][key])


@pytest.mark.parametrize("name", ["lora.yaml", "qlora.yaml", "test.yaml"])
def test_configs_start_with_their_launch_commands_and_parse(name):
    run = parse_recipe_config("ultrafeedback", name)
    assert run.recipe.stage == "dpo" and run.recipe.chat_format
    if name == "test.yaml":
        return
    assert run.model.model_name_or_path == "Qwen/Qwen2.5-0.5B-Instruct" and run.recipe.method == "all"
    assert run.training.per_device_train_batch_size * run.training.gradient_accumulation_steps == 64
    assert run.model.load_in_4bit == (name == "qlora.yaml")


def test_an_sft_stage_is_refused():
    with pytest.raises(ValueError, match="no SFT stage"):
        load_recipe("ultrafeedback").main(["--config", str(RECIPE / "configs" / "test.yaml"), "--stage", "sft",
                                           "--sft_output_dir", "unused"])
