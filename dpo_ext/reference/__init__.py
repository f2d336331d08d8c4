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
- ``ModelReference``: an explicit, separate reference model.
- ``InitialPolicyReference``: the policy itself, valid only before the first step (so always precomputed).
- ``PrecomputedReference``: a ``ref_logps`` column computed once (by one of the above) before training, or given
  with the data.

To add a source: subclass `ReferenceSource` in `sources.py` and pick it in `choice.py`.
"""

from dpo_ext.reference.checks import (
    ReferenceMismatchError,
    bias_is_trained,
    check_reference_model,
    disabled_matches_policy,
    is_peft_model,
    structural_reasons,
)
from dpo_ext.reference.choice import REFERENCE_CHOICES, choose_reference
from dpo_ext.reference.sources import (
    REF_ADAPTER_NAME,
    REFERENCE_RECORD,
    AdapterCopyReference,
    DisabledAdapterReference,
    InitialPolicyReference,
    ModelReference,
    PrecomputedReference,
    ReferenceSource,
)

__all__ = [
    "REFERENCE_CHOICES", "REFERENCE_RECORD", "REF_ADAPTER_NAME", "AdapterCopyReference", "DisabledAdapterReference",
    "InitialPolicyReference", "ModelReference", "PrecomputedReference", "ReferenceMismatchError", "ReferenceSource",
    "bias_is_trained", "check_reference_model", "choose_reference", "disabled_matches_policy", "is_peft_model",
    "structural_reasons",
]
