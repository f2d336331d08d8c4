"""Where reference log-probs come from, and the checks that refuse a silently wrong reference.

DPO's reference policy is the policy *at the start of training*. With a freshly initialised LoRA adapter (B = 0)
that is exactly the base model with the adapter disabled, so no second copy of the weights is needed. That
shortcut is wrong whenever "adapter disabled" differs from the starting policy: an adapter loaded already
trained, a non-zero initialisation (``init_lora_weights=False``, PiSSA/OLoRA-style inits that rewrite the base
weights), or trained biases (``bias != "none"``, which modify the base model's own biases in place).

Every source has one interface, `ReferenceSource` (``ref_logps(model, batch)`` -> (B, K), plus what it needs
before and after training); `choose_reference` picks one:

- ``DisabledAdapterReference``: the same model with its adapters disabled (the default when it is exact).
- ``AdapterCopyReference``: a frozen copy of the starting adapter, living in the same PeftModel ("ref"); costs one
  adapter's worth of memory, and is exact for loaded or non-zero-initialised adapters.
- ``AdapterReference``: any named adapter of the same PeftModel (the scorer's ``ref_adapter``, such as TRL's
  saved ``ref/`` copy); ``AdapterCopyReference`` is the one training makes.
- ``ModelReference``: an explicit, separate reference model.
- ``InitialPolicyReference``: the policy itself, valid only before the first step (so always precomputed).
- ``PrecomputedReference``: a ``ref_logps`` column computed once (by one of the above) before training, or given
  with the data.

To add a source: subclass `ReferenceSource` in `sources.py` and pick it in `choice.py` (for training) and
`scoring_reference` (for the scorer). The scorer runs its reference through the same sources: ``with
source.reference_model(model) as ref:`` is "run this block as the reference".

What a trained adapter records about its reference and beta is `dpo_ext.reference.record`, the one reader and writer
of that record. Names are imported lazily, so that reading a record (the CLI, the Hub staging) does not import torch.
"""

import importlib

_EXPORTS = {
    "ReferenceMismatchError": "dpo_ext.reference.checks",
    "bias_is_trained": "dpo_ext.reference.checks",
    "check_reference_model": "dpo_ext.reference.checks",
    "disabled_matches_policy": "dpo_ext.reference.checks",
    "is_peft_model": "dpo_ext.reference.checks",
    "structural_reasons": "dpo_ext.reference.checks",
    "REFERENCE_CHOICES": "dpo_ext.reference.choice",
    "choose_reference": "dpo_ext.reference.choice",
    "scoring_reference": "dpo_ext.reference.choice",
    "REF_ADAPTER_NAME": "dpo_ext.reference.sources",
    "AdapterCopyReference": "dpo_ext.reference.sources",
    "AdapterReference": "dpo_ext.reference.sources",
    "DisabledAdapterReference": "dpo_ext.reference.sources",
    "InitialPolicyReference": "dpo_ext.reference.sources",
    "ModelReference": "dpo_ext.reference.sources",
    "PrecomputedReference": "dpo_ext.reference.sources",
    "ReferenceSource": "dpo_ext.reference.sources",
    "REFERENCE_RECORD": "dpo_ext.reference.record",
    "TrainingRecord": "dpo_ext.reference.record",
    "choose_beta": "dpo_ext.reference.record",
    "read_training_record": "dpo_ext.reference.record",
    "recorded_beta": "dpo_ext.reference.record",
    "write_training_record": "dpo_ext.reference.record",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        module = importlib.import_module(_EXPORTS[name])
        return getattr(module, "RECORD_FILE" if name == "REFERENCE_RECORD" else name)
    raise AttributeError(f"module 'dpo_ext.reference' has no attribute {name!r}")


def __dir__():
    return __all__
