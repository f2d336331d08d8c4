"""Reference sources: disabled adapters when exact, a frozen copy or a refusal when not, never silently wrong."""

import json
import logging
import math
import warnings

import datasets
import pytest
import torch
from fixtures import make_model, ranked_rows, train_settings
from peft import LoraConfig, PeftModel, get_peft_model

from dpo_ext import PLDPOConfig, PLDPOTrainer, ReferenceMismatchError
from dpo_ext.data.collate import RankedCollator
from dpo_ext.data.tokenize import prepare_ranked_dataset
from dpo_ext.modeling.batches import completion_logps
from dpo_ext.reference import (
    AdapterCopyReference,
    DisabledAdapterReference,
    InitialPolicyReference,
    ModelReference,
    PrecomputedReference,
)

LORA = dict(r=4, target_modules=["c_attn"], lora_dropout=0.0, task_type="CAUSAL_LM")


def _args(tmp_path, **overrides):
    return PLDPOConfig(**train_settings(tmp_path, **{**dict(per_device_train_batch_size=4, learning_rate=1e-2,
                                                            max_length=32, max_steps=2), **overrides}))


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
    ref_now = trainer.reference.ref_logps(trainer.model, batch)  # (B, K): every row has K = 3 completions
    torch.testing.assert_close(ref_now.flatten(), start, rtol=1e-5, atol=1e-5)  # the reference did not move
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
    with pytest.raises(ReferenceMismatchError, match="would not be the starting policy.*differ"):
        PLDPOTrainer(policy, args=_args(tmp_path, reference="disabled_adapters"), train_dataset=_data(),
                     processing_class=tokenizer)


def test_base_model_reference_keeps_the_base_for_a_loaded_trained_adapter(tokenizer, tmp_path):
    """reference='base_model' is asked for by name (later on-policy rounds): the base, though the adapter is trained;
    the record then says disabled_adapters, so a scorer scores the saved adapter against the base."""
    path = _trained_adapter(tokenizer, tmp_path)
    policy = PeftModel.from_pretrained(make_model(tokenizer), str(path), is_trainable=True)
    base = _logps(policy, tokenizer, adapter_disabled=True)
    trainer = PLDPOTrainer(policy, args=_args(tmp_path, reference="base_model"), train_dataset=_data(),
                           processing_class=tokenizer)
    assert trainer.reference.name == "disabled_adapters"
    trainer.train()
    batch = RankedCollator(tokenizer.pad_token_id)(list(prepare_ranked_dataset(_data(), tokenizer)))
    torch.testing.assert_close(trainer.reference.ref_logps(trainer.model, batch).flatten(), base)
    trainer.save_model(str(tmp_path / "saved"))
    assert json.loads((tmp_path / "saved" / "dpo_ext_reference.json").read_text())["reference"] == "disabled_adapters"
    with pytest.raises(ReferenceMismatchError, match="bias='all'"):
        PLDPOTrainer(make_model(tokenizer), args=_args(tmp_path, reference="base_model"), train_dataset=_data(),
                     processing_class=tokenizer, peft_config=LoraConfig(**LORA, bias="all"))


def test_nonzero_init_is_detected_from_the_config(tokenizer, tmp_path):
    trainer = PLDPOTrainer(make_model(tokenizer), args=_args(tmp_path), train_dataset=_data(),
                           processing_class=tokenizer, peft_config=LoraConfig(**LORA, init_lora_weights=False))
    assert trainer.reference.name == "adapter_copy"


def test_trained_bias_is_refused_unless_precomputed(tokenizer, tmp_path):
    with pytest.raises(ReferenceMismatchError, match="bias='all'.*precompute_ref_log_probs=True"):
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
    with pytest.raises(ReferenceMismatchError, match="ref_model"):
        PLDPOTrainer(make_model(tokenizer), args=_args(tmp_path), train_dataset=_data(), processing_class=tokenizer)


def test_explicit_reference_model(tokenizer, tmp_path):
    trainer = PLDPOTrainer(make_model(tokenizer), ref_model=make_model(tokenizer, seed=3), args=_args(tmp_path),
                           train_dataset=_data(), processing_class=tokenizer)
    assert trainer.reference.name == "ref_model"
    assert not any(p.requires_grad for p in trainer.reference.ref_model.parameters())
    trainer.train()


def _grid_by_hand(row_values, ranks):
    """Row values (N,) laid out as (B, K) slots: list b's completions fill slots 0..K_b - 1, in order."""
    grid, rows = torch.zeros(ranks.shape), iter(row_values.tolist())
    for b in range(ranks.shape[0]):
        for k in range(int((ranks[b] >= 0).sum())):
            grid[b, k] = next(rows)
    return grid


def test_every_source_gives_a_b_by_k_grid_laid_out_like_the_ranks(tokenizer):
    """Lists of 2 to 4 completions: each source's (B, K) values are its per-completion log-probs, slot by slot."""
    rows = datasets.Dataset.from_list(ranked_rows(6, k=4, seed=2, variable_k=True))
    batch = RankedCollator(tokenizer.pad_token_id)(list(prepare_ranked_dataset(rows, tokenizer)))
    assert (batch["ranks"] < 0).any()  # some lists are shorter than K_max: their last slots hold nothing
    policy = get_peft_model(make_model(tokenizer), LoraConfig(**LORA)).eval()
    other = make_model(tokenizer, seed=3).eval()
    with torch.no_grad():
        base = completion_logps(policy.get_base_model(), batch)
        expected = {"policy": _grid_by_hand(base, batch["ranks"]),
                    "other": _grid_by_hand(completion_logps(other, batch), batch["ranks"])}
    sources = [(DisabledAdapterReference(unwrap=lambda m: m), "policy"), (InitialPolicyReference(), "policy"),
               (AdapterCopyReference(policy, unwrap=lambda m: m), "policy"), (ModelReference(other), "other")]
    for source, which in sources:
        grid = source.ref_logps(policy, batch)
        assert grid.shape == batch["ranks"].shape and not grid.requires_grad, source.name
        torch.testing.assert_close(grid, expected[which], rtol=1e-5, atol=1e-5, msg=source.name)
    assert sources[2][0].saved_adapters == ["default"] and sources[0][0].saved_adapters is None
    assert [s.before_training_only for s, _ in sources] == [False, True, False, False]


def test_precomputed_reference_reads_the_column_and_falls_back_only_when_valid(tokenizer):
    rows = datasets.Dataset.from_list(ranked_rows(4, k=3, seed=1))
    batch = RankedCollator(tokenizer.pad_token_id)(list(prepare_ranked_dataset(rows, tokenizer)))
    model = make_model(tokenizer).eval()
    live = PrecomputedReference(InitialPolicyReference()).column(model, [batch])
    assert [len(r) for r in live] == [3, 3, 3, 3]
    with torch.no_grad():
        torch.testing.assert_close(torch.tensor(live).flatten(), completion_logps(model, batch))

    given = torch.arange(12.0).view(4, 3)  # any values: the column is read, never recomputed
    for source in (InitialPolicyReference(), DisabledAdapterReference(unwrap=lambda m: m)):
        assert torch.equal(PrecomputedReference(source).ref_logps(model, {**batch, "ref_logps": given}), given)
    with pytest.raises(ValueError, match="no 'ref_logps' column.*only exists before training"):
        PrecomputedReference(InitialPolicyReference()).ref_logps(model, batch)
    other = make_model(tokenizer, seed=3).eval()
    fallback = PrecomputedReference(ModelReference(other)).ref_logps(model, batch)  # still valid after the start
    torch.testing.assert_close(fallback.flatten(), completion_logps(other, batch))


def test_a_dataset_with_a_ref_logps_column_is_read_not_recomputed(tokenizer, tmp_path):
    """Trained biases need a precomputed reference: a given column is enough, and its values are the ones used."""
    policy = get_peft_model(make_model(tokenizer), LoraConfig(**LORA, bias="all"))
    start = _logps(policy, tokenizer).view(-1, 3).tolist()  # fresh adapter: the starting policy's log-probs
    rows = [{**row, "ref_logps": values} for row, values in zip(ranked_rows(8, k=3, seed=5), start)]
    trainer = PLDPOTrainer(make_model(tokenizer), args=_args(tmp_path), train_dataset=datasets.Dataset.from_list(rows),
                           processing_class=tokenizer, peft_config=LoraConfig(**LORA, bias="all"))
    assert isinstance(trainer.reference, PrecomputedReference) and trainer.reference.name == "initial_policy"
    # policy == the column's reference, completion by completion: the loss of every list is log 3!
    assert trainer.evaluate(datasets.Dataset.from_list(rows))["eval_loss"] == pytest.approx(math.log(6), abs=1e-5)
    swapped = [{**row, "ref_logps": row["ref_logps"][::-1]} for row in rows]
    assert trainer.evaluate(datasets.Dataset.from_list(swapped))["eval_loss"] != pytest.approx(math.log(6), abs=1e-3)
    with pytest.raises(ValueError, match="only exists before training"):
        trainer.evaluate(_data())


def test_reference_error_is_a_deprecated_alias():
    import dpo_ext

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new name is not deprecated
        assert issubclass(dpo_ext.ReferenceMismatchError, ValueError)
    with pytest.warns(DeprecationWarning, match="use dpo_ext.ReferenceMismatchError"):
        from dpo_ext import ReferenceError as old
    assert old is ReferenceMismatchError
    assert "ReferenceError" not in dpo_ext.__all__  # `from dpo_ext import *` neither warns nor shadows the builtin


# -- the training record -------------------------------------------------------------------------------------------

def test_training_record_written_and_read_in_one_place(tmp_path):
    from dpo_ext.reference.record import RECORD_FILE, choose_beta, read_training_record, write_training_record

    write_training_record(tmp_path, reference="adapter_copy", beta=0.25, loss_type="plackett_luce",
                          reference_fingerprint={"weights": "abc"}, training_config={"beta": 0.25, "seed": 3})
    record = read_training_record(tmp_path)
    assert (record.reference, record.beta, record.loss_type) == ("adapter_copy", 0.25, "plackett_luce")
    assert record.reference_fingerprint == {"weights": "abc"} and record.path == str(tmp_path / RECORD_FILE)
    assert json.loads((tmp_path / "training_config.json").read_text()) == {"beta": 0.25, "seed": 3}
    assert choose_beta(tmp_path) == (0.25, str(tmp_path / RECORD_FILE))

    old = tmp_path / "old"  # a record written before beta was recorded, next to a TRL-style training config
    old.mkdir()
    (old / RECORD_FILE).write_text(json.dumps({"reference": "disabled_adapters"}))
    (old / "training_config.json").write_text(json.dumps({"beta": 0.2}))
    assert read_training_record(old).beta is None
    assert choose_beta(old) == (0.2, str(old / "training_config.json"))
    assert read_training_record(tmp_path / "nothing_here") is None


@pytest.mark.parametrize("text, fragments", [
    ("{oops", ["not valid JSON"]),
    ("[1, 2]", ["expected a JSON object"]),
    ('{"beta": -0.5}', ["field 'beta'", "greater than 0"]),
    ('{"beta": NaN}', ["field 'beta'", "finite"]),
    ('{"beta": "high"}', ["field 'beta'", "'high'"]),
    ('{"reference": 3}', ["field 'reference'", "expected a string"]),
    ('{"reference_fingerprint": [1]}', ["field 'reference_fingerprint'"]),
])
def test_malformed_training_record_is_named(tmp_path, text, fragments):
    from dpo_ext.reference.record import RECORD_FILE, read_training_record

    (tmp_path / RECORD_FILE).write_text(text)
    with pytest.raises(ValueError) as info:
        read_training_record(tmp_path)
    for fragment in [str(tmp_path / RECORD_FILE), *fragments]:
        assert fragment in str(info.value)


def test_trainer_writes_the_record_the_scorer_reads(tokenizer, tmp_path):
    from dpo_ext.reference.record import read_training_record

    trainer = PLDPOTrainer(make_model(tokenizer), args=_args(tmp_path, beta=0.7), train_dataset=_data(),
                           processing_class=tokenizer, peft_config=LoraConfig(**LORA))
    trainer.save_model(str(tmp_path / "saved"))
    record = read_training_record(tmp_path / "saved")
    assert (record.reference, record.beta, record.loss_type) == ("disabled_adapters", 0.7, "plackett_luce")
    assert set(record.fields) == {"reference", "beta", "loss_type", "reference_fingerprint"}


def test_reference_model_runs_a_block_as_the_reference(tokenizer):
    """`reference_model` is the one definition of each reference: the trainer's `ref_logps` runs through it."""
    model = get_peft_model(make_model(tokenizer), LoraConfig(**LORA))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    base = _logps(model, tokenizer, adapter_disabled=True)
    source = DisabledAdapterReference(lambda m: m)
    with source.reference_model(model) as reference:
        assert reference is model
        assert torch.equal(_logps(reference, tokenizer), base)
    assert not torch.allclose(_logps(model, tokenizer), base)  # the adapter is back on after the block
    other = make_model(tokenizer, seed=3)
    with ModelReference(other, freeze=False).reference_model(model) as reference:
        assert reference is other
    assert any(p.requires_grad for p in other.parameters())  # a scorer's reference model is not frozen
