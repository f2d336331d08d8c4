"""The fingerprint of precomputed reference log-probs: each input it names changes its own digest, and only that."""

import datasets
import torch
from peft import LoraConfig, get_peft_model

from fixtures import make_model
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
    assert set(before) == set(PARTS) and before["starting_adapter"] == "none"
    assert changed_parts(before, reference_fingerprint(model_digests(model, False), tokenizer, 64, dataset)) == []
    assert changed_parts(before, reference_fingerprint(model_digests(model, False), tokenizer, 32, dataset)) == ["max_length"]
    other_rows = {**ROWS, "ranks": [[0, 1], [0, 1]]}
    assert changed_parts(before, reference_fingerprint(model_digests(model, False), tokenizer, 64,
                                                       datasets.Dataset.from_dict(other_rows))) == ["dataset"]
    assert changed_parts(before, reference_fingerprint(model_digests(make_model(tokenizer, seed=1), False), tokenizer, 64,
                                                       dataset)) == ["reference_weights"]
    copy = tokenizer.__class__(tokenizer_object=tokenizer.backend_tokenizer, **tokenizer.special_tokens_map)
    assert tokenizer_digest(copy) == tokenizer_digest(tokenizer)
    copy.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    assert changed_parts(before, reference_fingerprint(model_digests(model, False), copy, 64, dataset)) == ["tokenizer"]
    assert changed_parts(before, {k: v for k, v in before.items() if k != "dataset"}) == ["dataset"]


def test_dataset_digest_follows_row_order():
    dataset = datasets.Dataset.from_dict(ROWS)
    assert dataset_digest(dataset.select([1, 0])) != dataset_digest(dataset)
    assert dataset_digest(dataset.select([0, 1])) == dataset_digest(dataset)
