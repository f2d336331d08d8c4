"""recipes/recipe_kit: the small pieces the HH, TL;DR, UltraFeedback and sentiment recipes share (each recipe's test
runs it end to end; these are the rules those runs do not reach)."""

import sys
from pathlib import Path

import pytest

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
sys.path.insert(0, str(RECIPES))

from recipe_kit.arguments import RecipeArguments, files_by_split, first, local_file  # noqa: E402
from recipe_kit.win_rate import distinct_prompts, generation_config  # noqa: E402


def test_data_files_are_split_equals_path_and_a_bare_path_is_the_train_file():
    assert files_by_split(["train=a.jsonl", "test=b.jsonl"]) == {"train": "a.jsonl", "test": "b.jsonl"}
    assert files_by_split(["a.jsonl"]) == {"train": "a.jsonl"}
    assert files_by_split(None) == {} and local_file(None, "test") is None
    with pytest.raises(ValueError, match="give each split once"):
        files_by_split(["a.jsonl", "train=b.jsonl"])
    with pytest.raises(ValueError, match="no test file .*add test=PATH"):
        local_file(["train=a.jsonl"], "test")
    assert first([1, 2, 3], None) == [1, 2, 3] and first([1, 2, 3], 2) == [1, 2]


def test_stages_that_write_the_sft_model_need_its_folder():
    with pytest.raises(ValueError, match="--stage all writes the SFT model: give --sft_output_dir"):
        RecipeArguments()
    with pytest.raises(ValueError, match="must be one of sft, dpo, all"):
        RecipeArguments(stage="ppo")
    assert RecipeArguments(stage="dpo").sft_output_dir is None


def test_win_rate_prompts_are_distinct_in_order_and_greedy_at_temperature_zero():
    chat = [{"role": "user", "content": "hi"}]
    rows = [{"prompt": "a"}, {"prompt": "b"}, {"prompt": "a"}, {"prompt": chat}, {"prompt": list(chat)}]
    assert distinct_prompts(rows, 10) == ["a", "b", chat] and distinct_prompts(rows, 1) == ["a"]
    assert generation_config(RecipeArguments(stage="dpo", temperature=0, max_new_tokens=5)) == {
        "do_sample": False, "max_new_tokens": 5}
    assert generation_config(RecipeArguments(stage="dpo", temperature=0.7))["temperature"] == 0.7


def test_a_stage_depends_on_its_own_and_earlier_settings_and_later_stages_on_everything_but_the_excluded():
    """Table a: (x), b: (y), c: (): b reads x and y; c (every setting from c on) adds z but not the excluded w."""
    from recipe_kit.cached_stages import stage_settings

    table = {"a": ("x",), "b": ("y",), "c": ()}
    everything = {"w": 0, "x": 1, "y": 2, "z": 3}
    assert stage_settings(everything, "a", table, ("w",), every_setting_from="c") == {"x": 1}
    assert stage_settings(everything, "b", table, ("w",), every_setting_from="c") == {"x": 1, "y": 2}
    assert stage_settings(everything, "c", table, ("w",), every_setting_from="c") == {"x": 1, "y": 2, "z": 3}
    assert stage_settings(everything, "c", table) == {"x": 1, "y": 2}


def test_all_settings_reads_dataclasses_and_training_arguments_as_json_and_later_groups_win():
    from dataclasses import dataclass

    from recipe_kit.cached_stages import all_settings

    from dpo_ext import PLDPOConfig

    @dataclass
    class Mine:
        seed: int = 7
        path: Path = Path("a/b")

    settings = all_settings(Mine(), PLDPOConfig(output_dir="out", seed=3, hub_token="secret"))
    assert settings["seed"] == 3 and settings["output_dir"] == "out" and settings["lr_scheduler_type"] == "linear"
    assert settings["hub_token"] != "secret"  # TrainingArguments.to_dict masks tokens
    assert all_settings(PLDPOConfig(output_dir="out", seed=3), Mine())["path"] == "a/b"  # JSON: a path as its text


def test_a_cached_stage_builds_once_records_its_settings_and_warns_with_the_recipes_logger(tmp_path, caplog):
    import json
    import logging

    from recipe_kit.cached_stages import MARKER, stage

    built = []

    def build(folder):
        built.append(folder)
        (folder / "x.txt").write_text("1")

    log = logging.getLogger("some_recipe")
    with caplog.at_level(logging.INFO, logger="some_recipe"):
        assert stage(2, "demo", tmp_path / "s", build, lambda d: (d / "x.txt").read_text(), total=5,
                     settings={"lr": 1}, log=log) == "1"
        assert stage(2, "demo", tmp_path / "s", build, lambda d: "cached", total=5, settings={"lr": 2}, log=log) \
            == "cached"
    assert built == [tmp_path / "s"]
    assert json.loads((tmp_path / "s" / MARKER).read_text())["settings"] == {"lr": 1}
    assert "[2/5] demo: running" in caplog.text and "lr: 1 -> 2" in caplog.text
    assert {record.name for record in caplog.records} == {"some_recipe"}


def test_best_of_n_picks_by_disjoint_groups():
    """Two prompts, N_max = 4. Truth row 0: [0, 1, 2, 3]; scores favour index 0 in the first pair, 3 in the second.

    N=1: every sample is a group, mean of truth = (0+1+2+3 + 4+5+6+7) / 8 = 3.5.
    N=2: groups (0,1),(2,3) per row; picks by score: row 0 -> truth 0 and 3; row 1 -> truth 4 and 7: mean 3.5.
    N=4: one group per row; argmax score is index 3 in both rows: truth 3 and 7, mean 5.
    """
    import torch
    from recipe_kit import best_of_n

    truth = torch.tensor([[0.0, 1, 2, 3], [4, 5, 6, 7]])
    scores = torch.tensor([[9.0, 1, 2, 10], [9, 1, 2, 10]])
    assert best_of_n.picks_per_prompt(scores, truth, 1).mean().item() == pytest.approx(3.5)
    assert best_of_n.picks_per_prompt(scores, truth, 2).mean().item() == pytest.approx(3.5)
    assert best_of_n.picks_per_prompt(scores, truth, 4).mean().item() == pytest.approx(5.0)
    # Per prompt at N=4: 3 and 7; standard deviation 2 * sqrt(2), standard error over 2 prompts 2.
    assert best_of_n.per_prompt_stats(best_of_n.picks_per_prompt(scores, truth, 4)) == (5.0, 2.0)
    assert best_of_n.pair_agreement(truth, truth) == 1.0
    assert best_of_n.pair_agreement(-truth, truth) == 0.0


def test_sampling_is_from_the_untouched_distribution():
    """The KL estimate needs samples from pi itself: the processed scores generate samples from must equal the raw
    logits (no top-k, top-p or temperature warping)."""
    import torch
    from recipe_kit import reward_kl

    from dpo_ext.testing import tiny_model, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    model = tiny_model(tokenizer).eval()
    ids = torch.tensor([tokenizer("the movie was")["input_ids"]] * 3)
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=4,
                         pad_token_id=tokenizer.pad_token_id, output_scores=True, output_logits=True,
                         return_dict_in_generate=True, **reward_kl.SAMPLING)
    assert torch.equal(torch.stack(out.scores), torch.stack(out.logits))


def test_kl_log_ratios_match_a_manual_sum():
    """Completions of different lengths (one a single token) and the prompt/completion boundary: compare the
    scorer-based log-ratios with log-softmax summed by hand, policy minus adapters-disabled reference, row by row."""
    import torch
    from peft import LoraConfig, get_peft_model
    from recipe_kit import reward_kl

    from dpo_ext.testing import tiny_model, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    torch.manual_seed(0)
    # init_lora_weights=False: B is random too, so the adapter changes the model (policy != reference).
    model = get_peft_model(tiny_model(tokenizer), LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"],
                                                             fan_in_fan_out=True, init_lora_weights=False)).eval()
    prompts = [tokenizer("the movie")["input_ids"], tokenizer("i really liked")["input_ids"]]
    completions = [[tokenizer(" was good and fun")["input_ids"], tokenizer(" it")["input_ids"]],
                   [tokenizer(" the movie was good")["input_ids"], tokenizer(" fun")["input_ids"][:1]]]
    got = reward_kl.log_ratios(model, tokenizer, prompts, completions)  # (P, S)

    def manual(prompt, completion):
        ids = torch.tensor([prompt + completion])
        with torch.no_grad():
            logps = torch.log_softmax(model(input_ids=ids).logits[0, :-1], -1)  # (T-1, V)
        return sum(logps[len(prompt) - 1 + t, tok].item() for t, tok in enumerate(completion))

    for p, (prompt, row) in enumerate(zip(prompts, completions)):
        for s, completion in enumerate(row):
            policy = manual(prompt, completion)
            with model.disable_adapter():
                reference = manual(prompt, completion)
            assert abs(policy - reference) > 1e-3  # the adapter matters, so the test can tell them apart
            assert got[p, s].item() == pytest.approx(policy - reference, abs=1e-4)


def test_sharded_sampling_gives_the_same_samples_on_one_or_two_workers(tmp_path, monkeypatch):
    """The numbers must not depend on how many worker processes run the jobs: shards and their seeds are fixed by
    the data, and every process runs torch on one thread."""
    from recipe_kit import pool as parallel
    from recipe_kit import reward_kl

    from dpo_ext.testing import tiny_model, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    tiny_model(tokenizer).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    prompts = [tokenizer(text)["input_ids"] for text in ("the movie was", "i liked it", "the plot", "a film")]
    monkeypatch.setattr(reward_kl, "SHARD_SEQUENCES", 4)  # 2 prompts x 2 samples per shard: 2 shards
    results = {}
    for workers in (1, 2):
        with parallel.JobPool(workers, recipe_dir=RECIPES) as pool:
            results[workers] = reward_kl.sample_in_shards(pool, tmp_path, prompts, 2, 6, seed=3)
    assert results[1] == results[2]
    assert len(results[1]) == 4 and all(len(row) == 2 and all(row) for row in results[1])
    # Shard 1 is seeded on its own: its samples are what sampling its prompts alone with that seed gives.
    alone = reward_kl.sample_job(tmp_path, prompts[2:], 2, 6, reward_kl.shard_seed(3, 1))
    assert results[1][2:] == alone


def small_tokenizer_and_texts():
    from recipe_kit.bpe import train_byte_level_bpe

    texts = ["the film was good and the actors were great", "a bad plot, a boring story and awful music",
             "i loved the ending of this movie", "we hated it: the worst scene of the year"] * 4
    return train_byte_level_bpe(texts, 300, ["<eos>", "<pad>"], "<eos>", "<pad>"), texts


def test_a_small_causal_lm_trained_from_scratch_learns_its_texts_and_repeats_bit_for_bit(tmp_path):
    """Two runs with the same initial weights and seed save the same weights; another seed draws other batches;
    the trained model predicts its texts far better than a random one (whose loss is about ln(300) = 5.7)."""
    import torch
    from recipe_kit.sft import train_small_causal_lm
    from safetensors.torch import load_file

    from dpo_ext.testing import tiny_model

    tokenizer, texts = small_tokenizer_and_texts()

    def train(folder, seed):
        model = tiny_model(tokenizer, seed=0, n_positions=16, n_head=4, dropout=0.0)
        train_small_causal_lm(model, tokenizer, texts, tmp_path / folder, max_length=16, batch_size=4, epochs=5,
                              learning_rate=1e-2, seed=seed, disable_tqdm=True)
        return model, load_file(tmp_path / folder / "model.safetensors")

    model, first = train("a", seed=1)
    _, again = train("b", seed=1)
    _, other = train("c", seed=2)
    assert model.config.n_head == 4 and model.config.resid_pdrop == model.config.attn_pdrop == 0.0
    assert all(torch.equal(first[name], again[name]) for name in first)
    assert not all(torch.equal(first[name], other[name]) for name in first)
    assert (tmp_path / "a" / "tokenizer.json").is_file() and not model.training
    batch = tokenizer(texts[:4], return_tensors="pt", padding=True, truncation=True, max_length=16)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    with torch.no_grad():
        assert model(**batch, labels=labels).loss < 3.5  # 2.7 measured; 5.7 untrained


def test_fine_tune_trains_every_weight_on_plain_text_rows(tmp_path):
    """``{"text"}`` rows (the sentiment recipe's reviews) through the same SFTTrainer path as prompt/completion rows."""
    import json

    import torch
    from recipe_kit.sft import SFT_RESULTS, fine_tune, sft_config
    from safetensors.torch import load_file
    from trl import ModelConfig

    from dpo_ext import PLDPOConfig
    from dpo_ext.testing import tiny_model

    tokenizer, texts = small_tokenizer_and_texts()
    base = tmp_path / "base"
    tiny_model(tokenizer, n_positions=32).save_pretrained(base)
    tokenizer.save_pretrained(base)
    training = PLDPOConfig(output_dir=str(tmp_path / "dpo"), use_cpu=True, seed=0, report_to="none",
                           disable_tqdm=True)
    config = sft_config(training, tmp_path / "trainer", shared=("seed", "use_cpu", "report_to", "disable_tqdm"),
                        num_train_epochs=1, learning_rate=1e-3, per_device_train_batch_size=4, max_length=32)
    out = fine_tune(ModelConfig(model_name_or_path=str(base), use_peft=True), config,
                    [{"text": text} for text in texts], tmp_path / "sft")
    results = json.loads((out / SFT_RESULTS).read_text())
    assert results["train_rows"] == 16 and results["train_loss"] > 0
    before, after = load_file(base / "model.safetensors"), load_file(out / "model.safetensors")
    assert set(before) == set(after) and not (out / "adapter").exists()  # use_peft=False: no LoRA, a plain model
    assert not torch.equal(before["transformer.h.1.mlp.c_fc.weight"], after["transformer.h.1.mlp.c_fc.weight"])
