"""What precomputed reference log-probs depend on, as digests: a fingerprint stored with them so that they are reused
only for the run they were computed for.

A reference log-prob is a function of the reference's weights and of the token ids scored. The fingerprint keeps one
digest per input a user can change, so that a mismatch says which one changed:

- ``reference_weights``: the weights the reference runs with, adapters excluded (the base model, or ``ref_model``),
  named as in the model without PEFT: which modules carry adapters does not change it;
- ``starting_adapter``: the adapter weights the reference includes (a frozen copy of the starting adapter, or the
  policy itself before training), ``"none"`` when its adapters are disabled;
- ``tokenizer``: the vocabulary, merges, special tokens and chat template;
- ``max_length``: where sequences are cut;
- ``max_prompt_length``: where long prompts are cut from the left (present only when set, so that fingerprints
  stored before the setting existed still match runs without it);
- ``dataset``: the rows as tokenized (prompt and completion ids and ranks), in order.

Digests are BLAKE2b over every tensor's name, dtype, shape and bytes: exact; about 2 s per GB of weights on a
2-core CPU (measured once; it varies with the machine).
"""

import hashlib
import json

PARTS = ("reference_weights", "starting_adapter", "tokenizer", "max_length", "max_prompt_length", "dataset")
# Parameter-name fragments of PEFT adapter weights (LoRA, its DoRA magnitude, and trained full copies)
ADAPTER_MARKERS = ("lora_", "modules_to_save", "lora_magnitude_vector")


def _digest() -> "hashlib._Hash":
    return hashlib.blake2b(digest_size=16)


def tensors_digest(named_tensors) -> str:
    """Digest of ``(name, tensor)`` pairs, in the order given."""
    import torch

    digest = _digest()
    for name, tensor in named_tensors:
        tensor = tensor.detach().contiguous().cpu()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def is_adapter_weight(name: str) -> bool:
    return any(marker in name for marker in ADAPTER_MARKERS)


# Module names PEFT inserts above a weight it wraps: ``c_attn.weight`` becomes ``c_attn.base_layer.weight`` (LoRA
# and the other tuners) or ``lm_head.original_module.weight`` (modules_to_save); a PeftModel adds ``base_model.model.``
_WRAPPER_SEGMENTS = ("base_layer", "original_module")


def base_name(name: str) -> str:
    """The name a weight of a model inside PEFT's wrappers has in the model itself (``x.c_attn.base_layer.weight``
    -> ``x.c_attn.weight``), so that a digest does not change with the modules that carry adapters."""
    return ".".join(part for part in name.split(".") if part not in _WRAPPER_SEGMENTS)


def weights_digests(model) -> tuple[str, str]:
    """``(weights without adapters, adapter weights)`` of ``model`` (``"none"`` when it has no adapter weights).

    Weights are named as in the model without PEFT (`base_name`): the base digest is the same whichever modules
    carry adapters, or none; the adapter digest names each adapter weight by the module it sits on."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # a PeftModel: drop its prefix
    named = [(base_name(n), p) for n, p in inner.named_parameters()]
    adapters = [(n, p) for n, p in named if is_adapter_weight(n)]
    base = [(n, p) for n, p in named if not is_adapter_weight(n)]
    return tensors_digest(base), tensors_digest(adapters) if adapters else "none"


def tokenizer_digest(tokenizer) -> str:
    """Digest of what turns text into ids: the fast tokenizer's full definition (or the vocabulary), the special
    tokens and the chat template."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    definition = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    digest = _digest()
    for part in (definition, json.dumps(tokenizer.special_tokens_map, sort_keys=True),
                 str(getattr(tokenizer, "chat_template", None))):
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()


def dataset_digest(dataset, columns=("prompt_ids", "completion_ids", "ranks")) -> str:
    """Digest of a tokenized dataset's rows, in order."""
    digest = _digest()
    for row in dataset.select_columns(list(columns)):
        digest.update(json.dumps([row[c] for c in columns]).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def model_digests(reference_model, includes_adapter: bool) -> dict:
    """The weight parts of a fingerprint.

    Args:
        reference_model: the model the reference runs (the policy when the reference is its adapters disabled or
            its starting adapter; ``ref_model`` when separate).
        includes_adapter (`bool`): whether the reference runs with ``reference_model``'s adapter weights.
    """
    weights, adapter = weights_digests(reference_model)
    return {"reference_weights": weights, "starting_adapter": adapter if includes_adapter else "none"}


def reference_fingerprint(weights: dict, tokenizer, max_length, dataset, max_prompt_length=None) -> dict:
    """The fingerprint (`PARTS` -> digest) of the reference log-probs of ``dataset``, given `model_digests`."""
    cut = {} if max_prompt_length is None else {"max_prompt_length": str(max_prompt_length)}
    return {**weights, "tokenizer": tokenizer_digest(tokenizer), "max_length": str(max_length), **cut,
            "dataset": dataset_digest(dataset)}


def changed_parts(stored: dict, current: dict) -> list[str]:
    """The parts of two fingerprints that differ, in `PARTS` order (a part missing from either counts as changed)."""
    return [part for part in PARTS if stored.get(part) != current.get(part)]
