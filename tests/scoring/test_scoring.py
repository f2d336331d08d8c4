"""ImplicitRewardScorer: equals the naive two-model computation, and the trainers' logged rewards."""

import copy
import logging
import math

import datasets
import pytest
import torch
from fixtures import SCORING_LORA as LORA
from fixtures import make_model, perturbed_lora, ranked_rows, train_settings
from peft import LoraConfig

from dpo_ext.data.collate import RankedCollator
from dpo_ext.data.tokenize import tokenize_ranked
from dpo_ext.modeling import prompt_cache
from dpo_ext.modeling.batches import completion_logps
from dpo_ext.modeling.support import prefix_sharing_unsupported
from dpo_ext.reference import ReferenceMismatchError
from dpo_ext.sampling import sample_completions
from dpo_ext.scoring.evaluation import evaluate_preferences
from dpo_ext.scoring.scorer import ImplicitRewardScorer

PROMPTS = ["the movie was", "i saw it and", "they liked the", "we hated"]
COMPLETIONS = [[" good fun", " bad", " very very boring plot", " fine"], [" great"],
               [" awful film really", " fine music"], [" it", " the ending and the story and it was bad"]]
CHAT_TEMPLATE = ("{% for m in messages %}{% if m['role'] == 'user' %}i {% else %}we {% endif %}{{ m['content'] }} "
                 "<eos> {% endfor %}{% if add_generation_prompt %}we {% endif %}")


@torch.no_grad()
def naive_logps(policy, reference, tokenizer, prompts, completion_lists):
    """One prompt + completion row per completion, through the trainer's collator and forward: [(pi, ref, n)]."""
    collate = RankedCollator(pad_token_id=tokenizer.pad_token_id)
    out = []
    for prompt, completions in zip(prompts, completion_lists):
        prompt_ids, completion_ids = tokenize_ranked(prompt, completions, tokenizer)
        row = []
        for ids in completion_ids:
            batch = collate([{"prompt_ids": prompt_ids, "completion_ids": [ids], "ranks": [0]}])
            row.append((float(completion_logps(policy, batch)), float(completion_logps(reference, batch)), len(ids)))
        out.append(row)
    return out


def _check_against_naive(result, naive, beta=0.1):
    assert result.rewards.shape == (len(naive), max(len(r) for r in naive))
    for b, row in enumerate(naive):
        for k, (policy, ref, n) in enumerate(row):
            assert float(result.policy_logps[b, k]) == pytest.approx(policy, abs=2e-5)
            assert float(result.ref_logps[b, k]) == pytest.approx(ref, abs=2e-5)
            assert float(result.rewards[b, k]) == pytest.approx(beta * (policy - ref), abs=1e-5)
            assert int(result.num_tokens[b, k]) == n
        assert torch.isnan(result.rewards[b, len(row):]).all()
    assert result.rewards.isfinite().sum() == sum(len(r) for r in naive)


@pytest.mark.parametrize("options", [
    dict(),  # prefix sharing, policy then reference (the CPU default)
    dict(mixed_adapter_batches=True),  # policy and adapters-off reference in one forward
    dict(prefix_sharing=False),
    dict(max_batch_tokens=8, max_row_tokens=2),  # many small batches and rows, prompts repeated across chunks
    dict(attn="eager", mixed_adapter_batches=True),
], ids=["shared", "shared-mixed", "plain", "tiny-budget", "eager-mixed"])
def test_equals_naive_two_model_scoring(tokenizer, options):
    options = dict(options)
    model, reference = perturbed_lora(tokenizer, attn=options.pop("attn", "sdpa"))
    naive = naive_logps(model, reference, tokenizer, PROMPTS, COMPLETIONS)
    assert abs(naive[0][0][0] - naive[0][0][1]) > 0.05  # the adapter really changes the log-probs
    scorer = ImplicitRewardScorer(model, tokenizer, **options)
    assert scorer.reference == "disabled_adapters"
    _check_against_naive(scorer.score(PROMPTS, COMPLETIONS), naive)
    assert not model.training


def test_chat_inputs_use_the_chat_template(tokenizer):
    chat = copy.deepcopy(tokenizer)
    chat.chat_template = CHAT_TEMPLATE
    model, reference = perturbed_lora(chat)
    prompts = [[{"role": "user", "content": "the movie was"}], [{"role": "user", "content": "i saw it"}]]
    completions = [["good fun", "bad plot"], [[{"role": "assistant", "content": "great"}], "awful"]]
    as_messages = [[[{"role": "assistant", "content": c}] if isinstance(c, str) else c for c in row]
                   for row in completions]
    naive = naive_logps(model, reference, chat, prompts, as_messages)
    _check_against_naive(ImplicitRewardScorer(model, chat).score(prompts, completions), naive)
    with pytest.raises(ValueError, match="no chat template"):
        ImplicitRewardScorer(model, tokenizer).score(prompts, completions)


def test_one_completion_per_prompt_gives_flat_results(tokenizer):
    model, reference = perturbed_lora(tokenizer)
    flat = ImplicitRewardScorer(model, tokenizer).score(PROMPTS[:2], [" good fun", " great"])
    assert flat.rewards.shape == flat.policy_logps.shape == flat.num_tokens.shape == (2,)
    naive = naive_logps(model, reference, tokenizer, PROMPTS[:2], [[" good fun"], [" great"]])
    assert flat.rewards.tolist() == pytest.approx([0.1 * (r[0][0] - r[0][1]) for r in naive], abs=1e-5)
    flat.rewards[0] = 0.0  # ordinary tensors, not inference-mode ones


def test_reference_free_and_mean_normalisation(tokenizer):
    model, reference = perturbed_lora(tokenizer)
    naive = naive_logps(model, reference, tokenizer, PROMPTS, COMPLETIONS)
    scorer = ImplicitRewardScorer(model, tokenizer, beta=0.5)
    free = scorer.score(PROMPTS, COMPLETIONS, reference_free=True)
    mean = scorer.score(PROMPTS, COMPLETIONS, normalize="mean", beta=2.0)
    assert free.ref_logps is None and free.reference_free
    for b, row in enumerate(naive):
        for k, (policy, ref, n) in enumerate(row):
            assert float(free.rewards[b, k]) == pytest.approx(0.5 * policy, abs=1e-5)
            assert float(mean.rewards[b, k]) == pytest.approx(2.0 * (policy - ref) / n, abs=1e-5)
    with pytest.raises(ValueError, match="normalize"):
        scorer.score(PROMPTS, COMPLETIONS, normalize="max")


def test_reference_from_named_adapter_or_separate_model(tokenizer):
    model, reference = perturbed_lora(tokenizer)
    other, _ = perturbed_lora(tokenizer, lora_seed=5)  # same base, another LoRA
    model.add_adapter("ref", model.peft_config["default"])
    with torch.no_grad():  # the "ref" adapter gets a different non-zero LoRA
        for name, param in model.named_parameters():
            if ".ref." in name:
                param.copy_(other.get_parameter(name.replace(".ref.", ".default.")))
    with torch.no_grad():
        expected = ImplicitRewardScorer(other, tokenizer, reference_free=True).score(PROMPTS, COMPLETIONS)
    for options in (dict(), dict(mixed_adapter_batches=True)):
        result = ImplicitRewardScorer(model, tokenizer, ref_adapter="ref", **options).score(PROMPTS, COMPLETIONS)
        assert torch.allclose(result.ref_logps, expected.policy_logps, atol=2e-5, equal_nan=True)
    assert model.active_adapter == "default"
    assert not any(p.requires_grad for n, p in model.named_parameters() if ".ref." in n)

    plain, _ = perturbed_lora(tokenizer, lora_seed=5)
    scorer = ImplicitRewardScorer(plain.merge_and_unload(), tokenizer, ref_model=reference)
    naive = naive_logps(other, reference, tokenizer, PROMPTS, COMPLETIONS)
    _check_against_naive(scorer.score(PROMPTS, COMPLETIONS), naive)


def test_full_model_without_reference_is_refused(tokenizer):
    scorer = ImplicitRewardScorer(make_model(tokenizer), tokenizer)
    with pytest.raises(ReferenceMismatchError, match="not a PEFT adapter"):
        scorer.score(PROMPTS, COMPLETIONS)
    assert scorer.score(PROMPTS, COMPLETIONS, reference_free=True).rewards.shape == (4, 4)


def test_bad_inputs_name_the_prompt_and_completion(tokenizer):
    scorer = ImplicitRewardScorer(perturbed_lora(tokenizer)[0], tokenizer)
    with pytest.raises(ValueError, match=r"prompt 1, completion 0: empty completion"):
        scorer.score(PROMPTS[:2], [[" good"], ["  "]])
    with pytest.raises(ValueError, match="2 prompts and 1 completions"):
        scorer.score(PROMPTS[:2], [" good"])
    with pytest.raises(ValueError, match="completion 1 is not a list"):
        scorer.score(PROMPTS[:2], [[" good"], " bad"])
    with pytest.raises(ValueError, match="more than the model's 64 positions"):
        scorer.score(PROMPTS[:1], [" good" * 70])
    truncated = ImplicitRewardScorer(perturbed_lora(tokenizer)[0], tokenizer, max_length=10)
    assert int(truncated.score(PROMPTS[:1], [" good" * 70]).num_tokens[0]) == 7  # 10 - 3 prompt tokens


def test_falls_back_to_plain_rows_with_one_warning(tokenizer, monkeypatch, caplog):
    model, reference = perturbed_lora(tokenizer)
    model.config._attn_implementation = "flash_attention_2"
    assert "flash_attention_2" in prefix_sharing_unsupported(model)
    model.config._attn_implementation = "sdpa"
    # A prefix-sharing path that silently ignores the prompt must be caught by the first-use check.
    real = prompt_cache.block_attention_mask
    wrong = lambda segments, dtype, queries: real(segments.masked_fill(segments == 0, -1), dtype, queries)  # noqa: E731
    monkeypatch.setattr(prompt_cache, "block_attention_mask", wrong)
    scorer = ImplicitRewardScorer(model, tokenizer)
    with caplog.at_level(logging.WARNING, logger="dpo_ext.scoring"):
        first = scorer.score(PROMPTS, COMPLETIONS)
        second = scorer.score(PROMPTS, COMPLETIONS)
    assert [r.message for r in caplog.records].count(caplog.records[0].message) == 1
    assert "prefix-shared log-probs differ" in caplog.records[0].message
    naive = naive_logps(model, reference, tokenizer, PROMPTS, COMPLETIONS)
    _check_against_naive(first, naive)
    _check_against_naive(second, naive)


def test_falls_back_to_plain_rows_when_the_cache_api_changes(tokenizer, monkeypatch, caplog):
    """A transformers whose cache no longer takes ``ddp_cache_data``: one clear warning, then plain rows."""
    import transformers

    class OtherCache(transformers.DynamicCache):
        def __init__(self):
            super().__init__()

    monkeypatch.setattr(transformers, "DynamicCache", OtherCache)
    model, reference = perturbed_lora(tokenizer)
    groups = [prompt_cache.Group([5, 6, 7], [[8, 9], [10, 11]], [0, 1])]
    with pytest.raises(prompt_cache.PromptCacheError, match="KV-cache API"):
        prompt_cache.score_groups(prompt_cache.Runner(model, 0), groups, 2)
    scorer = ImplicitRewardScorer(model, tokenizer)
    with caplog.at_level(logging.WARNING, logger="dpo_ext.scoring"):
        result = scorer.score(PROMPTS, COMPLETIONS)
    warnings = [r.getMessage() for r in caplog.records if r.name.startswith("dpo_ext.scoring")]
    assert len(warnings) == 1 and "KV-cache API" in warnings[0] and "ddp_cache_data" in warnings[0]
    _check_against_naive(result, naive_logps(model, reference, tokenizer, PROMPTS, COMPLETIONS))


def test_rerank_and_best_of_n(tokenizer):
    model, reference = perturbed_lora(tokenizer)
    scorer = ImplicitRewardScorer(model, tokenizer)
    candidates = [" good fun", " bad", " fine", " awful plot"]
    ranked = scorer.rerank("the movie was", candidates)
    rewards = scorer.score(["the movie was"], [candidates]).rewards[0]
    assert [c.completion for c in ranked] == [candidates[i] for i in rewards.argsort(descending=True)]
    assert [c.reward for c in ranked] == pytest.approx(sorted(rewards.tolist(), reverse=True), abs=1e-6)

    results = scorer.best_of_n(["the movie was", "i saw"], n=4, generation_config={"max_new_tokens": 6}, seed=5)
    # the same samples again (the seed fixes them), scored naively: one row per sample through policy and reference
    samples = sample_completions(model, tokenizer, ["the movie was", "i saw"], 4, {"max_new_tokens": 6}, seed=5)
    collate = RankedCollator(pad_token_id=tokenizer.pad_token_id)
    assert len(results) == 2
    for result, sample in zip(results, samples):
        assert len(result.candidates) == 4
        naive = []
        with torch.no_grad():
            for ids in sample.completion_ids:
                batch = collate([{"prompt_ids": sample.prompt_ids, "completion_ids": [ids], "ranks": [0]}])
                naive.append(0.1 * float(completion_logps(model, batch) - completion_logps(reference, batch)))
        assert len(set(naive)) == 4  # distinct samples, so picking the best is a real choice
        assert result.best.index == naive.index(max(naive))
        assert result.best.reward == pytest.approx(max(naive), abs=1e-5)
        assert [c.reward for c in result.ranked] == sorted((c.reward for c in result.candidates), reverse=True)
        assert all(1 <= c.num_tokens <= 6 and math.isfinite(c.reward) for c in result.candidates)
    # An explicit sampler with its own tokenizer: samples are decoded and re-scored as text.
    sampled = scorer.best_of_n(["the movie was"], n=2, sampler=make_model(tokenizer, seed=3),
                               sampler_tokenizer=copy.deepcopy(tokenizer), generation_config={"max_new_tokens": 4})
    assert len(sampled[0].candidates) == 2 and isinstance(sampled[0].best.completion, str)


def test_evaluate_preferences_on_pairwise_and_ranked_rows(tokenizer):
    model, _ = perturbed_lora(tokenizer)
    scorer = ImplicitRewardScorer(model, tokenizer)
    pairs = [{"prompt": p, "chosen": c[0], "rejected": c[-1]} for p, c in zip(PROMPTS, COMPLETIONS) if len(c) > 1]
    metrics = evaluate_preferences(scorer, pairs, return_rewards=True)
    rewards = metrics["rewards"]
    assert metrics["num_rows"] == 3 and metrics["num_skipped"] == 0
    assert metrics["accuracy"] == pytest.approx(sum(r[0] > r[1] for r in rewards) / 3)
    assert metrics["rewards/chosen"] == pytest.approx(sum(r[0] for r in rewards) / 3, abs=1e-6)

    rows = ranked_rows(4, k=3, seed=1) + [{"prompt": "a", "completions": [" good", " bad"], "ranks": [0, 0]}]
    ranked = evaluate_preferences(scorer, datasets.Dataset.from_list(rows))
    assert ranked["num_rows"] == 4 and ranked["num_skipped"] == 1
    assert set(ranked) >= {"top1_accuracy", "pairwise_accuracy", "kendall_tau", "rewards/margins"}


def _scores_match_logged(adapter_dir, reference: str, pairs, logged: dict) -> dict:
    """Load a saved adapter as a scorer, check which reference it found, and check that its evaluation of ``pairs``
    gives the rewards the trainer logged for the same rows."""
    scorer = ImplicitRewardScorer.from_pretrained(str(adapter_dir), device="cpu")
    assert scorer.reference == reference
    ours = evaluate_preferences(scorer, pairs)
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins"):
        assert ours[key] == pytest.approx(logged[f"eval_{key}"], abs=1e-5), key
    return ours


def _train_config(tmp_path, **overrides):
    return train_settings(tmp_path, **{**dict(per_device_train_batch_size=4, per_device_eval_batch_size=8,
                                              learning_rate=2e-2, num_train_epochs=2, max_length=32, seed=0,
                                              beta=0.1), **overrides})


def test_scores_match_the_trainers_logged_rewards(tokenizer, tmp_path):
    """Train a LoRA with PLDPOTrainer; its eval metrics on rows equal evaluate_preferences on the same rows."""
    from dpo_ext import PLDPOConfig, PLDPOTrainer

    rows = ranked_rows(8, k=3, seed=2)
    for row in rows:  # a leading space keeps prompt and completion words apart
        row["completions"] = [" " + c for c in row["completions"]]
    data = datasets.Dataset.from_list(rows)
    trainer = PLDPOTrainer(make_model(tokenizer), args=PLDPOConfig(**_train_config(tmp_path)), train_dataset=data,
                           eval_dataset=data, processing_class=tokenizer,
                           peft_config=LoraConfig(**LORA, task_type="CAUSAL_LM"))
    trainer.train()
    logged = trainer.evaluate()  # one eval batch of all 8 rows: the logged means are over rows
    ours = evaluate_preferences(ImplicitRewardScorer(trainer.model, tokenizer, beta=0.1), rows)
    assert abs(logged["eval_rewards/margins"]) > 1e-3  # training moved the policy away from the reference
    for key, theirs in (("rewards/chosen", "eval_rewards/chosen"), ("rewards/rejected", "eval_rewards/rejected"),
                        ("rewards/margins", "eval_rewards/margins"), ("accuracy", "eval_rewards/accuracies"),
                        ("top1_accuracy", "eval_rewards/top1_accuracy"),
                        ("pairwise_accuracy", "eval_rewards/pairwise_accuracy"),
                        ("kendall_tau", "eval_rewards/kendall_tau")):
        assert ours[key] == pytest.approx(logged[theirs], abs=1e-5), key


def _save_base(tokenizer, path):
    model = make_model(tokenizer)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path)  # its name_or_path is `path`, as the adapter will record


def _pairs(n=8):
    rows = ranked_rows(n, k=2, seed=3)
    return [{"prompt": r["prompt"], "chosen": " " + r["completions"][r["ranks"].index(0)],
             "rejected": " " + r["completions"][r["ranks"].index(1)]} for r in rows]


def test_from_pretrained_loads_a_dpo_ext_adapter(tokenizer, tmp_path):
    from dpo_ext import PLDPOConfig, PLDPOTrainer

    pairs = _pairs()
    trainer = PLDPOTrainer(_save_base(tokenizer, tmp_path / "base"), args=PLDPOConfig(**_train_config(tmp_path)),
                           train_dataset=datasets.Dataset.from_list(pairs), processing_class=tokenizer,
                           peft_config=LoraConfig(**LORA, task_type="CAUSAL_LM"))
    trainer.train()
    trainer.save_model(str(tmp_path / "adapter"))
    expected = ImplicitRewardScorer(trainer.model, tokenizer).score([p["prompt"] for p in pairs],
                                                                    [[p["chosen"], p["rejected"]] for p in pairs])
    loaded = ImplicitRewardScorer.from_pretrained(str(tmp_path / "adapter"), device="cpu")
    assert loaded.reference == "disabled_adapters"
    got = loaded.score([p["prompt"] for p in pairs], [[p["chosen"], p["rejected"]] for p in pairs])
    assert expected.rewards.abs().max() > 1e-3
    assert torch.allclose(got.rewards, expected.rewards, atol=1e-5)


def test_from_pretrained_loads_trl_adapters(tokenizer, tmp_path):
    """trl.DPOTrainer: a new LoRA (reference = adapters off), and a re-trained one (reference = saved ref/ copy)."""
    from trl import DPOConfig, DPOTrainer

    pairs = _pairs()
    data = datasets.Dataset.from_list(pairs)
    config = DPOConfig(**_train_config(tmp_path, per_device_eval_batch_size=len(pairs)), bf16=False,
                       gradient_checkpointing=False, loss_type=["sigmoid"])
    trainer = DPOTrainer(_save_base(tokenizer, tmp_path / "base"), args=config, train_dataset=data,
                         eval_dataset=data, processing_class=tokenizer,
                         peft_config=LoraConfig(**LORA, task_type="CAUSAL_LM"))
    trainer.train()
    logged = trainer.evaluate()
    trainer.save_model(str(tmp_path / "trl_adapter"))
    ours = _scores_match_logged(tmp_path / "trl_adapter", "disabled_adapters", pairs, logged)
    assert abs(ours["rewards/margins"]) > 1e-3

    # Re-training the saved adapter: TRL keeps the starting adapter as a frozen "ref" adapter and saves it in ref/.
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tmp_path / "base")
    again = PeftModel.from_pretrained(base, tmp_path / "trl_adapter", is_trainable=True)
    trainer = DPOTrainer(again, args=config, train_dataset=data, eval_dataset=data, processing_class=tokenizer)
    trainer.train()
    logged = trainer.evaluate()
    trainer.save_model(str(tmp_path / "trl_again"))
    _scores_match_logged(tmp_path / "trl_again", "adapter:ref", pairs, logged)


# -- the training record: beta and reference ---------------------------------------------------------------------

def _adapter_trained_at(tokenizer, tmp_path, beta):
    """A PLDPOTrainer adapter trained at ``beta`` and saved with its record; (folder, prompts, completion lists)."""
    from dpo_ext import PLDPOConfig, PLDPOTrainer

    pairs = _pairs()
    trainer = PLDPOTrainer(_save_base(tokenizer, tmp_path / "base"),
                           args=PLDPOConfig(**_train_config(tmp_path, beta=beta, num_train_epochs=1)),
                           train_dataset=datasets.Dataset.from_list(pairs), processing_class=tokenizer,
                           peft_config=LoraConfig(**LORA, task_type="CAUSAL_LM"))
    trainer.train()
    trainer.save_model(str(tmp_path / "adapter"))
    return tmp_path / "adapter", [p["prompt"] for p in pairs], [[p["chosen"], p["rejected"]] for p in pairs]


def _assert_rewards_at(result, beta):
    """Rewards are ``beta`` times the log-ratio of the result's own log-probs, checked value by value."""
    ratio = result.policy_logps - result.ref_logps  # NaN in the padding slots of short lists
    assert ratio.nan_to_num().abs().max() > 1e-3  # the adapter moved away from its reference
    for b in range(result.rewards.shape[0]):
        for k in range(int(ratio[b].isfinite().sum())):
            by_hand = beta * (float(result.policy_logps[b, k]) - float(result.ref_logps[b, k]))
            assert float(result.rewards[b, k]) == pytest.approx(by_hand, rel=1e-5, abs=1e-6)


def test_from_pretrained_scores_at_the_recorded_beta(tokenizer, tmp_path, caplog):
    adapter, prompts, lists = _adapter_trained_at(tokenizer, tmp_path, beta=0.5)
    scorer = ImplicitRewardScorer.from_pretrained(str(adapter), device="cpu")
    assert scorer.beta == 0.5 and scorer.beta_source == str(adapter / "dpo_ext_reference.json")
    _assert_rewards_at(scorer.score(prompts, lists), 0.5)
    assert ImplicitRewardScorer.from_pretrained(str(adapter), device="cpu", beta=0.5).beta == 0.5  # agrees: fine

    with pytest.raises(ValueError) as info:
        ImplicitRewardScorer.from_pretrained(str(adapter), device="cpu", beta=0.1)
    for fragment in ("beta=0.1", "beta=0.5", str(adapter / "dpo_ext_reference.json"), "override_beta=True"):
        assert fragment in str(info.value)

    with caplog.at_level(logging.WARNING):
        overridden = ImplicitRewardScorer.from_pretrained(str(adapter), device="cpu", beta=0.1, override_beta=True)
    assert overridden.beta == 0.1 and overridden.beta_source == "argument"
    assert any("beta=0.1" in r.message and "beta=0.5" in r.message for r in caplog.records)
    _assert_rewards_at(overridden.score(prompts, lists), 0.1)


def test_cli_takes_beta_from_the_record_and_refuses_another(tokenizer, tmp_path, capsys, caplog):
    import json

    from dpo_ext.cli import main as cli_main

    adapter, prompts, lists = _adapter_trained_at(tokenizer, tmp_path, beta=0.5)
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"prompt": p, "completions": c}) + "\n" for p, c in zip(prompts, lists)))
    out = tmp_path / "scored.jsonl"
    base = ["score", str(adapter), "-i", str(rows), "-o", str(out), "--device", "cpu"]

    capsys.readouterr()  # training's progress bars
    assert cli_main(base + ["--beta", "0.1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("dpo-ext score: error: ")
    assert "beta=0.1" in err and "beta=0.5" in err and "--override-beta" in err

    expected = ImplicitRewardScorer.from_pretrained(str(adapter), device="cpu").score(prompts, lists)
    assert cli_main(base) == 0  # no --beta: the recorded 0.5
    scored = [json.loads(line) for line in out.read_text().splitlines()]
    assert [v for r in scored for v in r["rewards"]] == pytest.approx(expected.rewards.flatten().tolist(), abs=1e-6)

    with caplog.at_level(logging.WARNING):
        assert cli_main(base + ["--beta", "0.1", "--override-beta"]) == 0
    assert any("override" in r.message and "beta=0.1" in r.message for r in caplog.records)
    scored = [json.loads(line) for line in out.read_text().splitlines()]
    assert [v for r in scored for v in r["rewards"]] == pytest.approx((expected.rewards * 0.2).flatten().tolist(),
                                                                      abs=1e-6)


def test_beta_without_a_record(tokenizer, tmp_path, caplog):
    """A TRL adapter: no record; the beta of a training config if there is one (never training_args.bin), else 0.1
    with a note."""
    from fixtures import save_base_and_adapter

    adapter = save_base_and_adapter(tokenizer, tmp_path, lora_scale=0.3, seed=0) / "adapter"
    (adapter / "training_args.bin").write_bytes(b"not a pickle: never opened")
    with caplog.at_level(logging.WARNING):
        scorer = ImplicitRewardScorer.from_pretrained(str(adapter), device="cpu")
    assert scorer.beta == 0.1 and scorer.beta_source == "default"
    assert any("default beta 0.1" in r.message for r in caplog.records)
    assert scorer.reference == "disabled_adapters"

    (adapter / "training_config.yaml").write_text("beta: 0.3\nlearning_rate: 1.0e-5\n")
    scorer = ImplicitRewardScorer.from_pretrained(str(adapter), device="cpu")
    assert scorer.beta == 0.3 and scorer.beta_source == str(adapter / "training_config.yaml")
    _assert_rewards_at(scorer.score(PROMPTS[:2], COMPLETIONS[:2]), 0.3)
    with pytest.raises(ValueError, match="training_config.yaml records beta=0.3"):
        ImplicitRewardScorer.from_pretrained(str(adapter), device="cpu", beta=1)


def test_the_scorer_runs_the_trainers_reference_sources(tokenizer):
    """One definition of each reference: the scorer holds the same source classes the trainer picks from."""
    from dpo_ext.reference import AdapterReference, DisabledAdapterReference, ModelReference

    model, reference = perturbed_lora(tokenizer)
    assert type(ImplicitRewardScorer(model, tokenizer).reference_source) is DisabledAdapterReference
    model.add_adapter("start", model.peft_config["default"])
    scorer = ImplicitRewardScorer(model, tokenizer, ref_adapter="start")
    assert isinstance(scorer.reference_source, AdapterReference) and scorer.reference == "adapter:start"
    scorer = ImplicitRewardScorer(model, tokenizer, ref_model=reference)
    assert type(scorer.reference_source) is ModelReference and scorer.reference == "ref_model"
    assert ImplicitRewardScorer(make_model(tokenizer), tokenizer).reference_source is None
