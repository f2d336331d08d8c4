"""Loading a causal LM from a folder or a Hub id: the one loader of the policy, the base of an adapter and a
reference model, for `dpo-ext train`, the trainer and the scorer.

It refuses, naming the model and saying what to do:

- a model that is not a causal LM, found from its config before any weight is read. `AutoModelForCausalLM` loads a
  saved masked LM (``BertForMaskedLM``) as ``BertLMHeadModel`` without a word; it would then attend to later tokens
  and train on a task it cannot do;
- weights only in a pickle (``pytorch_model.bin``), never opened (see `dpo_ext.safe_files`), a truncated
  safetensors file, and (local folders) NaN or infinite weights;
- a checkpoint whose weights do not match the model: a weight missing (transformers would initialise it at random)
  or unexpected (a model saved with LoRA layers inside it, say). Tied weights (an LM head sharing the input
  embeddings) are not saved and not missing: transformers does not list them.
"""

import os

from dpo_ext.safe_files import pickled_weights_error, verify_finite_safetensors, verify_safetensors

PICKLED_MODEL_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json")
_SHOWN_KEYS = 4  # weight names quoted per kind in an error; the rest are counted


def load_causal_lm(source, *, what: str = "model", hint: str = "pass another model", revision=None, **kwargs):
    """``source`` loaded with `AutoModelForCausalLM` from safetensors only, checked as the module docstring says (a
    model object is returned as it is).

    Args:
        source (`str` or `PreTrainedModel`): a local folder or a Hub id.
        what (`str`): how errors name the model (``"base model"``, ``"--model_name_or_path"``...).
        hint (`str`): what errors tell the user to do instead, for a model that cannot be found.
        revision (*optional*): Hub revision.
        kwargs: passed to ``from_pretrained`` (``dtype``, ``attn_implementation``, ``quantization_config``...).

    Raises:
        `FileNotFoundError`: no such folder, or not reachable on the Hub (or not in the cache, offline).
        `ValueError`: not a causal LM, weights pickled only or truncated, missing or unexpected weights.
    """
    return load_checked_model(source, "AutoModelForCausalLM", check_causal_lm, what=what, hint=hint,
                              revision=revision, **kwargs)


def load_checked_model(source, auto_class: str, check_config, *, what: str = "model", hint: str = "pass another model",
                       revision=None, **kwargs):
    """`load_causal_lm` for any transformers auto class (``"AutoModelForSequenceClassification"``...): the same
    weight checks, with ``check_config(config, name)`` refusing a config of the wrong kind before any weight is read
    (a model object is returned as it is)."""
    if not isinstance(source, str):
        return source
    import transformers
    from transformers import AutoConfig

    name = f"{what} {source!r}"
    if os.path.isdir(source):
        check_local_weights(source)
    elif os.path.exists(source):
        raise ValueError(f"{name} is a file; pass the folder `save_pretrained()` wrote (or a Hub id)")
    elif source.startswith((".", "/", "~")) or source.count("/") > 1:
        raise FileNotFoundError(f"{name}: no such directory; {hint}")
    try:
        check_config(AutoConfig.from_pretrained(source, revision=revision), name)
        model, info = getattr(transformers, auto_class).from_pretrained(
            source, revision=revision, use_safetensors=True, output_loading_info=True, **kwargs)
    except OSError as error:
        if isinstance(error, PermissionError):
            raise
        if "safetensors" in str(error) and "does not appear to have" in str(error):
            # a Hub repo without safetensors weights (local folders were checked above)
            from huggingface_hub.constants import is_offline_mode

            expected = "model.safetensors" + (" in the local cache (offline)" if is_offline_mode() else "")
            raise pickled_weights_error(source, expected, convert_model_hint(source)) from None
        from huggingface_hub.constants import is_offline_mode

        # offline, transformers' own reason ("We couldn't connect...") adds nothing to ours
        problem = ("is not in the local Hugging Face cache and HF_HUB_OFFLINE is set" if is_offline_mode() else
                   f"could not be loaded ({' '.join(str(error).split())[:300]})")
        raise FileNotFoundError(f"{name} {problem}: download it first (`hf download {source}`, with network access), "
                                f"or {hint}") from None
    check_loading_info(info, name)
    return model


def check_local_weights(folder: str) -> None:
    """Verify a local model's safetensors files, structure and values (NaN or infinite weights are refused; reading
    them costs about 0.5-0.75 s per GB on a 2-core CPU, measured, next to a load that reads the same bytes), or refuse
    a folder whose weights are only pickled."""
    safe = sorted(name for name in os.listdir(folder) if name.endswith(".safetensors"))
    for name in safe:
        verify_safetensors(os.path.join(folder, name))
        verify_finite_safetensors(os.path.join(folder, name))
    pickled = next((name for name in PICKLED_MODEL_FILES if os.path.isfile(os.path.join(folder, name))), None)
    if not safe and pickled:
        raise pickled_weights_error(folder, "model.safetensors", convert_model_hint(folder), pickled)


def convert_model_hint(source: str) -> str:
    """How to turn a trusted pickled model into safetensors (for `dpo_ext.safe_files.pickled_weights_error`)."""
    return (f"`AutoModelForCausalLM.from_pretrained({source!r}, use_safetensors=False).save_pretrained(NEW_FOLDER)` "
            "(it writes model.safetensors), then pass NEW_FOLDER")


def check_causal_lm(config, name: str = "the model") -> None:
    """Refuse a config that does not describe a causal LM: its saved architecture is not one of transformers'
    causal LMs (``BertForMaskedLM``...), or it is an encoder family's model set up as an encoder
    (``is_decoder=False``: it attends to later tokens).

    Raises:
        `ValueError`: naming ``name`` and its architecture.
    """
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    architectures = list(getattr(config, "architectures", None) or [])
    described = ", ".join(architectures) or f"model type {getattr(config, 'model_type', '?')!r}"
    if architectures and not set(architectures) & set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values()):
        raise ValueError(f"{name} is a {described}, not a causal LM (a model that predicts each token from the "
                         "ones before it, such as *ForCausalLM): DPO trains and scores causal LMs only; pass one")
    # only the configs of families that can be encoders have is_decoder (transformers 5); False: bidirectional
    if getattr(config, "is_decoder", True) is False:
        raise ValueError(f"{name} is a {described} with is_decoder=False: it attends to later tokens, so it is not a "
                         "causal LM; pass a causal LM (or a model of that family trained with is_decoder=True)")


def check_loading_info(info: dict, name: str = "the model") -> None:
    """Refuse a load whose checkpoint did not match the model (``from_pretrained(..., output_loading_info=True)``'s
    second value): weights missing from the checkpoint (transformers initialised them at random), unexpected ones
    (not loaded anywhere), or shapes that differ.

    Raises:
        `ValueError`: naming ``name`` and the first weights of each kind.
    """
    problems = []
    for key, problem in (("missing_keys", "missing from the checkpoint (they would be initialised at random)"),
                         ("unexpected_keys", "in the checkpoint but not in the model"),
                         ("mismatched_keys", "of another shape in the checkpoint")):
        names = sorted(k if isinstance(k, str) else k[0] for k in info.get(key) or ())
        if names:
            shown = ", ".join(names[:_SHOWN_KEYS]) + (f" and {len(names) - _SHOWN_KEYS} more"
                                                      if len(names) > _SHOWN_KEYS else "")
            problems.append(f"{len(names)} weight{'s' * (len(names) > 1)} {problem}: {shown}")
    problems += [" ".join(str(message).split()) for message in info.get("error_msgs") or ()]
    if not problems:
        return
    names = [k for key in ("unexpected_keys",) for k in info.get(key) or ()]
    lora = any(".lora_" in k or ".base_layer." in k for k in names)
    advice = ("it was saved with LoRA layers inside it (`save_pretrained()` on a model after `get_peft_model()`): "
              "save the base before adding LoRA, or `model.merge_and_unload()` first, or load the adapter folder "
              "onto its base" if lora else
              "the checkpoint was saved from another architecture or configuration: save the model again with "
              "`save_pretrained()`, or pass the model these weights belong to")
    raise ValueError(f"{name} does not match its weights: {'; '.join(problems)}. {advice[0].upper()}{advice[1:]}")
