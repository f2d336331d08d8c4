"""Checks that refuse a silently wrong reference: a reference model that reads token ids another way, and an
adapter for which "adapters disabled" is not the starting policy."""

import torch

from dpo_ext.modeling.batches import completion_logps
from dpo_ext.modeling.models import bare_model, check_tokenizer_fits, eval_mode, vocabulary_size


class ReferenceMismatchError(ValueError):
    """The requested reference would not be the starting policy; the message says why and what to do."""


def is_peft_model(model) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


def _recorded_tokenizer(model):
    """The tokenizer saved with a model loaded from a folder or the local Hub cache, or None (never downloads)."""
    source = getattr(bare_model(model), "name_or_path", "") or ""
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
        `ReferenceMismatchError`: naming what differs and what to do.
    """
    hint = " Pass the model the policy was fine-tuned from (the SFT model), loaded with the policy's tokenizer."
    policy_rows, ref_rows = vocabulary_size(policy), vocabulary_size(ref_model)
    if policy_rows is not None and ref_rows is not None and policy_rows != ref_rows:
        raise ReferenceMismatchError(f"ref_model has a vocabulary of {ref_rows} token ids but the policy has "
                                     f"{policy_rows}: the two do not share a tokenizer." + hint)
    check_tokenizer_fits(ref_model, tokenizer, "ref_model")
    policy_config, ref_config = bare_model(policy).config, bare_model(ref_model).config
    for name in ("bos_token_id", "eos_token_id"):
        mine, theirs = getattr(policy_config, name, None), getattr(ref_config, name, None)
        if mine is not None and theirs is not None and mine != theirs:
            raise ReferenceMismatchError(f"ref_model's config has {name}={theirs} but the policy's has {mine}: the "
                                         "two do not share a tokenizer." + hint)
    recorded = _recorded_tokenizer(ref_model)
    if recorded is not None and _base_vocabulary(recorded) != _base_vocabulary(tokenizer):
        source = bare_model(ref_model).name_or_path
        raise ReferenceMismatchError(f"ref_model was saved with a tokenizer ({source}) whose vocabulary differs "
                                     "from the tokenizer used for the policy: its log-probs are of other tokens."
                                     + hint)


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
    with eval_mode(peft_model):  # no dropout: the comparison must be deterministic
        policy = completion_logps(peft_model, probe_batch)
        with peft_model.disable_adapter():
            disabled = completion_logps(peft_model, probe_batch)
    diff = float((policy - disabled).abs().max())
    return diff <= atol * max(1.0, float(policy.abs().max())), diff
