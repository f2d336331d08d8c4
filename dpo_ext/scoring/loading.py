"""Loading a scorer from a saved adapter (local directory or Hub repo): base model + adapter + reference + tokenizer.

Works with adapters saved by `PLDPOTrainer` and by `trl.DPOTrainer`. When TRL re-trained an existing adapter it
kept a frozen copy of the starting adapter as the reference and saved it in a ``ref/`` subfolder; that copy is then
the reference (``ref_adapter="auto"``), since it, not the bare base model, is what the adapter was trained against.

Weights are loaded from safetensors only: a pickled adapter or model (``*.bin``) could run code when loaded, so a
folder or repo that has only those is refused with a message saying how to convert it. A local safetensors file is
checked in full first (`dpo_ext.safe_files.verify_safetensors`), so a truncated file is reported by name.
"""

import json
import logging
import os

from dpo_ext.hub.ids import looks_like_hub_id, offline
from dpo_ext.reference import REF_ADAPTER_NAME as TRL_REF_ADAPTER  # TRL saves its frozen copy there too
from dpo_ext.reference import REFERENCE_RECORD
from dpo_ext.safe_files import convert_adapter_hint, pickled_weights_error, read_adapter_config, verify_safetensors

logger = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_PICKLED_ADAPTER = "adapter_model.bin"
_PICKLED_MODEL_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json")


def _is_local(path: str) -> bool:
    return os.path.isdir(path)


def _has_file(model_id: str, filename: str, revision=None) -> bool:
    if _is_local(model_id):
        return os.path.isfile(os.path.join(model_id, filename))
    if offline():
        try:
            from huggingface_hub import try_to_load_from_cache

            return isinstance(try_to_load_from_cache(model_id, filename, revision=revision), str)
        except Exception:  # noqa: BLE001 - a malformed id is simply "not there"
            return False
    try:
        from huggingface_hub import file_exists

        return file_exists(model_id, filename, revision=revision)
    except Exception:  # noqa: BLE001 - unreachable Hub, bad id: the loader below raises the real error
        return False


def adapter_config(model_id: str, revision=None):
    """The `PeftConfig` of an adapter directory or repo, or `None` when it holds no ``adapter_config.json``."""
    if os.path.isfile(model_id):
        raise ValueError(f"{model_id} is a file; pass the directory of a saved adapter or model (or a Hub repo id)")
    if not _is_local(model_id) and os.path.sep in model_id and model_id.startswith((".", "/")):
        raise FileNotFoundError(f"{model_id}: no such directory")
    if not _has_file(model_id, ADAPTER_CONFIG, revision):
        return None
    from peft import PeftConfig

    if _is_local(model_id):
        read_adapter_config(os.path.join(model_id, ADAPTER_CONFIG))  # PEFT's reader names no file when it fails
    try:
        return PeftConfig.from_pretrained(model_id, revision=revision)
    except json.JSONDecodeError as error:  # a Hub repo's copy (a local one was checked above)
        raise ValueError(f"{model_id}/{ADAPTER_CONFIG} is not valid JSON ({error}): the repo's adapter config is "
                         "damaged; ask its owner to save the adapter again, or download and fix the file") from None


def _load_tokenizer(model_id, base_id, revision):
    from transformers import AutoTokenizer

    for source in (model_id, base_id):
        if source is None:
            continue
        if _is_local(source) and not os.path.isfile(os.path.join(source, "tokenizer_config.json")):
            continue
        try:
            return AutoTokenizer.from_pretrained(source, revision=revision if source == model_id else None)
        except (OSError, ValueError):
            continue
    raise ValueError(f"no tokenizer found in {model_id} or its base model {base_id}; pass tokenizer=")


def _load_model(source, dtype, revision=None, what: str = "model", hint: str = "pass another model"):
    """``source`` loaded (a model object is returned as it is); ``what`` and ``hint`` word the not-found error."""
    if not isinstance(source, str):
        return source
    from transformers import AutoModelForCausalLM

    if _is_local(source):
        _check_local_model_weights(source)
    elif os.path.exists(source) or not looks_like_hub_id(source):
        # A path, not a Hub id: transformers would answer "Repo id must be in the form 'repo_name'...".
        raise FileNotFoundError(f"{what} {source!r}: no such directory; {hint}")
    kwargs = {"dtype": dtype} if dtype is not None else {}
    try:
        # use_safetensors=True: transformers raises instead of falling back to pickled weights.
        return AutoModelForCausalLM.from_pretrained(source, revision=revision, use_safetensors=True, **kwargs)
    except OSError as error:
        if isinstance(error, PermissionError):
            raise
        if "safetensors" not in str(error) or "does not appear to have" not in str(error):
            # Offline, transformers' own reason ("We couldn't connect...") adds nothing to ours.
            problem = "is not in the local Hugging Face cache and HF_HUB_OFFLINE is set" if offline() else \
                f"could not be loaded from the Hub ({' '.join(str(error).split())[:300]})"
            raise FileNotFoundError(f"{what} {source!r} {problem}: download it first (`hf download {source}`, with "
                                    f"network access), or {hint}") from error
        # Raised for a Hub repo without safetensors weights (local folders were checked above).
        expected = "model.safetensors or model.safetensors.index.json" + (" in the local cache (offline)"
                                                                           if offline() else "")
        raise pickled_weights_error(source, expected, _convert_model_hint(source)) from error


def _check_local_model_weights(folder: str) -> None:
    """Verify a local model's safetensors files, or refuse a folder whose weights are only pickled."""
    safe = sorted(name for name in os.listdir(folder) if name.endswith(".safetensors"))
    for name in safe:
        verify_safetensors(os.path.join(folder, name))
    pickled = next((name for name in _PICKLED_MODEL_FILES if os.path.isfile(os.path.join(folder, name))), None)
    if not safe and pickled:
        raise pickled_weights_error(folder, "model.safetensors", _convert_model_hint(folder), pickled)


def _convert_model_hint(source: str) -> str:
    return (f"`AutoModelForCausalLM.from_pretrained({source!r}, use_safetensors=False).save_pretrained(NEW_FOLDER)` "
            "(it writes model.safetensors), then pass NEW_FOLDER")


def _require_safe_adapter(model_id: str, revision=None, subfolder: str = "") -> None:
    """Refuse an adapter whose weights are not a complete ``adapter_model.safetensors``.

    Local folders: the file is verified in full; a folder with only ``adapter_model.bin`` is refused without
    opening it. Hub repos: refused when the repo lists no ``adapter_model.safetensors``.

    Args:
        model_id (`str`): local folder or Hub repo id of the adapter.
        revision (*optional*): Hub revision.
        subfolder (`str`): the adapter's subfolder (``"ref"`` for TRL's reference copy), or ``""``.

    Raises:
        `WeightsFileError`: pickled-only or corrupt weights. `FileNotFoundError`: no weights at all.
    """
    where = f"{model_id.rstrip('/')}/{subfolder}" if subfolder else model_id
    if _is_local(model_id):
        folder = os.path.join(model_id, subfolder)
        if os.path.isfile(os.path.join(folder, ADAPTER_WEIGHTS)):
            verify_safetensors(os.path.join(folder, ADAPTER_WEIGHTS))
            return
        has_pickle = os.path.isfile(os.path.join(folder, _PICKLED_ADAPTER))
    else:
        prefix = f"{subfolder}/" if subfolder else ""
        if _has_file(model_id, prefix + ADAPTER_WEIGHTS, revision):
            return
        has_pickle = _has_file(model_id, prefix + _PICKLED_ADAPTER, revision)
    if has_pickle:
        raise pickled_weights_error(where, ADAPTER_WEIGHTS, convert_adapter_hint(), _PICKLED_ADAPTER)
    in_cache = " in the local cache (offline)" if offline() and not _is_local(model_id) else ""
    raise FileNotFoundError(f"{where} has an {ADAPTER_CONFIG} but no {ADAPTER_WEIGHTS}{in_cache}: pass the folder "
                            "written by `save_pretrained()`")


def _load_ref_adapter(model, model_id, ref_adapter, revision):
    """Load the reference adapter named ``ref_adapter`` (a subfolder of the adapter, or a directory); its name."""
    if ref_adapter == "auto":
        if not _has_file(model_id, f"{TRL_REF_ADAPTER}/{ADAPTER_CONFIG}", revision):
            return None
        ref_adapter = TRL_REF_ADAPTER
        logger.info("%s has a '%s/' adapter (TRL's frozen reference copy): using it as the reference.", model_id,
                    TRL_REF_ADAPTER)
    if _has_file(model_id, f"{ref_adapter}/{ADAPTER_CONFIG}", revision):
        _require_safe_adapter(model_id, revision, subfolder=ref_adapter)
        if _is_local(model_id):
            read_adapter_config(os.path.join(model_id, ref_adapter, ADAPTER_CONFIG))
            model.load_adapter(os.path.join(model_id, ref_adapter), adapter_name=ref_adapter, is_trainable=False)
        else:
            model.load_adapter(model_id, adapter_name=ref_adapter, subfolder=ref_adapter, revision=revision,
                               is_trainable=False)
        return ref_adapter
    if _is_local(ref_adapter) and os.path.isfile(os.path.join(ref_adapter, ADAPTER_CONFIG)):
        _require_safe_adapter(ref_adapter)
        read_adapter_config(os.path.join(ref_adapter, ADAPTER_CONFIG))
        name = os.path.basename(os.path.normpath(ref_adapter))
        model.load_adapter(ref_adapter, adapter_name=name, is_trainable=False)
        return name
    raise ValueError(f"ref_adapter={ref_adapter!r}: neither a subfolder of {model_id} with an {ADAPTER_CONFIG} "
                     "nor an adapter directory")


def _refuse_unrecoverable_reference(model_id) -> None:
    """An adapter trained against a frozen copy of its *starting* adapter cannot be scored against the base model."""
    record_path = os.path.join(model_id, REFERENCE_RECORD)
    if not (_is_local(model_id) and os.path.isfile(record_path)):
        return
    with open(record_path) as f:
        reference = json.load(f).get("reference")
    if reference not in (None, "disabled_adapters"):
        raise ValueError(
            f"{model_id} was trained against reference={reference!r} ({REFERENCE_RECORD}), not the base model with "
            "adapters disabled, so scoring against the base model would be wrong. Pass ref_adapter= (the starting "
            "adapter's directory) or ref_model=, or use reference_free=True."
        )


def load_scorer(cls, model_id_or_path: str, *, base_model=None, ref_model=None, ref_adapter="auto", tokenizer=None,
                dtype=None, device=None, revision=None, reference_free: bool = False, **scorer_kwargs):
    """Build an `ImplicitRewardScorer` from a saved adapter (or a full model with an explicit reference).

    Args:
        model_id_or_path (`str`): local directory or Hub repo id of a PEFT adapter (or of a full model).
        base_model (`str` or `PreTrainedModel`, *optional*): overrides the adapter's ``base_model_name_or_path``.
        ref_model (`str` or `PreTrainedModel`, *optional*): an explicit reference model.
        ref_adapter (`str` or `None`, defaults to ``"auto"``): ``"auto"`` uses a ``ref/`` adapter saved next to the
            adapter (TRL's frozen reference copy) when there is one, else the base model with adapters disabled;
            `None` always uses the base model; another string names a subfolder or directory holding the
            reference adapter.
        tokenizer (*optional*): defaults to the adapter directory's tokenizer, else the base model's.
        dtype (*optional*): dtype to load the weights in.
        device (*optional*): defaults to CUDA when available, else CPU.
        reference_free (`bool`): allow a full model with no reference; scores are then ``beta * log pi``.
        scorer_kwargs: passed to `ImplicitRewardScorer` (``beta``, ``max_length``, ``tokenization``, ...).
    """
    import torch

    config = adapter_config(model_id_or_path, revision)
    if config is None:
        if ref_model is None and not reference_free:
            raise ValueError(
                f"{model_id_or_path} is not a PEFT adapter (no {ADAPTER_CONFIG}), so it has no built-in reference "
                "model. Pass ref_model= (the model it was trained from), or use reference_free=True."
            )
        model = _load_model(model_id_or_path, dtype, revision)
        base_id, ref_adapter = model_id_or_path, None
    else:
        from peft import PeftModel

        base_id = base_model if isinstance(base_model, str) else config.base_model_name_or_path
        if base_model is None and not base_id:
            raise ValueError(f"{model_id_or_path}/{ADAPTER_CONFIG} names no base model; pass base_model=")
        _require_safe_adapter(model_id_or_path, revision)  # before the base model: fail fast, nothing loaded
        recorded = "" if base_model is not None else f" (named by {model_id_or_path}/{ADAPTER_CONFIG})"
        base = _load_model(base_model if base_model is not None else base_id, dtype, what=f"base model{recorded}",
                           hint="pass the base model's local folder or Hub id with base_model= (`--base-model` on "
                                "the command line)")
        model = PeftModel.from_pretrained(base, model_id_or_path, revision=revision, is_trainable=False)
        if ref_model is None and ref_adapter is not None:
            ref_adapter = _load_ref_adapter(model, model_id_or_path, ref_adapter, revision)
        else:
            ref_adapter = None
        if ref_model is None and ref_adapter is None and not reference_free:
            _refuse_unrecoverable_reference(model_id_or_path)
    if tokenizer is None:
        tokenizer = _load_tokenizer(model_id_or_path, base_id if isinstance(base_id, str) else None, revision)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = model.to(device).eval()
    if ref_model is not None:
        ref_model = _load_model(ref_model, dtype, what="reference model",
                                hint="pass its local folder or Hub id with ref_model= (`--ref-model`)")
        ref_model = ref_model.to(device).eval()
    return cls(model, tokenizer, ref_model=ref_model, ref_adapter=ref_adapter, reference_free=reference_free,
               **scorer_kwargs)
