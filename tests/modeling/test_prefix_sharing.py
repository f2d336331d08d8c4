"""Prefix sharing: packed ``prompt + c_1 + ... + c_K`` rows give the plain K-row path's log-probs, losses and grads."""

import logging
import math
import random

import datasets
import pytest
import torch
from fixtures import make_model, ranked_rows, train_settings
from peft import LoraConfig, get_peft_model

from dpo_ext import PLDPOConfig, PLDPOTrainer
from dpo_ext.data.collate import PackedRankedCollator, RankedCollator
from dpo_ext.logps import to_grid
from dpo_ext.losses import plackett_luce_loss
from dpo_ext.modeling import support as prefix_sharing
from dpo_ext.modeling.batches import batch_token_logps, completion_logps
from dpo_ext.modeling.forward import block_attention_mask
from dpo_ext.modeling.prompt_cache import Group, Runner, prompt_cache_problem
from dpo_ext.modeling.support import choose_collator, prefix_sharing_unsupported

LORA = dict(r=4, lora_alpha=8, target_modules=["c_attn", "c_proj"], lora_dropout=0.0, task_type="CAUSAL_LM")


def _examples(seed=0, n_lists=4, long=False):
    """Tokenized lists with K = 2..4 (so some slots are missing) and uneven prompt and completion lengths."""
    rng = random.Random(seed)
    examples = []
    for _ in range(n_lists):
        k = 4 if long and not examples else rng.randint(2, 4)
        prompt_len = rng.randint(18, 24) if long else rng.randint(1, 9)
        examples.append({
            "prompt_ids": [rng.randrange(3, 30) for _ in range(prompt_len)],
            "completion_ids": [[rng.randrange(3, 30) for _ in range(rng.randint(12 if long else 1, 20 if long else 9))]
                               for _ in range(k)],
            "ranks": rng.sample(range(k), k),
        })
    return examples


def _model(tokenizer, attention="eager", lora=False, seed=0):
    model = make_model(tokenizer, seed=seed)
    model.config._attn_implementation = attention
    if lora:
        model = get_peft_model(model, LoraConfig(**LORA))
        with torch.no_grad():  # a trained-looking adapter, so that disabling it changes the log-probs
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.normal_(0, 0.2)
    return model.eval()


def _both(examples, max_length=None):
    plain = RankedCollator(pad_token_id=0, max_length=max_length)(examples)
    packed = PackedRankedCollator(pad_token_id=0, max_length=max_length)(examples)
    return plain, packed


def test_block_mask_lets_each_completion_see_the_prompt_and_itself():
    segments = torch.tensor([[0, 0, 1, 1, 2, -1]])
    allowed = block_attention_mask(segments, torch.float32)[0, 0] == 0  # (L, L)
    expected = torch.tensor([
        [1, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0],
        [1, 1, 1, 1, 0, 0],
        [1, 1, 0, 0, 1, 0],  # completion 2 sees the prompt, not completion 1
        [0, 0, 0, 0, 0, 1],  # padding sees only itself, so its softmax row is not empty
    ], dtype=torch.bool)
    assert torch.equal(allowed, expected)
    assert block_attention_mask(segments, torch.bfloat16).dtype == torch.bfloat16


def test_block_mask_over_a_prompt_cache_keeps_the_query_rows():
    """Keys = [a prompt cache of 3 positions, the last one padding | 4 query tokens: completions 1, 2, padding]."""
    segments = torch.tensor([[0, 0, -1, 1, 1, 2, -1]])
    allowed = block_attention_mask(segments, torch.float32, queries=4)[0, 0] == 0  # (Q, P + Q)
    expected = torch.tensor([
        [1, 1, 0, 1, 0, 0, 0],
        [1, 1, 0, 1, 1, 0, 0],
        [1, 1, 0, 0, 0, 1, 0],  # completion 2 sees the real prompt positions and itself
        [0, 0, 0, 0, 0, 0, 1],  # a padding query sees only itself
    ], dtype=torch.bool)
    assert torch.equal(allowed, expected)


def test_packed_batch_keeps_row_order_slots_and_truncation():
    examples = _examples(seed=1)
    plain, packed = _both(examples, max_length=7)
    for key in ("slot_index", "ranks"):
        assert torch.equal(plain[key], packed[key])
    # every completion keeps exactly the tokens its plain row scores: (prompt + completion)[:max_length]
    plain_counts = plain["completion_mask"][:, 1:].sum(-1)
    assert torch.equal(packed["token_mask"].sum(-1), plain_counts)
    assert packed["input_ids"].shape[0] == len(examples)  # one row per list


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
@pytest.mark.parametrize("lora", [False, True])
@pytest.mark.parametrize("max_length", [None, 12])
def test_packed_logps_match_separate_rows(tokenizer, attention, lora, max_length):
    examples = _examples(seed=2, long=max_length is None)  # untruncated rows pack past n_positions=64
    plain, packed = _both(examples, max_length)
    if max_length is None:
        assert packed["input_ids"].shape[1] > 64
    model = _model(tokenizer, attention, lora)
    with torch.no_grad():
        torch.testing.assert_close(completion_logps(model, packed), completion_logps(model, plain),
                                   rtol=1e-5, atol=2e-5)
        if lora:  # the reference forward of a shared LoRA model runs on the same packed batch
            with model.disable_adapter():
                disabled_packed, disabled_plain = completion_logps(model, packed), completion_logps(model, plain)
            torch.testing.assert_close(disabled_packed, disabled_plain, rtol=1e-5, atol=2e-5)
            assert (disabled_packed - completion_logps(model, packed)).abs().max() > 1e-2


def test_per_token_logps_and_masks_match(tokenizer):
    plain, packed = _both(_examples(seed=3), max_length=10)
    model = _model(tokenizer)
    with torch.no_grad():
        plain_tokens, plain_mask = batch_token_logps(model, plain)  # (N, T-1)
        packed_tokens, packed_mask = batch_token_logps(model, packed)  # (N, C_max)
    for n in range(plain_tokens.shape[0]):
        expected = plain_tokens[n][plain_mask[n].bool()]
        torch.testing.assert_close(packed_tokens[n][packed_mask[n].bool()], expected, rtol=1e-5, atol=1e-5)


def test_loss_and_gradients_match(tokenizer):
    examples = _examples(seed=4)
    plain, packed = _both(examples, max_length=14)
    grads, losses = [], []
    for batch in (plain, packed):
        model = _model(tokenizer, lora=True)  # eval mode: no dropout, so both paths compute the same function
        with torch.no_grad(), model.disable_adapter():
            ref = completion_logps(model, batch)
        policy = completion_logps(model, batch)
        shape = batch["ranks"].shape
        loss = plackett_luce_loss(to_grid(policy, batch["slot_index"], *shape),
                                  to_grid(ref, batch["slot_index"], *shape), 1.0, batch["ranks"]).mean()
        loss.backward()
        losses.append(loss.detach())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-6)
    assert losses[0] > 0.1
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-4, atol=5e-6, msg=name)


def _trainer_args(tmp_path, **overrides):
    return PLDPOConfig(**train_settings(tmp_path, **{**dict(per_device_train_batch_size=4, per_device_eval_batch_size=4,
                                                            learning_rate=1e-2, num_train_epochs=2, max_length=12,
                                                            seed=0, beta=0.5), **overrides}))


def test_trainer_with_prefix_sharing_follows_the_plain_trajectory(tokenizer, tmp_path):
    data = datasets.Dataset.from_list(ranked_rows(8, k=4, seed=6, variable_k=True))
    runs = []
    for sharing in (False, True):
        trainer = PLDPOTrainer(make_model(tokenizer), args=_trainer_args(tmp_path, prefix_sharing=sharing),
                               train_dataset=data, processing_class=tokenizer, peft_config=LoraConfig(**LORA))
        assert isinstance(trainer.data_collator, PackedRankedCollator) == sharing
        assert trainer.reference.name == "disabled_adapters"
        trainer.train()
        runs.append([h["loss"] for h in trainer.state.log_history if "loss" in h])
    plain, shared = runs
    assert len(plain) == len(shared) == 4
    assert plain[-1] < plain[0] - 0.05  # the comparison is not of a run that stood still
    assert shared == pytest.approx(plain, rel=1e-4, abs=1e-5)


def test_trainer_with_a_reference_model_and_prefix_sharing(tokenizer, tmp_path):
    data = datasets.Dataset.from_list(ranked_rows(8, k=3, seed=7))
    metrics = []
    for sharing in (False, True):
        trainer = PLDPOTrainer(make_model(tokenizer, seed=1), ref_model=make_model(tokenizer, seed=2),
                               args=_trainer_args(tmp_path, prefix_sharing=sharing), train_dataset=data,
                               eval_dataset=data, processing_class=tokenizer)
        metrics.append(trainer.evaluate())
    assert abs(metrics[0]["eval_loss"] - math.log(6)) > 0.01
    for key in ("eval_loss", "eval_rewards/margins", "eval_logps/chosen"):
        assert metrics[1][key] == pytest.approx(metrics[0][key], rel=1e-4, abs=1e-5), key


def test_precomputed_reference_column_is_the_same_packed(tokenizer, tmp_path):
    data = datasets.Dataset.from_list(ranked_rows(6, k=4, seed=9, variable_k=True))
    columns = []
    for sharing in (False, True):
        trainer = PLDPOTrainer(make_model(tokenizer), args=_trainer_args(tmp_path, prefix_sharing=sharing,
                                                                         precompute_ref_log_probs=True),
                               train_dataset=data, processing_class=tokenizer)
        columns.append(trainer.train_dataset["ref_logps"])
    for plain, packed in zip(*columns):
        assert packed == pytest.approx(plain, rel=1e-5, abs=1e-4)


def test_unsupported_model_falls_back_with_one_warning(tokenizer, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(prefix_sharing, "VERIFIED_MODEL_TYPES", frozenset({"llama"}))
    data = datasets.Dataset.from_list(ranked_rows(4, k=3, seed=8))
    with caplog.at_level(logging.WARNING, logger="dpo_ext.modeling.support"):
        trainer = PLDPOTrainer(make_model(tokenizer), args=_trainer_args(tmp_path, prefix_sharing=True, max_steps=1),
                               train_dataset=data, processing_class=tokenizer, peft_config=LoraConfig(**LORA))
        trainer.train()
    warnings = [r for r in caplog.records if r.name == "dpo_ext.modeling.support"]
    assert len(warnings) == 1 and "model type 'gpt2'" in warnings[0].getMessage()
    assert type(trainer.data_collator) is RankedCollator


def test_support_is_decided_by_model_type_attention_and_window(tokenizer):
    model = make_model(tokenizer)
    assert prefix_sharing_unsupported(model) is None
    assert prefix_sharing_unsupported(get_peft_model(make_model(tokenizer), LoraConfig(**LORA))) is None
    model.config._attn_implementation = "flash_attention_2"
    assert "flash_attention_2" in prefix_sharing_unsupported(model)
    model.config._attn_implementation = "eager"
    model.config.sliding_window = 16
    assert "sliding window" in prefix_sharing_unsupported(model, max_length=32)
    assert prefix_sharing_unsupported(model, max_length=16) is None
    plain = RankedCollator(pad_token_id=0, max_length=32)
    assert choose_collator(plain, [make_model(tokenizer), None], prefix_sharing=False) is plain
    assert isinstance(choose_collator(plain, [make_model(tokenizer), None], True), PackedRankedCollator)
    assert choose_collator(plain, [make_model(tokenizer), model], True) is plain  # the ref model decides too


@pytest.mark.parametrize("model_type", sorted(prefix_sharing.VERIFIED_MODEL_TYPES))
def test_every_verified_model_type_matches(model_type):
    """Builds a 2-layer model of each listed type from its config; the reason a type may be listed."""
    from transformers import AutoConfig, AutoModelForCausalLM

    examples = _examples(seed=9)
    plain, packed = _both(examples)
    sizes = dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=64, n_embd=32, n_layer=2, n_head=4, max_position_embeddings=64, n_positions=64,
                 head_dim=8, pad_token_id=0, bos_token_id=1, eos_token_id=1)
    for attention in ("eager", "sdpa"):
        torch.manual_seed(0)
        config = AutoConfig.for_model(model_type, **sizes)
        try:
            model = AutoModelForCausalLM.from_config(config, attn_implementation=attention).eval()
        except ValueError:  # this architecture has no sdpa implementation
            continue
        with torch.no_grad():
            torch.testing.assert_close(completion_logps(model, packed), completion_logps(model, plain),
                                       rtol=1e-5, atol=2e-5)


def _with_sliding(model, window=None, layer_types=False):
    model.config.sliding_window = window
    if layer_types:  # Gemma-2 style: the window applies to the layers marked "sliding_attention"
        model.config.layer_types = ["sliding_attention", "full_attention"] * (model.config.n_layer // 2)
    return model


@pytest.mark.parametrize("case, max_length, supported", [
    ("plain", None, True),
    ("type outside the allowlist", 32, False),
    ("sliding window", 32, False),  # a row could be longer than the window
    ("sliding window", 16, True),  # no row is longer than the window
    ("sliding window", None, False),  # row lengths unknown
    ("layer_types", 32, False),
    ("layer_types", 16, True),
    ("layer_types without a window size", 16, False),
])
def test_trainer_and_scorer_get_the_same_answer(tokenizer, monkeypatch, caplog, case, max_length, supported):
    """The one support check decides both the trainer's packed rows and the scorer's prompt-cache reuse."""
    from dpo_ext.scoring.scorer import ImplicitRewardScorer

    if case == "type outside the allowlist":
        monkeypatch.setattr(prefix_sharing, "VERIFIED_MODEL_TYPES", frozenset({"llama"}))
    model = make_model(tokenizer)
    if case != "plain" and "allowlist" not in case:
        _with_sliding(model, None if "without" in case else 16, layer_types=case.startswith("layer_types"))
    reason = prefix_sharing_unsupported(model, max_length)
    assert (reason is None) == supported, reason
    collator = choose_collator(RankedCollator(pad_token_id=0, max_length=max_length), [model], prefix_sharing=True)
    assert isinstance(collator, PackedRankedCollator) == supported
    scorer = ImplicitRewardScorer(model, tokenizer, max_length=max_length)
    with caplog.at_level(logging.WARNING, logger="dpo_ext.scoring"):
        scorer.score(["the movie was"], [[" good", " bad plot"]], reference_free=True)
    warnings = [r.getMessage() for r in caplog.records if r.name.startswith("dpo_ext.scoring")]
    assert (not warnings) == supported, warnings
    if not supported:
        assert reason in warnings[0]


def test_prompt_cache_refused_under_gradient_checkpointing_in_training(tokenizer):
    """transformers drops the KV cache there with only a log line: prompt reuse must refuse, not score without it."""
    model = make_model(tokenizer)
    model.gradient_checkpointing_enable()
    groups = [Group([5, 6, 7], [[8, 9], [10]], [0, 1])]
    model.train()
    assert "gradient checkpointing" in prompt_cache_problem(Runner(model, 0), groups)
    model.eval()  # the scorer always scores in eval mode, where the cache is kept
    assert prompt_cache_problem(Runner(model, 0), groups) is None
