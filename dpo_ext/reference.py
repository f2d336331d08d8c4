"""Where reference log-probs come from, and the check that refuses a silently wrong reference.

DPO's reference policy is the policy *at the start of training*. With a freshly initialised LoRA adapter (B = 0)
that is exactly the base model with the adapter disabled, so no second copy of the weights is needed. That
shortcut is wrong whenever "adapter disabled" differs from the starting policy: an adapter loaded already
trained, a non-zero initialisation (``init_lora_weights=False``, PiSSA/OLoRA-style inits that rewrite the base
weights), or trained biases (``bias != "none"``, which modify the base model's own biases in place). The sources:

- ``DisabledAdapterReference``: the same model with its adapters disabled (the default when it is exact).
- ``AdapterCopyReference``: a frozen copy of the starting adapter, living in the same PeftModel ("ref"); costs one
  adapter's worth of memory, and is exact for loaded or non-zero-initialised adapters.
- ``ModelReference``: an explicit, separate reference model.
- ``PrecomputedReference``: a ``ref_logps`` column computed once (by one of the above) before training.
"""

import contextlib
import logging

import torch

from dpo_ext.modeling.batches import completion_logps
from dpo_ext.modeling.models import bare_model, check_tokenizer_fits, vocabulary_size

logger = logging.getLogger(__name__)

REFERENCE_CHOICES = ("auto", "disabled_adapters", "adapter_copy", "ref_model", "initial_policy")
REF_ADAPTER_NAME = "ref"
# Written next to a saved adapter: which reference it was trained against, so a scorer that later assumes
# "base model = reference" can refuse instead of being silently wrong.
REFERENCE_RECORD = "dpo_ext_reference.json"


class ReferenceError(ValueError):
    """The requested reference would not be the starting policy; the message says why and what to do."""


def is_peft_model(model) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


class DisabledAdapterReference:
    """Reference = the policy with every adapter disabled (``PeftModel.disable_adapter()``), under no_grad."""

    name = "disabled_adapters"

    def __init__(self, unwrap):
        self._unwrap = unwrap  # returns the PeftModel inside a DDP/FSDP wrapper

    def logps(self, model, batch) -> torch.Tensor:
        with torch.no_grad(), self._unwrap(model).disable_adapter():
            return completion_logps(model, batch)


class AdapterCopyReference:
    """Reference = a frozen copy of the starting adapter, added to the same PeftModel under ``REF_ADAPTER_NAME``."""

    name = "adapter_copy"

    def __init__(self, peft_model, unwrap):
        from peft import get_peft_model_state_dict, set_peft_model_state_dict

        self._unwrap = unwrap
        self.trained_adapter = peft_model.active_adapter
        config = peft_model.peft_config[self.trained_adapter]
        peft_model.add_adapter(REF_ADAPTER_NAME, config)
        state = get_peft_model_state_dict(peft_model, adapter_name=self.trained_adapter)
        set_peft_model_state_dict(peft_model, state, adapter_name=REF_ADAPTER_NAME)
        peft_model.set_adapter(self.trained_adapter)  # the copy stays inactive and frozen
        for name, param in peft_model.named_parameters():
            if f".{REF_ADAPTER_NAME}." in name:
                param.requires_grad_(False)

    @contextlib.contextmanager
    def _active(self, peft_model):
        peft_model.base_model.set_adapter(REF_ADAPTER_NAME, inference_mode=True)
        try:
            yield
        finally:
            peft_model.base_model.set_adapter(self.trained_adapter)  # trainable again, as before

    def logps(self, model, batch) -> torch.Tensor:
        with torch.no_grad(), self._active(self._unwrap(model)):
            return completion_logps(model, batch)


class ModelReference:
    """Reference = a separate model, kept in eval mode, under no_grad."""

    name = "ref_model"

    def __init__(self, ref_model):
        self.ref_model = ref_model.eval()
        for param in self.ref_model.parameters():
            param.requires_grad_(False)

    def logps(self, model, batch) -> torch.Tensor:
        with torch.no_grad():
            return completion_logps(self.ref_model, batch)


class InitialPolicyReference:
    """Reference = the policy itself, as it is now; only valid before the first optimizer step (precomputing)."""

    name = "initial_policy"

    def logps(self, model, batch) -> torch.Tensor:
        with torch.no_grad():
            return completion_logps(model, batch)


def _recorded_tokenizer(model):
    """The tokenizer saved with a model loaded from a folder or the local Hub cache, or None (never downloads)."""
    source = getattr(getattr(bare_model(model), "config", None), "_name_or_path", "") or ""
    if not source:
        return None
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError, TypeError):  # no tokenizer files there: nothing recorded to compare
        return None


def _base_vocabulary(tokenizer) -> dict:
    added = set(getattr(tokenizer, "added_tokens_encoder", {}) or {})
    return {token: index for token, index in tokenizer.get_vocab().items() if token not in added}


def check_reference_model(policy, ref_model, tokenizer) -> None:
    """Refuse a reference model that does not read the policy's token ids the same way.

    Log-ratios ``log pi(y|x) - log pi_ref(y|x)`` only mean something when both models score the same ids: a
    reference with another vocabulary size fails deep inside torch (or, larger, silently scores other tokens), and
    one trained with another tokenizer gives a meaningless reward. Checked: output vocabulary sizes, BOS/EOS ids in
    the configs, and the reference's own saved tokenizer when it was loaded from a folder or the local cache.

    Raises:
        `ReferenceError`: naming what differs and what to do.
    """
    hint = " Pass the model the policy was fine-tuned from (the SFT model), loaded with the policy's tokenizer."
    policy_rows, ref_rows = vocabulary_size(policy), vocabulary_size(ref_model)
    if policy_rows is not None and ref_rows is not None and policy_rows != ref_rows:
        raise ReferenceError(f"ref_model has a vocabulary of {ref_rows} token ids but the policy has {policy_rows}: "
                             "the two do not share a tokenizer." + hint)
    check_tokenizer_fits(ref_model, tokenizer, "ref_model")
    policy_config, ref_config = bare_model(policy).config, bare_model(ref_model).config
    for name in ("bos_token_id", "eos_token_id"):
        mine, theirs = getattr(policy_config, name, None), getattr(ref_config, name, None)
        if mine is not None and theirs is not None and mine != theirs:
            raise ReferenceError(f"ref_model's config has {name}={theirs} but the policy's has {mine}: the two do "
                                 "not share a tokenizer." + hint)
    recorded = _recorded_tokenizer(ref_model)
    if recorded is not None and _base_vocabulary(recorded) != _base_vocabulary(tokenizer):
        source = bare_model(ref_model).config._name_or_path
        raise ReferenceError(f"ref_model was saved with a tokenizer ({source}) whose vocabulary differs from the "
                             "tokenizer used for the policy: its log-probs are of other tokens." + hint)


def structural_reasons(peft_model) -> list[str]:
    """Reasons, readable from the adapter's config alone, why "adapters disabled" is not the starting policy."""
    reasons = []
    for name, config in peft_model.peft_config.items():
        bias = getattr(config, "bias", "none")
        if bias != "none":
            reasons.append(
                f"adapter '{name}' has bias='{bias}': it trains the base model's own biases in place, so disabling "
                "the adapter does not give back the starting model (and a copy of the adapter would not either)"
            )
        init = getattr(config, "init_lora_weights", True)
        if init is False or (isinstance(init, str) and init.lower() not in ("gaussian", "true")):
            reasons.append(
                f"adapter '{name}' uses init_lora_weights={init!r}: the adapter does not start as a no-op"
                + (" and the base weights were rewritten" if isinstance(init, str) else "")
            )
    return reasons


def bias_is_trained(peft_model) -> bool:
    return any(getattr(c, "bias", "none") != "none" for c in peft_model.peft_config.values())


@torch.no_grad()
def disabled_matches_policy(peft_model, probe_batch, atol: float = 1e-4) -> tuple[bool, float]:
    """Run a probe batch with and without adapters; (matches, largest difference of summed log-probs)."""
    was_training = peft_model.training
    peft_model.eval()  # no dropout: the comparison must be deterministic
    try:
        policy = completion_logps(peft_model, probe_batch)
        with peft_model.disable_adapter():
            disabled = completion_logps(peft_model, probe_batch)
    finally:
        peft_model.train(was_training)
    diff = float((policy - disabled).abs().max())
    return diff <= atol * max(1.0, float(policy.abs().max())), diff


def _fix_hint() -> str:
    return (
        "Pass an explicit ref_model, or set precompute_ref_log_probs=True (reference log-probs are then computed "
        "once from the starting policy before training)"
    )


def choose_reference(mode, model, ref_model, probe_batch, unwrap, precompute: bool):
    """Pick and build the reference source for ``mode`` (one of ``REFERENCE_CHOICES``); never silently wrong.

    Args:
        mode (`str`): "auto" picks disabled adapters when exact, else a frozen adapter copy, else refuses.
        model: the policy (a PeftModel when adapters are used), not yet wrapped for distribution.
        ref_model: an explicit reference model or `None`.
        probe_batch (`dict`): a collated batch used to check that disabled adapters reproduce the policy.
        unwrap: callable returning the bare model from a DDP/FSDP-wrapped one.
        precompute (`bool`): whether reference log-probs will be computed once before training.
    """
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
            raise ReferenceError(
                "Without a PEFT adapter the policy's weights change during training, so the reference must be a "
                "separate model or computed up front. " + _fix_hint() + ", or pass peft_config to train an adapter."
            )
        return InitialPolicyReference()
    if not is_peft_model(model):
        raise ReferenceError(f"reference={mode!r} needs a PEFT model (pass peft_config or a PeftModel)")

    if bias_is_trained(model) and not precompute:
        raise ReferenceError(
            "The reference cannot be taken from this adapter: " + "; ".join(structural_reasons(model)) + ". "
            + _fix_hint() + ", or use bias='none'."
        )
    if mode == "adapter_copy":
        return AdapterCopyReference(model, unwrap)

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
        raise ReferenceError(
            "reference='disabled_adapters' would not be the starting policy: " + "; ".join(reasons) + ". Use "
            "reference='adapter_copy' (a frozen copy of the starting adapter). " + _fix_hint() + "."
        )
    if precompute:  # before the first step the policy itself is the starting policy: exact, and no copy needed
        return InitialPolicyReference()
    logger.warning(
        "Adapters disabled would not be the starting policy (%s); using a frozen copy of the starting adapter as "
        "the reference instead.", "; ".join(reasons),
    )
    return AdapterCopyReference(model, unwrap)
