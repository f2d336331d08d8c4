"""Which reference source a training run gets (the cheapest exact one, or a refusal saying what to do), and which one
a scorer gets for the arguments it was given."""

import logging

from dpo_ext.reference.checks import (
    ReferenceMismatchError,
    bias_is_trained,
    disabled_matches_policy,
    is_peft_model,
    structural_reasons,
)
from dpo_ext.reference.sources import (
    AdapterCopyReference,
    AdapterReference,
    DisabledAdapterReference,
    InitialPolicyReference,
    ModelReference,
    PrecomputedReference,
)

logger = logging.getLogger(__name__)

REFERENCE_CHOICES = ("auto", "disabled_adapters", "adapter_copy", "ref_model", "initial_policy", "base_model")

_FIX_HINT = ("Pass an explicit ref_model, or set precompute_ref_log_probs=True (reference log-probs are then computed "
             "once from the starting policy before training)")


def choose_reference(mode, model, ref_model, probe_batch, unwrap, precompute: bool):
    """Pick and build the reference source for ``mode`` (one of ``REFERENCE_CHOICES``); never silently wrong.

    Args:
        mode (`str`): "auto" picks disabled adapters when exact, else a frozen adapter copy, else refuses.
            "base_model" is disabled adapters without that check: the base model is the reference by choice, also
            when the adapter was loaded already trained (a later on-policy round against the first round's base).
        model: the policy (a PeftModel when adapters are used), not yet wrapped for distribution.
        ref_model: an explicit reference model or `None`.
        probe_batch (`dict`): a collated batch used to check that disabled adapters reproduce the policy.
        unwrap: callable returning the PeftModel from a DDP/FSDP-wrapped one (see `dpo_ext.reference.sources`).
        precompute (`bool`): whether reference log-probs are computed once before training (or given with the data).

    Returns:
        A `ReferenceSource`; with ``precompute``, a `PrecomputedReference` around the source that computes them.
    """
    source = _live_source(mode, model, ref_model, probe_batch, unwrap, precompute)
    return PrecomputedReference(source) if precompute else source


def _live_source(mode, model, ref_model, probe_batch, unwrap, precompute: bool):
    if mode not in REFERENCE_CHOICES:
        raise ValueError(f"reference must be one of {REFERENCE_CHOICES}, got {mode!r}")
    if ref_model is not None:
        if mode not in ("auto", "ref_model"):
            raise ValueError(f"a ref_model was given but reference={mode!r}; use reference='ref_model' or 'auto'")
        return ModelReference(ref_model)
    if mode == "ref_model":
        raise ValueError("reference='ref_model' needs the ref_model argument")
    if mode == "initial_policy" or (mode == "auto" and not is_peft_model(model)):
        if not precompute:
            raise ReferenceMismatchError(
                "Without a PEFT adapter the policy's weights change during training, so the reference must be a "
                "separate model or computed up front. " + _FIX_HINT + ", or pass peft_config to train an adapter."
            )
        return InitialPolicyReference()
    if not is_peft_model(model):
        raise ReferenceMismatchError(f"reference={mode!r} needs a PEFT model (pass peft_config or a PeftModel)")
    if bias_is_trained(model) and not precompute:
        raise ReferenceMismatchError(
            "The reference cannot be taken from this adapter: " + "; ".join(structural_reasons(model)) + ". "
            + _FIX_HINT + ", or use bias='none'."
        )
    if mode == "adapter_copy":
        return AdapterCopyReference(model, unwrap)
    if mode == "base_model":
        # Asked for by name: the base model, even where a loaded adapter makes it differ from the starting policy
        # (on-policy rounds keep the round-0 base as the reference while the adapter goes on training).
        logger.info("reference='base_model': the base model with adapters disabled, whatever the adapter's state.")
        return DisabledAdapterReference(unwrap)
    return _adapter_source(mode, model, probe_batch, unwrap, precompute)


def _adapter_source(mode, model, probe_batch, unwrap, precompute: bool):
    """"auto" or "disabled_adapters" for a PeftModel: disabled adapters when they are the starting policy."""
    reasons = structural_reasons(model)
    matches, diff = disabled_matches_policy(model, probe_batch)
    if not matches:
        reasons.append(
            f"with adapters disabled, the log-probs of a probe batch differ from the policy's by up to {diff:.3g} "
            "nats (an adapter loaded already trained?)"
        )
    if not reasons:
        return DisabledAdapterReference(unwrap)
    if mode == "disabled_adapters":
        raise ReferenceMismatchError(
            "reference='disabled_adapters' would not be the starting policy: " + "; ".join(reasons) + ". Use "
            "reference='adapter_copy' (a frozen copy of the starting adapter). " + _FIX_HINT + "."
        )
    if precompute:  # before the first step the policy itself is the starting policy: exact, and no copy needed
        return InitialPolicyReference()
    logger.warning(
        "Adapters disabled would not be the starting policy (%s); using a frozen copy of the starting adapter as "
        "the reference instead.", "; ".join(reasons),
    )
    return AdapterCopyReference(model, unwrap)


def _same_model(model):
    return model  # the scorer holds the PeftModel itself: nothing to unwrap


def scoring_reference(model, ref_model=None, ref_adapter: str | None = None):
    """The reference source a scorer of ``model`` runs, by the same rules and classes as training.

    Args:
        model: the policy (a PeftModel, or a full model).
        ref_model (*optional*): a separate reference model -> `ModelReference` (left unfrozen: the scorer only reads
            it).
        ref_adapter (`str`, *optional*): an adapter of ``model`` -> `AdapterReference` (TRL's saved ``ref/`` copy).

    Returns:
        A `ReferenceSource`; with neither, `DisabledAdapterReference` for a PeftModel, `None` for a full model (no
        reference: only reference-free scores).

    Raises:
        `ValueError`: conflicting or unknown arguments. `ReferenceMismatchError`: an adapter with trained biases,
        whose base with adapters disabled is not the model it was trained from.
    """
    if ref_model is not None and ref_adapter is not None:
        raise ValueError("pass ref_model or ref_adapter, not both")
    if ref_model is not None:
        if ref_model is model:
            raise ValueError("ref_model is the policy model itself; omit it to use the adapters-off base model")
        return ModelReference(ref_model, freeze=False)
    peft = is_peft_model(model)
    if ref_adapter is not None:
        if not peft or ref_adapter not in model.peft_config:
            available = sorted(model.peft_config) if peft else []
            raise ValueError(f"ref_adapter={ref_adapter!r} is not an adapter of the model (adapters: {available})")
        return AdapterReference(ref_adapter, _same_model)
    if not peft:
        return None
    if bias_is_trained(model):
        raise ReferenceMismatchError(
            "this adapter trains biases (bias != 'none'), which changes the base model's own biases: with adapters "
            "disabled it is not the reference it was trained against. Pass ref_model= (the model it was trained "
            "from)."
        )
    return DisabledAdapterReference(_same_model)
