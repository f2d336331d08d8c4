"""Loading a scorer from a saved adapter (local directory or Hub repo): base model + adapter + reference + tokenizer.

Works with adapters saved by `PLDPOTrainer` and by `trl.DPOTrainer`. When TRL re-trained an existing adapter it
kept a frozen copy of the starting adapter as the reference and saved it in a ``ref/`` subfolder; that copy is then
the reference (``ref_adapter="auto"``), since it, not the bare base model, is what the adapter was trained against.

The DPO beta and the reference the adapter was trained against come from its training record
(`dpo_ext.reference.record`): the beta defaults to the recorded one, and an adapter trained against anything but the
base model with adapters disabled is refused when nothing else is given as the reference.

Weights are loaded from safetensors only: a pickled adapter or model (``*.bin``) could run code when loaded, so a
folder or repo that has only those is refused with a message saying how to convert it. A local adapter file is
checked in full first (`dpo_ext.safe_files.verify_safetensors`), so a truncated file is reported by name, and so
are its values (`verify_finite_safetensors`): NaN or infinite weights would score every completion NaN. Models (the
base, a reference) go through the one causal-LM loader, `dpo_ext.modeling.loading.load_causal_lm`, which does the same
for local folders; Hub models are not read twice: NaN rewards they cause are refused by the scorer, naming the row.
"""

import json
import logging
import os

from dpo_ext.locations import offline
from dpo_ext.modeling.loading import load_causal_lm
from dpo_ext.modeling.models import check_device
from dpo_ext.modeling.tokenizers import ensure_pad_token, load_tokenizer
from dpo_ext.reference.record import CONFIG_FILES, RECORD_FILE, choose_beta, read_training_record
from dpo_ext.reference.sources import REF_ADAPTER_NAME as TRL_REF_ADAPTER  # TRL saves its frozen copy there too
from dpo_ext.safe_files import (
    convert_adapter_hint,
    pickled_weights_error,
    read_adapter_config,
    verify_finite_safetensors,
    verify_safetensors,
)

logger = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_PICKLED_ADAPTER = "adapter_model.bin"


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


def _load_model(source, dtype, revision=None, what: str = "model", hint: str = "pass another model"):
    """``source`` loaded by the one causal-LM loader (`dpo_ext.modeling.loading.load_causal_lm`: safetensors only,
    verified, values checked for local folders, a causal LM whose weights match it); a model object is returned as
    it is."""
    kwargs = {"dtype": dtype} if dtype is not None else {}
    return load_causal_lm(source, what=what, hint=hint, revision=revision, **kwargs)


def _require_safe_adapter(model_id: str, revision=None, subfolder: str = "") -> None:
    """Refuse an adapter whose weights are not a complete ``adapter_model.safetensors``.

    Local folders: the file is verified in full, structure and values (NaN or infinite weights are refused); a
    folder with only ``adapter_model.bin`` is refused without opening it. Hub repos: refused when the repo lists no
    ``adapter_model.safetensors``.

    Args:
        model_id (`str`): local folder or Hub repo id of the adapter.
        revision (*optional*): Hub revision.
        subfolder (`str`): the adapter's subfolder (``"ref"`` for TRL's reference copy), or ``""``.

    Raises:
        `WeightsFileError`: pickled-only or corrupt weights (`NonFiniteWeightsError`: NaN or infinite values).
        `FileNotFoundError`: no weights at all.
    """
    where = f"{model_id.rstrip('/')}/{subfolder}" if subfolder else model_id
    if _is_local(model_id):
        folder = os.path.join(model_id, subfolder)
        if os.path.isfile(os.path.join(folder, ADAPTER_WEIGHTS)):
            verify_safetensors(os.path.join(folder, ADAPTER_WEIGHTS))
            verify_finite_safetensors(os.path.join(folder, ADAPTER_WEIGHTS))  # small: its values are read too
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


def _record_folder(model_id: str, revision=None) -> str | None:
    """A local folder holding ``model_id``'s training record files (those it has): the folder itself, or for a Hub
    repo the cache snapshot they are downloaded into. `None` when none can be had (offline and not cached...)."""
    if _is_local(model_id):
        return model_id
    folder = None
    for name in (RECORD_FILE, *CONFIG_FILES):
        if not _has_file(model_id, name, revision):
            continue
        try:
            from huggingface_hub import hf_hub_download

            folder = os.path.dirname(hf_hub_download(model_id, name, revision=revision))
        except Exception as error:  # noqa: BLE001 - a record that cannot be fetched is reported, not fatal
            logger.warning("Could not read %s of %s (%s).", name, model_id, error)
    return folder


def _refuse_unrecoverable_reference(model_id: str, record) -> None:
    """An adapter trained against a frozen copy of its *starting* adapter cannot be scored against the base model."""
    if record is not None and record.reference not in (None, "disabled_adapters"):
        raise ValueError(
            f"{model_id} was trained against reference={record.reference!r} ({RECORD_FILE}), "
            "not the base model with adapters disabled, so scoring against the base model would be wrong. Pass "
            "ref_adapter= (the starting adapter's directory) or ref_model=, or use reference_free=True."
        )


def load_scorer(cls, model_id_or_path: str, *, base_model=None, ref_model=None, ref_adapter="auto", tokenizer=None,
                dtype=None, device=None, revision=None, reference_free: bool = False, beta: float | None = None,
                override_beta: bool = False, **scorer_kwargs):
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
        beta (`float`, *optional*): the DPO beta; defaults to the one recorded with the adapter
            (``dpo_ext_reference.json``, else a ``training_config.yaml``/``.json``; never the pickled
            ``training_args.bin``), else 0.1 with a logged note. One that differs from the recorded beta is refused.
        override_beta (`bool`, defaults to `False`): score with a ``beta`` that differs from the recorded one (with a
            warning) instead of refusing it.
        scorer_kwargs: passed to `ImplicitRewardScorer` (``max_length``, ``tokenization``, ...).

    The scorer's `beta_source` says where its beta came from: the record's file, ``"argument"`` or ``"default"``.
    """
    import torch

    check_device(device)
    config = adapter_config(model_id_or_path, revision)
    record_folder = _record_folder(model_id_or_path, revision)  # before any weights load: a bad record fails fast
    beta, beta_source = choose_beta(record_folder, beta, override_beta)
    record = read_training_record(record_folder) if record_folder is not None else None
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
            _refuse_unrecoverable_reference(model_id_or_path, record)
    if tokenizer is None:
        tokenizer = load_tokenizer(model_id_or_path, "tokenizer", revision,
                                   fallback=base_id if isinstance(base_id, str) else None)
    ensure_pad_token(tokenizer)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = model.to(device).eval()
    if ref_model is not None:
        ref_model = _load_model(ref_model, dtype, what="reference model",
                                hint="pass its local folder or Hub id with ref_model= (`--ref-model`)")
        ref_model = ref_model.to(device).eval()
    return cls(model, tokenizer, ref_model=ref_model, ref_adapter=ref_adapter, reference_free=reference_free,
               beta=beta, beta_source=beta_source, **scorer_kwargs)
