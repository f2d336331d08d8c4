"""PLDPOTrainer: trains on ranked data, and gives trl.DPOTrainer's loss on the same pairwise data."""

import math

import datasets
import pytest
import torch
from fixtures import make_model, pairwise_rows, ranked_rows, train_settings
from peft import LoraConfig

from dpo_ext import PLDPOConfig, PLDPOTrainer

LORA = dict(r=8, lora_alpha=16, target_modules=["c_attn", "c_proj"], lora_dropout=0.0, task_type="CAUSAL_LM")


def _config(tmp_path, **overrides):
    return train_settings(tmp_path, **{**dict(per_device_train_batch_size=4, per_device_eval_batch_size=4,
                                              learning_rate=5e-3, num_train_epochs=1, max_length=32, seed=0,
                                              beta=0.1), **overrides})


def _trl_config(tmp_path, **overrides):
    from trl import DPOConfig

    return DPOConfig(**_config(tmp_path, **overrides), bf16=False, gradient_checkpointing=False, loss_type=["sigmoid"])


def test_loss_starts_at_log_k_factorial_and_goes_down(tokenizer, tmp_path):
    train = datasets.Dataset.from_list(ranked_rows(16, k=4, seed=0))
    args = PLDPOConfig(**_config(tmp_path, num_train_epochs=8, beta=1.0, learning_rate=1e-2))
    trainer = PLDPOTrainer(make_model(tokenizer), args=args, train_dataset=train, eval_dataset=train,
                           processing_class=tokenizer, peft_config=LoraConfig(**LORA))
    assert trainer.reference.name == "disabled_adapters"
    before = trainer.evaluate()
    assert before["eval_loss"] == pytest.approx(math.log(24), abs=1e-5)  # fresh LoRA: policy == reference
    trainer.train()
    after = trainer.evaluate()
    assert after["eval_loss"] < before["eval_loss"] - 0.5
    assert after["eval_rewards/pairwise_accuracy"] > 0.8
    assert after["eval_rewards/kendall_tau"] > 0.6


def test_variable_k_and_ties_train(tokenizer, tmp_path):
    rows = ranked_rows(12, k=4, seed=3, variable_k=True)
    rows[0]["ranks"] = [0] + [1] * (len(rows[0]["ranks"]) - 1)  # a top-1 partial ranking
    assert len({len(r["ranks"]) for r in rows}) > 1
    data = datasets.Dataset.from_list(rows)
    args = PLDPOConfig(**_config(tmp_path, num_train_epochs=4, beta=1.0, learning_rate=1e-2))
    trainer = PLDPOTrainer(make_model(tokenizer), args=args, train_dataset=data, eval_dataset=data,
                           processing_class=tokenizer, peft_config=LoraConfig(**LORA))
    # Fresh LoRA, every reward 0: a full ranking of K costs log K!, the top-1 partial ranking log K (only the best
    # group is placed, among K; the tied rest can only come last). Eval batches are equal-sized, so the mean of
    # batch means is the mean over lists.
    expected = [math.log(len(r["ranks"])) if i == 0 else math.lgamma(len(r["ranks"]) + 1) for i, r in enumerate(rows)]
    before = trainer.evaluate()
    assert before["eval_loss"] == pytest.approx(sum(expected) / len(expected), abs=1e-5)
    trainer.train()
    assert trainer.evaluate()["eval_loss"] < before["eval_loss"] - 0.3  # "good"-rich completions learned as better


def test_same_loss_and_metrics_as_trl_with_a_reference_model(tokenizer, tmp_path):
    """A policy and a different reference model: both trainers must report the same DPO loss and rewards."""
    from trl import DPOTrainer

    data = datasets.Dataset.from_list(pairwise_rows(12, seed=1))
    ours = PLDPOTrainer(make_model(tokenizer, seed=1), ref_model=make_model(tokenizer, seed=2),
                        args=PLDPOConfig(**_config(tmp_path)), train_dataset=data, eval_dataset=data,
                        processing_class=tokenizer)
    theirs = DPOTrainer(make_model(tokenizer, seed=1), ref_model=make_model(tokenizer, seed=2),
                        args=_trl_config(tmp_path), train_dataset=data, eval_dataset=data,
                        processing_class=tokenizer)
    ours_metrics, trl_metrics = ours.evaluate(), theirs.evaluate()
    assert abs(ours_metrics["eval_loss"] - math.log(2)) > 0.01  # the comparison is not the trivial one
    for key in ("eval_loss", "eval_rewards/chosen", "eval_rewards/rejected", "eval_rewards/margins",
                "eval_rewards/accuracies", "eval_logps/chosen", "eval_logps/rejected"):
        assert ours_metrics[key] == pytest.approx(trl_metrics[key], rel=1e-4, abs=1e-5), key


def test_same_training_trajectory_as_trl_with_lora(tokenizer, tmp_path):
    """Same seed, data order, LoRA init and optimizer: the per-step DPO losses must agree step by step."""
    from trl import DPOTrainer

    data = datasets.Dataset.from_list(pairwise_rows(16, seed=2))
    ours = PLDPOTrainer(make_model(tokenizer), args=PLDPOConfig(**_config(tmp_path, num_train_epochs=2)),
                        train_dataset=data, processing_class=tokenizer, peft_config=LoraConfig(**LORA))
    theirs = DPOTrainer(make_model(tokenizer), args=_trl_config(tmp_path, num_train_epochs=2),
                        train_dataset=data, processing_class=tokenizer, peft_config=LoraConfig(**LORA))
    ours.train()
    theirs.train()
    ours_losses = [h["loss"] for h in ours.state.log_history if "loss" in h]
    trl_losses = [h["loss"] for h in theirs.state.log_history if "loss" in h]
    assert len(ours_losses) == len(trl_losses) == 8
    assert ours_losses[0] == pytest.approx(math.log(2), abs=1e-6)
    assert ours_losses[-1] < ours_losses[0] - 0.01  # training moved the policy
    assert ours_losses == pytest.approx(trl_losses, rel=1e-4, abs=1e-5)


@pytest.mark.parametrize("loss_type", ["preferred_ft", "unlikelihood"])
def test_baseline_losses_train(tokenizer, tmp_path, loss_type):
    train = datasets.Dataset.from_list(ranked_rows(8, k=3, seed=4))
    trainer = PLDPOTrainer(make_model(tokenizer), args=PLDPOConfig(**_config(tmp_path, loss_type=loss_type,
                                                                                num_train_epochs=4)),
                           train_dataset=train, processing_class=tokenizer, peft_config=LoraConfig(**LORA))
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert losses[-1] < losses[0]


def test_saves_only_the_trained_adapter(tokenizer, tmp_path):
    train = datasets.Dataset.from_list(ranked_rows(4, k=3))
    trainer = PLDPOTrainer(make_model(tokenizer), args=PLDPOConfig(**_config(tmp_path, max_steps=1)),
                           train_dataset=train, processing_class=tokenizer, peft_config=LoraConfig(**LORA))
    trainer.train()
    trainer.save_model(str(tmp_path / "adapter"))
    names = {p.name for p in (tmp_path / "adapter").iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json"} <= names
    assert not any(n.endswith(".bin") and n != "training_args.bin" for n in names)
    # the weights saved are the trained ones: LoRA's B matrices start at 0 and one step moved them
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
    current = {n.replace(".default", ""): p for n, p in trainer.model.named_parameters() if "lora_" in n}
    assert saved.keys() == current.keys()
    for name, value in saved.items():
        torch.testing.assert_close(value, current[name].detach(), msg=name)
    assert all(bool(value.abs().max() > 0) for name, value in saved.items() if "lora_B" in name)


def test_config_rejects_bad_values(tmp_path):
    with pytest.raises(ValueError, match="loss_type"):
        PLDPOConfig(output_dir=str(tmp_path), loss_type="ipo")
    with pytest.raises(ValueError, match="beta"):
        PLDPOConfig(output_dir=str(tmp_path), beta=0)


def test_a_non_finite_loss_stops_training_naming_the_step_and_rows(tokenizer, tmp_path):
    """transformers logs a NaN loss as a normal number while the weights turn to NaN: the trainer must stop first."""
    from dpo_ext.training.trainer import NonFiniteLossError

    model = make_model(tokenizer)
    trainer = PLDPOTrainer(model, args=PLDPOConfig(**_config(tmp_path, per_device_train_batch_size=2)),
                           train_dataset=datasets.Dataset.from_list(pairwise_rows(4)), processing_class=tokenizer,
                           peft_config=LoraConfig(**LORA))
    with torch.no_grad():  # "good" is in every chosen completion: any batch scores it
        trainer.model.get_base_model().transformer.wte.weight[tokenizer.convert_tokens_to_ids("good")] = math.nan
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at training step 1 \(dataset rows \d+, \d+\)"):
        trainer.train()
    lora = [p for name, p in trainer.model.named_parameters() if "lora_" in name]
    assert lora and all(bool(torch.isfinite(p).all()) for p in lora)  # the bad step never reached the optimizer


def test_settings_read_as_text_from_yaml_are_numbers(tmp_path):
    import yaml

    settings = yaml.safe_load("beta: 1e-1\nlearning_rate: 5e-7\nmax_length: 128\n")
    assert settings["beta"] == "1e-1"  # YAML 1.1: no dot, so text
    config = PLDPOConfig(output_dir=str(tmp_path), report_to="none", **settings)
    assert (config.beta, config.learning_rate, config.max_length) == (0.1, 5e-7, 128)


def test_evaluate_takes_raw_preference_rows(tokenizer, tmp_path):
    trainer = PLDPOTrainer(make_model(tokenizer), args=PLDPOConfig(**_config(tmp_path)),
                           train_dataset=datasets.Dataset.from_list(ranked_rows(4, k=3)), processing_class=tokenizer,
                           peft_config=LoraConfig(**LORA))
    metrics = trainer.evaluate(datasets.Dataset.from_list(ranked_rows(4, k=3, seed=1)))
    assert metrics["eval_loss"] == pytest.approx(math.log(6), abs=1e-5)  # fresh LoRA: log 3!
    as_list = trainer.evaluate(pairwise_rows(4))
    assert as_list["eval_loss"] == pytest.approx(math.log(2), abs=1e-5)


def test_max_prompt_length_reaches_the_prepared_rows_and_the_reference_fingerprint(tokenizer, tmp_path):
    """Prompt ids 11..20 with a 3-id completion, max_length 8, max_prompt_length 4: the trainer keeps 17..20 (the
    paper's left cut, done once when the rows are prepared), and its reference fingerprint records the setting."""
    rows = [{"prompt_ids": list(range(11, 21)), "completion_ids": [[1, 2, 3], [4]], "ranks": [0, 1]}]
    args = PLDPOConfig(**_config(tmp_path, max_length=8, max_prompt_length=4))
    trainer = PLDPOTrainer(make_model(tokenizer), args=args, train_dataset=rows, eval_dataset=rows,
                           processing_class=tokenizer, peft_config=LoraConfig(**LORA))
    assert trainer.train_dataset["prompt_ids"] == [[17, 18, 19, 20]]
    assert trainer.eval_dataset["prompt_ids"] == [[17, 18, 19, 20]]
    assert trainer.reference_fingerprint["max_prompt_length"] == "4"
