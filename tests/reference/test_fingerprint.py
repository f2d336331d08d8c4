"""The fingerprint of precomputed reference log-probs: each input it names changes its own digest, and only that."""

import datasets
import torch
from fixtures import make_model
from peft import LoraConfig, get_peft_model

from dpo_ext.reference.fingerprint import (
    PARTS,
    changed_parts,
    dataset_digest,
    model_digests,
    reference_fingerprint,
    tensors_digest,
    tokenizer_digest,
    weights_digests,
)

ROWS = {"prompt_ids": [[1, 2], [3]], "completion_ids": [[[4], [5, 6]], [[7], [8]]], "ranks": [[0, 1], [1, 0]]}


def test_tensor_digest_sees_values_dtypes_shapes_and_names():
    weight = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    reference = tensors_digest([("w", weight)])
    assert tensors_digest([("w", weight.clone())]) == reference
    nudged = weight.clone()
    nudged[1, 2] = torch.nextafter(nudged[1, 2], torch.tensor(100.0))  # one ulp
    assert tensors_digest([("w", nudged)]) != reference
    assert tensors_digest([("w", weight.double())]) != reference
    assert tensors_digest([("w", weight.reshape(3, 2))]) != reference
    assert tensors_digest([("v", weight)]) != reference
    assert tensors_digest([("w", weight.to(torch.bfloat16))]) != tensors_digest([("w", weight.to(torch.float16))])


def test_adapter_weights_are_kept_apart_from_the_base(tokenizer):
    base = make_model(tokenizer)
    plain_weights, plain_adapter = weights_digests(base)
    assert plain_adapter == "none"
    peft = get_peft_model(base, LoraConfig(r=2, target_modules=["c_attn"], init_lora_weights=False))
    weights, adapter = weights_digests(peft)
    assert adapter != "none"
    with torch.no_grad():
        next(p for n, p in peft.named_parameters() if "lora_B" in n).add_(1.0)
    new_weights, new_adapter = weights_digests(peft)
    assert new_weights == weights and new_adapter != adapter  # training the adapter leaves the base digest alone


def test_each_input_changes_only_its_own_part(tokenizer):
    model = make_model(tokenizer)
    dataset = datasets.Dataset.from_dict(ROWS)
    before = reference_fingerprint(model_digests(model, False), tokenizer, 64, dataset)
    assert set(before) == set(PARTS) - {"max_prompt_length"} and before["starting_adapter"] == "none"  # unset
    assert changed_parts(before, reference_fingerprint(model_digests(model, False), tokenizer, 64, dataset)) == []
    assert changed_parts(before, reference_fingerprint(model_digests(model, False), tokenizer, 32,
                                                       dataset)) == ["max_length"]
    other_rows = {**ROWS, "ranks": [[0, 1], [0, 1]]}
    assert changed_parts(before, reference_fingerprint(model_digests(model, False), tokenizer, 64,
                                                       datasets.Dataset.from_dict(other_rows))) == ["dataset"]
    other_weights = model_digests(make_model(tokenizer, seed=1), False)
    assert changed_parts(before, reference_fingerprint(other_weights, tokenizer, 64, dataset)) == ["reference_weights"]
    copy = tokenizer.__class__(tokenizer_object=tokenizer.backend_tokenizer, **tokenizer.special_tokens_map)
    assert tokenizer_digest(copy) == tokenizer_digest(tokenizer)
    copy.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    assert changed_parts(before, reference_fingerprint(model_digests(model, False), copy, 64, dataset)) == ["tokenizer"]
    assert changed_parts(before, {k: v for k, v in before.items() if k != "dataset"}) == ["dataset"]


def test_dataset_digest_follows_row_order():
    dataset = datasets.Dataset.from_dict(ROWS)
    assert dataset_digest(dataset.select([1, 0])) != dataset_digest(dataset)
    assert dataset_digest(dataset.select([0, 1])) == dataset_digest(dataset)


def test_max_prompt_length_has_its_own_part_and_none_leaves_the_fingerprint_as_before(tokenizer):
    model = make_model(tokenizer)
    dataset = datasets.Dataset.from_dict(ROWS)
    weights = model_digests(model, False)
    before = reference_fingerprint(weights, tokenizer, 64, dataset)
    assert "max_prompt_length" in PARTS and "max_prompt_length" not in before  # caches stored before stay valid
    assert reference_fingerprint(weights, tokenizer, 64, dataset, max_prompt_length=None) == before
    cut = reference_fingerprint(weights, tokenizer, 64, dataset, max_prompt_length=32)
    assert changed_parts(before, cut) == ["max_prompt_length"]
    assert changed_parts(cut, reference_fingerprint(weights, tokenizer, 64, dataset, 16)) == ["max_prompt_length"]


def test_the_reference_digest_depends_on_the_base_weights_not_on_where_the_adapters_sit(tokenizer):
    """With adapters disabled the reference is the base model: which modules carry a LoRA (which renames their
    weights ``...c_attn.base_layer.weight``) must not change the fingerprint; a changed base weight must."""
    plain = model_digests(make_model(tokenizer), False)
    on_attention = model_digests(get_peft_model(make_model(tokenizer), LoraConfig(r=2, target_modules=["c_attn"])),
                                 False)
    on_mlp = model_digests(get_peft_model(make_model(tokenizer), LoraConfig(r=2, target_modules=["c_fc", "c_proj"])),
                           False)
    copies_head = model_digests(get_peft_model(make_model(tokenizer), LoraConfig(
        r=2, target_modules=["c_attn"], modules_to_save=["lm_head"])), False)
    assert on_attention == on_mlp == copies_head == plain
    changed = make_model(tokenizer)
    with torch.no_grad():
        changed.transformer.h[0].attn.c_attn.weight[0, 0] += 1e-3
    assert model_digests(get_peft_model(changed, LoraConfig(r=2, target_modules=["c_attn"])), False) != plain


def test_an_included_adapter_is_part_of_the_reference(tokenizer):
    """When the reference runs with its adapter (a copy of a starting adapter), the adapter's weights and where they
    sit are part of it."""
    def started(targets):
        model = get_peft_model(make_model(tokenizer), LoraConfig(r=2, target_modules=targets,
                                                                 init_lora_weights=False))
        return model_digests(model, True)

    attention, mlp = started(["c_attn"]), started(["c_fc"])
    assert attention["reference_weights"] == mlp["reference_weights"]  # the same base under both
    assert attention["starting_adapter"] != mlp["starting_adapter"] != "none"
