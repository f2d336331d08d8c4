"""Whether a model can run prefix-shared rows exactly: the one check the trainer and the scorer share.

Facts this rests on (checked with transformers 5.24 on CPU, GPT-2 and Llama, eager and sdpa attention, LoRA too;
``tests/modeling/test_prefix_sharing.py`` checks them again for every verified model type): a 4-D attention mask is
passed to the attention unchanged, so padding must be in it; it must be an additive *float* mask (a bool 4-D mask is
silently wrong in eager attention); and restarted position ids are only correct together with such a mask.
Flash-attention kernels ignore 4-D masks, so those models fall back to one row per completion (see
`prefix_sharing_unsupported`).
"""

import inspect
import logging

from dpo_ext.data.collate import PackedRankedCollator
from dpo_ext.modeling.models import bare_model

logger = logging.getLogger(__name__)


# Model types checked to give the same log-probs packed as in separate rows, with eager and sdpa attention
# (tests/test_prefix_sharing.py, marked slow, checks them all). MPT (ALiBi from the 2-D mask) gives wrong ones.
VERIFIED_MODEL_TYPES = frozenset({
    "cohere", "gemma", "gemma2", "gemma3_text", "glm", "gpt2", "gpt_bigcode", "gpt_neox", "granite", "helium",
    "llama", "ministral", "mistral", "mixtral", "olmo", "olmo2", "opt", "phi", "phi3", "qwen2", "qwen2_moe", "qwen3",
    "qwen3_moe", "smollm3", "stablelm", "starcoder2",
})


SUPPORTED_ATTENTION = ("eager", "sdpa")


def prefix_sharing_unsupported(model, max_length: int | None = None) -> str | None:
    """Why ``model`` cannot run prefix-shared rows exactly (a sentence), or `None` when it can: the one check behind
    the trainer's packed rows (`choose_collator`) and the scorer's prompt-cache reuse.

    Supported: decoder-only models of a verified type (`VERIFIED_MODEL_TYPES`) with eager or sdpa attention, whose
    forward takes a 4-D ``attention_mask`` and ``position_ids``. Flash-attention and other kernels that ignore a 4-D
    mask would let completions see each other. A sliding window (``sliding_window``/``use_sliding_window``, or a
    ``"sliding_attention"`` entry of ``layer_types``) is not applied to a custom mask, so it is only exact when no
    plain row (at most ``max_length`` tokens; unknown when `None`) could exceed the window.
    """
    bare = bare_model(model)
    config = getattr(bare, "config", None)
    if config is None:
        return f"{type(bare).__name__} has no transformers config"
    model_type = getattr(config, "model_type", None)
    if getattr(config, "is_encoder_decoder", False):
        return f"model type '{model_type}' is an encoder-decoder"
    if model_type not in VERIFIED_MODEL_TYPES:
        return f"model type '{model_type}' is not among those verified for packed rows ({sorted(VERIFIED_MODEL_TYPES)})"
    attention = getattr(config, "_attn_implementation", None)
    if attention not in SUPPORTED_ATTENTION:
        return f"attention implementation '{attention}' does not take a 4-D float mask (use eager or sdpa)"
    parameters = inspect.signature(bare.forward).parameters
    missing = [p for p in ("attention_mask", "position_ids") if p not in parameters]
    if missing:
        return f"{type(bare).__name__}.forward does not accept {' or '.join(missing)}"
    window = getattr(config, "sliding_window", None)
    # use_sliding_window is None in configs (Mistral's) that apply any window they are given
    sliding = (window and getattr(config, "use_sliding_window", None) is not False) or "sliding_attention" in (
        getattr(config, "layer_types", None) or ())
    if sliding and (not window or max_length is None or max_length > window):
        return (f"its sliding window ({window or 'of unknown size'} tokens) is not applied to a custom mask and "
                f"max_length={max_length} could exceed it")
    return None


def choose_collator(collator, models, prefix_sharing: bool):
    """A `PackedRankedCollator` when ``prefix_sharing`` is asked for and every model supports it, else ``collator``.

    Args:
        collator (`RankedCollator`): the plain collator (its ``pad_token_id`` and ``max_length`` are reused).
        models (`list`): the policy and, when there is one, the separate reference model (`None` entries skipped).
        prefix_sharing (`bool`): `PLDPOConfig.prefix_sharing`.
    """
    if not prefix_sharing:
        return collator
    for model in models:
        if model is None:
            continue
        reason = prefix_sharing_unsupported(model, collator.max_length)
        if reason is not None:
            logger.warning("prefix_sharing=True is not supported for this model (%s); using one row per completion "
                           "instead.", reason)
            return collator
    return PackedRankedCollator(pad_token_id=collator.pad_token_id, max_length=collator.max_length)
