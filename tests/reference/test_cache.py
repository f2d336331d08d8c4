"""A reference cache (``ref_cache_dir``): reused when nothing changed, refused after a change to each fingerprinted
input (reference weights, starting adapter, tokenizer, max_length, dataset), naming it."""

import json

import datasets
import pytest
import torch
from fixtures import make_model, ranked_rows, train_settings
from peft import LoraConfig, get_peft_model

from dpo_ext import PLDPOConfig, PLDPOTrainer
from dpo_ext.reference import REFERENCE_RECORD
from dpo_ext.reference.cache import ReferenceCacheError, ReferenceCacheMismatchError
from dpo_ext.settings import SettingError

LORA = dict(r=4, target_modules=["c_attn"], lora_dropout=0.0, task_type="CAUSAL_LM")
TRAIN, EVAL = ranked_rows(8, k=3, seed=5), ranked_rows(4, k=3, seed=6)
FRESH_LORA = LoraConfig(**LORA)  # the default adapter of `trainer`; None: the model is already a PeftModel


def trainer(tokenizer, tmp_path, cache, model=None, train=TRAIN, peft_config=FRESH_LORA, **overrides):
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
    with pytest.raises(ReferenceCacheError, match="train.json is not a complete reference cache file"):
        trainer(tokenizer, tmp_path, cache)


def test_a_cache_without_precomputing_is_refused(tmp_path):
    with pytest.raises(SettingError, match="ref_cache_dir keeps precomputed reference log-probs"):
        PLDPOConfig(output_dir=str(tmp_path), ref_cache_dir=str(tmp_path / "c"))


# -- malformed cache files: refused when read, naming the file, the row and what to do ------------------------------

def _edit(path, edit):
    stored = json.loads(path.read_text())
    path.write_text(json.dumps(edit(stored)))


def _set_row(index, value):
    def edit(stored):
        stored["ref_logps"][index] = value
        return stored
    return edit


# Each edit of a good train.json (8 rows of 3 values) and what the error must say besides the file's name.
MALFORMED = {
    "a row with K-1 values": (_set_row(2, [-1.0, -2.0]), "row 2, field 'ref_logps': has 2 entries for 3 completions"),
    "a row with K+1 values": (_set_row(0, [-1.0, -2.0, -3.0, -4.0]), "row 0, field 'ref_logps': has 4 entries"),
    "a text value": (_set_row(5, [-1.0, "-2.0", -3.0]), "row 5, field 'ref_logps[1]'"),
    "a null row": (_set_row(7, None), "row 7, field 'ref_logps': missing"),
    "a number for a row": (_set_row(1, -3.5), "row 1, field 'ref_logps': expected a list"),
    "one row too few": (lambda s: {**s, "ref_logps": s["ref_logps"][:-1]}, "holds 7 rows for the 8 rows"),
    "ref_logps an object": (lambda s: {**s, "ref_logps": {"0": [1.0]}}, "'ref_logps' is an object, expected a list"),
    "no ref_logps": (lambda s: {k: v for k, v in s.items() if k != "ref_logps"}, "no 'ref_logps'"),
    "fingerprint a list": (lambda s: {**s, "fingerprint": ["x"]}, "'fingerprint' is a list, expected an object"),
    "a list of rows only": (lambda s: s["ref_logps"], "a JSON list, expected an object"),
}


@pytest.mark.parametrize("damage", list(MALFORMED))
def test_a_malformed_cache_file_is_refused_naming_file_row_and_remedy(tokenizer, tmp_path, cached, damage, monkeypatch):
    cache, _ = cached
    edit, fragment = MALFORMED[damage]
    _edit(cache / "train.json", edit)
    monkeypatch.setattr(PLDPOTrainer, "_compute_ref_logps", lambda *a: pytest.fail("a malformed file was ignored"))
    with pytest.raises(ReferenceCacheError) as info:
        trainer(tokenizer, tmp_path, cache)
    message = str(info.value)
    assert str(cache / "train.json") in message and fragment in message, message
    assert f"delete {cache}" in message and "dpo-ext precompute-ref" in message, message


@pytest.mark.parametrize("text, shown", [("NaN", "nan"), ("Infinity", "inf"), ("-Infinity", "-inf")])
def test_a_non_finite_cached_value_is_refused(tokenizer, tmp_path, cached, text, shown):
    """Python's JSON reader accepts NaN and Infinity: they must not reach the loss."""
    cache, _ = cached
    path = cache / "train.json"
    stored = json.loads(path.read_text())
    stored["ref_logps"][4][2] = "PLACEHOLDER"
    path.write_text(json.dumps(stored).replace('"PLACEHOLDER"', text))
    with pytest.raises(ReferenceCacheError,
                       match=f"train.json, row 4, field 'ref_logps\\[2\\]': .*finite.*got {shown}"):
        trainer(tokenizer, tmp_path, cache)


def test_a_truncated_cache_file_is_refused(tokenizer, tmp_path, cached):
    cache, _ = cached
    path = cache / "train.json"
    path.write_text(path.read_text()[:-20])
    with pytest.raises(ReferenceCacheError, match="train.json is not a complete reference cache file.*dpo-ext "
                                                  "precompute-ref"):
        trainer(tokenizer, tmp_path, cache)


def test_non_finite_computed_log_probs_are_refused_not_cached(tokenizer, tmp_path, monkeypatch):
    """A reference that gives NaN (overflow, damaged weights) must not be written to the cache nor trained on."""
    from dpo_ext.reference import PrecomputedReference
    from dpo_ext.training.trainer import NonFiniteReferenceError

    real = PrecomputedReference.column

    def with_nan(self, model, batches):
        rows = real(self, model, batches)
        rows[3][1] = float("nan")
        return rows

    monkeypatch.setattr(PrecomputedReference, "column", with_nan)
    cache = tmp_path / "ref_cache"
    with pytest.raises(NonFiniteReferenceError, match="reference .*disabled_adapters.* train dataset, row 3, "
                                                 "completion 1.*nan"):
        trainer(tokenizer, tmp_path, cache)
    assert not (cache / "train.json").exists()


# -- a cache path that cannot be a folder: refused before any work ------------------------------------------------

def test_a_cache_path_that_is_a_file_is_refused_by_the_config(tmp_path):
    path = tmp_path / "cache.json"
    path.write_text("{}")
    with pytest.raises(SettingError, match=f"PLDPOConfig.ref_cache_dir: {path} is a file, not a folder"):
        PLDPOConfig(output_dir=str(tmp_path), precompute_ref_log_probs=True, ref_cache_dir=str(path))
    with pytest.raises(SettingError, match=f"{path} is a file, not a folder"):
        PLDPOConfig(output_dir=str(tmp_path), precompute_ref_log_probs=True, ref_cache_dir=str(path / "sub"))


def test_a_cache_path_that_became_a_file_is_refused_before_precomputing(tokenizer, tmp_path, monkeypatch):
    path = tmp_path / "cache"
    args = PLDPOConfig(**train_settings(tmp_path, precompute_ref_log_probs=True, ref_cache_dir=str(path),
                                        max_length=32, max_steps=1))
    path.write_text("not a folder")
    monkeypatch.setattr(PLDPOTrainer, "_compute_ref_logps", lambda *a: pytest.fail("precomputed first"))
    with pytest.raises(ReferenceCacheError, match=f"ref_cache_dir: {path} is a file, not a folder"):
        PLDPOTrainer(make_model(tokenizer), args=args, train_dataset=datasets.Dataset.from_list(TRAIN),
                     processing_class=tokenizer, peft_config=LoraConfig(**LORA))


def test_precompute_ref_refuses_a_file_as_cache_path_in_one_line(tmp_path, capsys):
    from dpo_ext.cli import main

    path = tmp_path / "cache.json"
    path.write_text("{}")
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"prompt": "p ", "chosen": "a", "rejected": "b"}) + "\n")
    code = main(["precompute-ref", "--model_name_or_path", str(tmp_path / "no_model"), "--dataset_name", str(rows),
                 "--ref_cache_dir", str(path), "--output_dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("dpo-ext precompute-ref: error: ") and f"{path} is a file, not a folder" in err
