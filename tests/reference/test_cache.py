"""A reference cache (``ref_cache_dir``): reused when nothing changed, refused after a change to each fingerprinted
input (reference weights, starting adapter, tokenizer, max_length, dataset), naming it."""

import json

import datasets
import pytest
import torch
from peft import LoraConfig, get_peft_model

from fixtures import make_model, ranked_rows, train_settings
from dpo_ext import PLDPOConfig, PLDPOTrainer
from dpo_ext.reference import REFERENCE_RECORD
from dpo_ext.reference.cache import ReferenceCacheMismatchError
from dpo_ext.settings import SettingError

LORA = dict(r=4, target_modules=["c_attn"], lora_dropout=0.0, task_type="CAUSAL_LM")
TRAIN, EVAL = ranked_rows(8, k=3, seed=5), ranked_rows(4, k=3, seed=6)


def trainer(tokenizer, tmp_path, cache, model=None, train=TRAIN, peft_config=LoraConfig(**LORA), **overrides):
    settings = {"per_device_train_batch_size": 4, "max_length": 32, "max_steps": 1, **overrides}
    args = PLDPOConfig(**train_settings(tmp_path, precompute_ref_log_probs=True, ref_cache_dir=str(cache), **settings))
    return PLDPOTrainer(model if model is not None else make_model(tokenizer), args=args,
                        train_dataset=datasets.Dataset.from_list(train), eval_dataset=EVAL,
                        processing_class=tokenizer, peft_config=peft_config)


@pytest.fixture
def cached(tokenizer, tmp_path):
    cache = tmp_path / "ref_cache"
    first = trainer(tokenizer, tmp_path, cache)
    assert sorted(p.name for p in cache.iterdir()) == ["eval.json", "train.json"]
    return cache, first


def test_an_unchanged_run_reuses_the_cache_without_computing(tokenizer, tmp_path, cached, monkeypatch):
    cache, first = cached
    monkeypatch.setattr(PLDPOTrainer, "_compute_ref_logps", lambda *a: pytest.fail("recomputed"))
    second = trainer(tokenizer, tmp_path, cache)
    assert second.train_dataset["ref_logps"] == first.train_dataset["ref_logps"]
    assert second.eval_dataset["ref_logps"] == first.eval_dataset["ref_logps"]
    stored = json.loads((cache / "train.json").read_text())
    assert stored["reference"] == "disabled_adapters" and stored["fingerprint"] == second.reference_fingerprint


def test_the_cached_values_are_the_computed_ones(tokenizer, tmp_path, cached):
    """Written once, read back bit for bit: JSON keeps every float exactly."""
    cache, first = cached
    fresh = trainer(tokenizer, tmp_path, tmp_path / "another_cache")
    assert fresh.train_dataset["ref_logps"] == first.train_dataset["ref_logps"]
    assert json.loads((cache / "train.json").read_text())["ref_logps"] == first.train_dataset["ref_logps"]


def _started_adapter(tokenizer, nudge: float):
    """A PeftModel with a non-zero starting adapter (its reference: a frozen copy of it, part of the fingerprint)."""
    model = get_peft_model(make_model(tokenizer), LoraConfig(**LORA, init_lora_weights=False))
    with torch.no_grad():
        next(p for n, p in model.named_parameters() if "lora_B" in n).add_(nudge)
    return model


@pytest.mark.parametrize("change, part", [
    ("weights", "reference_weights"), ("tokenizer", "tokenizer"), ("max_length", "max_length"),
    ("dataset", "dataset"),
])
def test_a_change_to_any_input_is_refused_naming_it(tokenizer, tmp_path, cached, change, part):
    cache, _ = cached
    kwargs = {}
    if change == "weights":
        kwargs["model"] = make_model(tokenizer, seed=3)
    elif change == "tokenizer":
        changed = tokenizer.__class__(tokenizer_object=tokenizer.backend_tokenizer, **tokenizer.special_tokens_map)
        changed.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
        kwargs["model"], tokenizer = make_model(tokenizer), changed
    elif change == "max_length":
        kwargs["max_length"] = 30
    else:
        kwargs["train"] = TRAIN[:-1]
    with pytest.raises(ReferenceCacheMismatchError, match=f"train.json holds reference log-probs computed for another "
                                                          f"run: changed since then: {part}\\. .*Delete the file"):
        trainer(tokenizer, tmp_path, cache, **kwargs)


def test_a_changed_starting_adapter_is_refused(tokenizer, tmp_path):
    cache = tmp_path / "ref_cache"
    trainer(tokenizer, tmp_path, cache, model=_started_adapter(tokenizer, 0.5), peft_config=None,
            reference="adapter_copy")
    with pytest.raises(ReferenceCacheMismatchError, match="changed since then: starting_adapter\\."):
        trainer(tokenizer, tmp_path, cache, model=_started_adapter(tokenizer, 0.25), peft_config=None,
                reference="adapter_copy")


def test_the_saved_adapter_records_the_fingerprint(tokenizer, tmp_path, cached):
    _, first = cached
    first.save_model(str(tmp_path / "adapter"))
    record = json.loads((tmp_path / "adapter" / REFERENCE_RECORD).read_text())
    assert record["reference_fingerprint"] == first.reference_fingerprint
    assert record["reference_fingerprint"]["starting_adapter"] == "none"  # adapters disabled: the base alone


def test_a_damaged_cache_file_is_refused(tokenizer, tmp_path, cached):
    cache, _ = cached
    (cache / "train.json").write_text("{not json")
    with pytest.raises(ReferenceCacheMismatchError, match="is not a reference cache file"):
        trainer(tokenizer, tmp_path, cache)


def test_a_cache_without_precomputing_is_refused(tmp_path):
    with pytest.raises(SettingError, match="ref_cache_dir keeps precomputed reference log-probs"):
        PLDPOConfig(output_dir=str(tmp_path), ref_cache_dir=str(tmp_path / "c"))
