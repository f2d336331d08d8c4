"""Reference sources: disabled adapters when exact, a frozen copy or a refusal when not, never silently wrong."""

import logging

import datasets
import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model

from fixtures import make_model, ranked_rows
from dpo_ext import PLDPOConfig, PLDPOTrainer, ReferenceError
from dpo_ext.data.collate import RankedCollator
from dpo_ext.data.tokenize import prepare_ranked_dataset
from dpo_ext.modeling.batches import completion_logps

LORA = dict(r=4, target_modules=["c_attn"], lora_dropout=0.0, task_type="CAUSAL_LM")


def _args(tmp_path, **overrides):
    values = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, learning_rate=1e-2,
                  report_to="none", use_cpu=True, max_length=32, save_strategy="no", max_steps=2, logging_steps=1)
    values.update(overrides)
    return PLDPOConfig(**values)


def _data():
    return datasets.Dataset.from_list(ranked_rows(8, k=3, seed=5))


def _trained_adapter(tokenizer, tmp_path, **lora_overrides):
    """A saved adapter whose weights are not zero: loading it gives a policy that is not the base model."""
    model = get_peft_model(make_model(tokenizer), LoraConfig(**{**LORA, **lora_overrides}))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    path = tmp_path / "adapter"
    model.save_pretrained(str(path))
    return path


def _logps(model, tokenizer, adapter_disabled=False):
    batch = RankedCollator(tokenizer.pad_token_id)(list(prepare_ranked_dataset(_data(), tokenizer)))
    model.eval()
    with torch.no_grad():
        if adapter_disabled:
            with model.disable_adapter():
                return completion_logps(model, batch)
        return completion_logps(model, batch)


def test_fresh_lora_uses_disabled_adapters(tokenizer, tmp_path):
    trainer = PLDPOTrainer(make_model(tokenizer), args=_args(tmp_path), train_dataset=_data(),
                           processing_class=tokenizer, peft_config=LoraConfig(**LORA))
    assert trainer.reference.name == "disabled_adapters"
    assert "ref" not in trainer.model.peft_config  # no second copy of anything


def test_loaded_trained_adapter_gets_a_frozen_copy_that_equals_the_start(tokenizer, tmp_path, caplog):
    path = _trained_adapter(tokenizer, tmp_path)
    policy = PeftModel.from_pretrained(make_model(tokenizer), str(path), is_trainable=True)
    start = _logps(policy, tokenizer)
    assert (start - _logps(policy, tokenizer, adapter_disabled=True)).abs().max() > 1e-2  # would be wrong
    with caplog.at_level(logging.WARNING, logger="dpo_ext.reference"):
        trainer = PLDPOTrainer(policy, args=_args(tmp_path), train_dataset=_data(), processing_class=tokenizer)
    assert trainer.reference.name == "adapter_copy"
    assert "differ from the policy's" in caplog.text
    trainer.train()
    batch = RankedCollator(tokenizer.pad_token_id)(list(prepare_ranked_dataset(_data(), tokenizer)))
    ref_now = trainer.reference.logps(trainer.model, batch)
    torch.testing.assert_close(ref_now, start, rtol=1e-5, atol=1e-5)  # the reference did not move
    moved = _logps(trainer.model, tokenizer)
    assert (moved - start).abs().max() > 1e-3  # while the policy did
    assert not any(p.requires_grad for n, p in trainer.model.named_parameters() if ".ref." in n)
    trainer.save_model(str(tmp_path / "saved"))
    assert not (tmp_path / "saved" / "ref").exists()  # only the trained adapter is saved
    # ...so a scorer must not assume "base model = reference" for it: it refuses, or takes the starting adapter
    from dpo_ext import ImplicitRewardScorer

    with pytest.raises(ValueError, match="reference='adapter_copy'"):
        ImplicitRewardScorer.from_pretrained(str(tmp_path / "saved"), base_model=make_model(tokenizer),
                                             tokenizer=tokenizer)
    scorer = ImplicitRewardScorer.from_pretrained(str(tmp_path / "saved"), base_model=make_model(tokenizer),
                                                  tokenizer=tokenizer, ref_adapter=str(path), device="cpu")
    rows = _data()
    result = scorer.score([r["prompt"] for r in rows], [r["completions"] for r in rows])
    torch.testing.assert_close(result.ref_logps.flatten(), start, rtol=1e-4, atol=1e-4)


def test_disabled_adapters_requested_for_a_trained_adapter_is_refused(tokenizer, tmp_path):
    path = _trained_adapter(tokenizer, tmp_path)
    policy = PeftModel.from_pretrained(make_model(tokenizer), str(path), is_trainable=True)
    with pytest.raises(ReferenceError, match="would not be the starting policy.*differ"):
        PLDPOTrainer(policy, args=_args(tmp_path, reference="disabled_adapters"), train_dataset=_data(),
                     processing_class=tokenizer)


def test_nonzero_init_is_detected_from_the_config(tokenizer, tmp_path):
    trainer = PLDPOTrainer(make_model(tokenizer), args=_args(tmp_path), train_dataset=_data(),
                           processing_class=tokenizer, peft_config=LoraConfig(**LORA, init_lora_weights=False))
    assert trainer.reference.name == "adapter_copy"


def test_trained_bias_is_refused_unless_precomputed(tokenizer, tmp_path):
    with pytest.raises(ReferenceError, match="bias='all'.*precompute_ref_log_probs=True"):
        PLDPOTrainer(make_model(tokenizer), args=_args(tmp_path), train_dataset=_data(), processing_class=tokenizer,
                     peft_config=LoraConfig(**LORA, bias="all"))
    start = _logps(get_peft_model(make_model(tokenizer), LoraConfig(**LORA, bias="all")), tokenizer)
    trainer = PLDPOTrainer(make_model(tokenizer), args=_args(tmp_path, precompute_ref_log_probs=True),
                           train_dataset=_data(), processing_class=tokenizer,
                           peft_config=LoraConfig(**LORA, bias="all"))
    assert trainer.reference.name == "initial_policy"
    ref = torch.tensor([x for row in trainer.train_dataset["ref_logps"] for x in row])
    torch.testing.assert_close(ref, start, rtol=1e-5, atol=1e-5)
    trainer.train()  # reads the column; the moving biases never touch the reference


def test_precomputed_reference_matches_live_reference(tokenizer, tmp_path):
    live = PLDPOTrainer(make_model(tokenizer), args=_args(tmp_path), train_dataset=_data(),
                        processing_class=tokenizer, peft_config=LoraConfig(**LORA))
    pre = PLDPOTrainer(make_model(tokenizer), args=_args(tmp_path, precompute_ref_log_probs=True),
                       train_dataset=_data(), processing_class=tokenizer, peft_config=LoraConfig(**LORA))
    assert pre.reference.name == "disabled_adapters"
    live.train()
    pre.train()
    live_losses = [h["loss"] for h in live.state.log_history if "loss" in h]
    pre_losses = [h["loss"] for h in pre.state.log_history if "loss" in h]
    assert live_losses == pytest.approx(pre_losses, rel=1e-5)


def test_full_model_without_reference_is_refused(tokenizer, tmp_path):
    with pytest.raises(ReferenceError, match="ref_model"):
        PLDPOTrainer(make_model(tokenizer), args=_args(tmp_path), train_dataset=_data(), processing_class=tokenizer)


def test_explicit_reference_model(tokenizer, tmp_path):
    trainer = PLDPOTrainer(make_model(tokenizer), ref_model=make_model(tokenizer, seed=3), args=_args(tmp_path),
                           train_dataset=_data(), processing_class=tokenizer)
    assert trainer.reference.name == "ref_model"
    assert not any(p.requires_grad for p in trainer.reference.ref_model.parameters())
    trainer.train()
