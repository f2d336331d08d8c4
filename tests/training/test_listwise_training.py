"""The listwise losses in training: all-pairs DPO is trl.DPOTrainer on the expanded pairs, and LiPO-lambda gets the
rows' label values unchanged, from the dataset through both collators to the loss."""

import itertools
import math
import random

import datasets
import pytest
import torch
from fixtures import make_model, ranked_rows, train_settings
from peft import LoraConfig

from dpo_ext import PLDPOConfig, PLDPOTrainer
from dpo_ext.data.collate import PackedRankedCollator, RankedCollator
from dpo_ext.data.tokenize import prepare_ranked_dataset
from dpo_ext.data.validation import rows_as_dataset

LORA = dict(r=8, lora_alpha=16, target_modules=["c_attn", "c_proj"], lora_dropout=0.0, task_type="CAUSAL_LM")


def expanded_pairs(rows):
    """One pairwise row per strictly ordered pair of each ranked row, better completion as 'chosen'."""
    pairs = []
    for row in rows:
        for i, j in itertools.permutations(range(len(row["completions"])), 2):
            if row["ranks"][i] < row["ranks"][j]:
                pairs.append({"prompt": row["prompt"], "chosen": row["completions"][i],
                              "rejected": row["completions"][j]})
    return pairs


def scored_rows(n_rows, k, seed):
    """Rows with label values in [0, 1] that follow the 'good' pattern of `ranked_rows`, with ties and gaps."""
    rng = random.Random(seed)
    rows = []
    for row in ranked_rows(n_rows, k=k, seed=seed):
        scores = [round(1 - rank / (k - 1) + rng.choice([0.0, 0.05, 0.1]), 3) for rank in row["ranks"]]
        rows.append({"prompt": row["prompt"], "completions": row["completions"], "scores": scores})
    return rows


def test_all_pairs_trains_exactly_like_trl_on_the_expanded_pairs(tokenizer, tmp_path):
    """8 lists of 3 (3 pairs each) in one batch against TRL's 24 pairs in one batch: the same loss at every step,
    and the same adapter at the end."""
    from trl import DPOConfig, DPOTrainer

    rows = ranked_rows(8, k=3, seed=5)
    settings = dict(learning_rate=5e-3, max_steps=3, max_length=32, seed=0, beta=0.1)
    ours = PLDPOTrainer(make_model(tokenizer), processing_class=tokenizer, peft_config=LoraConfig(**LORA),
                        train_dataset=datasets.Dataset.from_list(rows),
                        args=PLDPOConfig(**train_settings(tmp_path / "ours", loss_type="all_pairs",
                                                          per_device_train_batch_size=8, **settings)))
    theirs = DPOTrainer(make_model(tokenizer), processing_class=tokenizer, peft_config=LoraConfig(**LORA),
                        train_dataset=datasets.Dataset.from_list(expanded_pairs(rows)),
                        args=DPOConfig(**train_settings(tmp_path / "trl", per_device_train_batch_size=24, **settings),
                                       bf16=False, gradient_checkpointing=False, loss_type=["sigmoid"]))
    ours.train()
    theirs.train()
    ours_losses = [h["loss"] for h in ours.state.log_history if "loss" in h]
    trl_losses = [h["loss"] for h in theirs.state.log_history if "loss" in h]
    assert len(ours_losses) == len(trl_losses) == 3
    assert ours_losses[0] == pytest.approx(math.log(2), abs=1e-6)  # fresh LoRA: every margin 0
    assert ours_losses[-1] < ours_losses[0] - 0.01
    assert ours_losses == pytest.approx(trl_losses, rel=1e-4, abs=1e-6)
    trained = {n: p for n, p in ours.model.named_parameters() if "lora_" in n}
    for name, param in theirs.model.named_parameters():
        if "lora_" in name:
            torch.testing.assert_close(trained[name], param, rtol=1e-4, atol=2e-5)  # Adam on float-noise grads


def test_scores_travel_unchanged_from_the_dataset_through_both_collators(tokenizer):
    rows = scored_rows(3, k=3, seed=1) + [ranked_rows(1, k=4, seed=2)[0]]  # a ranked row in the same batch
    prepared = prepare_ranked_dataset(rows_as_dataset(rows), tokenizer, max_length=64)
    examples = [prepared[i] for i in range(len(prepared))]
    for collator in (RankedCollator(tokenizer.pad_token_id, 64), PackedRankedCollator(tokenizer.pad_token_id, 64)):
        grid = collator(examples)["scores"]
        assert grid.dtype == torch.float64 and grid.shape == (4, 4)
        for b, row in enumerate(rows[:3]):
            assert grid[b, :3].tolist() == row["scores"] and grid[b, 3] == 0
        # the ranked row's labels: the fraction of the others it beats (rank r of 4: (3 - r) / 3)
        assert grid[3].tolist() == [(3 - r) / 3 for r in rows[3]["ranks"]]


def test_lipo_lambda_gets_the_label_values_and_trains(tokenizer, tmp_path, monkeypatch):
    import dpo_ext.training.trainer as trainer_module

    rows = scored_rows(12, k=4, seed=3)
    seen = []

    def recording(policy, ref, beta, ranks, labels):
        seen.append(labels.detach().clone())
        return original(policy, ref, beta, ranks, labels)

    original = trainer_module.lipo_lambda_loss
    monkeypatch.setattr(trainer_module, "lipo_lambda_loss", recording)
    data = datasets.Dataset.from_list(rows)
    args = PLDPOConfig(**train_settings(tmp_path, loss_type="lipo_lambda", per_device_train_batch_size=4,
                                        per_device_eval_batch_size=4, learning_rate=1e-2, num_train_epochs=6,
                                        max_length=32, seed=0, beta=1.0))
    trainer = PLDPOTrainer(make_model(tokenizer), args=args, train_dataset=data, eval_dataset=data,
                           processing_class=tokenizer, peft_config=LoraConfig(**LORA))
    before = trainer.evaluate()
    assert torch.cat(seen).tolist() == [row["scores"] for row in rows]  # evaluation keeps the dataset's order
    trainer.train()
    after = trainer.evaluate()
    assert after["eval_loss"] < before["eval_loss"] * 0.7
    assert after["eval_rewards/pairwise_accuracy"] > 0.8
