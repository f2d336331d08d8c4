"""Files we read from, or write for, other people, handled so that none of them can run code or leak a token.

- Weights are read from safetensors only. A pickled file (`*.bin`, `*.pt`) can run any code when it is loaded,
  so it is refused, never opened, with a message that says how to convert it where the file is trusted.
- A safetensors file is checked in full before it is loaded or published ([`verify_safetensors`]): its header
  must describe exactly the bytes that follow it. Only the header is read, never the tensors, so a multi-gigabyte
  file costs one small read. A file cut short by an interrupted save or download is caught here, with its name,
  instead of surfacing as a bare `SafetensorError` deep inside a loader, or on the Hub for everyone who downloads it.
- Values are checked where weights enter: NaN or infinite weights ([`verify_finite_safetensors`] for a file,
  [`check_finite_weights`] for a model in memory) are refused naming the file or model and the tensor, instead of
  scoring every completion NaN (an accuracy of 0.0) or training on a NaN loss. The structure check reads the header
  only; the value check reads every tensor, so callers choose where it is affordable (see each function).
- A training config is written and published as plain JSON/YAML with its Hub token fields removed
  ([`scrub_config`]); nothing is ever unpickled to recover one.

This module imports nothing heavy at import time (torch and safetensors only inside the value checks, no Hub
client): the trainer, the scorer loader and the Hub staging code all use it.
"""

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from typing import NoReturn

# The safetensors format: an 8-byte little-endian header length N, N bytes of JSON, then the data area. Its
# reference reader refuses headers over 100 MB; so do we (a larger "length" is a corrupt file, not a big model).
_HEADER_LENGTH_BYTES = 8
_MAX_HEADER_BYTES = 100_000_000
# Bits per element of every dtype the safetensors format names (sub-byte float types pack several per byte).
_DTYPE_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32,
    "I64": 64, "U64": 64, "F64": 64, "C64": 64,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}
_RESAVE = ("save it again (`model.save_pretrained(folder)` writes safetensors), or download it again if it came "
           "from elsewhere")

_TOKEN_KEYS = ("hub_token", "push_to_hub_token")
# Hub user access tokens start with "hf_"; masked wherever they show up, even when we were not told the token.
_TOKEN_PATTERN = re.compile(r"hf_[A-Za-z0-9]{8,}")


class WeightsFileError(ValueError):
    """A weights file that must not be loaded or published: pickled, truncated or corrupt."""


def verify_safetensors(path: str | os.PathLike) -> dict:
    """Check that `path` is a complete, well-formed safetensors file, reading only its header.

    Checked: the 8-byte header length fits in the file; the header is a JSON object; every tensor has a known
    `dtype`, a `shape` of non-negative integers and `data_offsets` `[begin, end]` whose length is exactly the
    tensor's size; together the tensors cover the data area from its first byte to its last without gaps or
    overlaps; and the file ends exactly where the last tensor does (shorter: truncated; longer: trailing bytes).

    Args:
        path (`str` or `os.PathLike`): the `.safetensors` file.

    Returns:
        `dict`: the header, tensor name -> `{"dtype", "shape", "data_offsets"}` (without `__metadata__`).

    Raises:
        `WeightsFileError`: naming the file, what is wrong with it and what to do.
        `FileNotFoundError`: `path` does not exist.
    """
    path = os.fspath(path)
    file_size = os.path.getsize(path)
    with open(path, "rb") as file:
        header, header_size = _read_header(path, file, file_size)
    data_size = file_size - _HEADER_LENGTH_BYTES - header_size
    spans = sorted((_tensor_span(path, name, entry), name) for name, entry in header.items())
    _check_coverage(path, spans, data_size)
    return header


def _read_header(path: str, file, file_size: int) -> tuple[dict, int]:
    """`(header without __metadata__, its length in bytes)` of an open safetensors file."""
    if file_size < _HEADER_LENGTH_BYTES:
        _fail(path, f"it is {file_size} bytes long, shorter than the 8-byte header length (empty or truncated file)")
    length = int.from_bytes(file.read(_HEADER_LENGTH_BYTES), "little")
    if length > file_size - _HEADER_LENGTH_BYTES:
        _fail(path, f"its header length says {length} bytes but only {file_size - _HEADER_LENGTH_BYTES} follow "
                    "(truncated, or not a safetensors file)")
    if length < 2 or length > _MAX_HEADER_BYTES:
        _fail(path, f"its header length {length} is not plausible (not a safetensors file)")
    try:
        header = json.loads(file.read(length).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        _fail(path, f"its header is not valid JSON ({error})")
    if not isinstance(header, dict):
        _fail(path, f"its header is a JSON {type(header).__name__}, not an object of tensors")
    metadata = header.pop("__metadata__", None)
    if metadata is not None and not (isinstance(metadata, dict)
                                     and all(isinstance(v, str) for v in metadata.values())):
        _fail(path, "its __metadata__ is not an object of strings")
    return header, length


def _tensor_span(path: str, name: str, entry) -> tuple[int, int]:
    """`(begin, end)` of one tensor in the data area, after checking that they match its dtype and shape."""
    if not isinstance(entry, dict):
        _fail(path, f"tensor {name!r} is described by a {type(entry).__name__}, not an object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in _DTYPE_BITS:
        _fail(path, f"tensor {name!r} has an unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(_is_count(n) for n in shape):
        _fail(path, f"tensor {name!r} has an invalid shape {shape!r}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_count(n) for n in offsets)
            and offsets[0] <= offsets[1]):
        _fail(path, f"tensor {name!r} has invalid data_offsets {offsets!r}")
    bits = math.prod(shape) * _DTYPE_BITS[dtype]
    begin, end = offsets
    if bits % 8 or end - begin != bits // 8:
        _fail(path, f"tensor {name!r} ({dtype}, shape {shape}) needs {bits / 8:g} bytes but its data_offsets "
                    f"{offsets} hold {end - begin}")
    return begin, end


def _check_coverage(path: str, spans: list[tuple[tuple[int, int], str]], data_size: int) -> None:
    """The tensors, sorted by offset, must tile the data area exactly: any gap, overlap or missing tail is damage."""
    position = 0
    for (begin, end), name in spans:
        if begin != position:
            what = "overlaps the tensor before it" if begin < position else f"leaves a gap of {begin - position} bytes"
            _fail(path, f"tensor {name!r} starts at byte {begin} of the data area and {what}")
        position = end
    if data_size < position:
        _fail(path, f"the tensors need {position} bytes of data but the file holds {data_size} bytes after its header "
                    f"(truncated: {position - data_size} bytes missing)")
    if data_size > position:
        _fail(path, f"{data_size - position} bytes follow the last tensor (trailing data after the end of the "
                    "file's tensors)")


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _fail(path: str, problem: str) -> NoReturn:
    raise WeightsFileError(f"{path} is not a complete safetensors file: {problem}. Do not use or publish it: "
                           f"{_RESAVE}.")


class NonFiniteWeightsError(WeightsFileError):
    """Weights holding NaN or infinite values (a diverged run, a bad conversion): named by file (or model) and tensor.

    Such weights load without complaint and then score every completion NaN, which accuracies count as wrong."""


def nonfinite_problem(named_tensors) -> str | None:
    """``"tensor 'x' holds NaN values (2 of 12)"`` for the first of ``(name, tensor)`` pairs that holds NaN or
    infinite values, or `None`; integer and bool tensors are skipped.

    One `torch.aminmax` pass per tensor (NaN and infinities propagate to its result), no copy: about 0.25 s per GB
    of float32 weights already in memory on a 2-core CPU, far less on a GPU (measured 2026-12, `dpo_ext` tests)."""
    import torch

    for name, tensor in named_tensors:
        tensor = tensor.detach()
        if not tensor.is_floating_point() or tensor.numel() == 0:
            continue
        low, high = torch.aminmax(tensor)
        if bool(torch.isfinite(low)) and bool(torch.isfinite(high)):
            continue
        nan = int(torch.isnan(tensor).sum())
        what, count = ("NaN", nan) if nan else ("infinite", int(torch.isinf(tensor).sum()))
        return f"tensor {name!r} holds {what} values ({count} of {tensor.numel()})"
    return None


def verify_finite_safetensors(path: str | os.PathLike) -> None:
    """Check the values of every floating-point tensor of a safetensors file (call `verify_safetensors` first).

    It reads the whole file: cheap for an adapter; about 0.5 s per GB of float32 weights (0.75 s per GB of
    bfloat16) from the page cache on a 2-core CPU, measured 2026-12 (the loader then reads the same bytes warm).

    Raises:
        `NonFiniteWeightsError`: naming the file and the first tensor that holds NaN or infinite values.
    """
    from safetensors import safe_open

    path = os.fspath(path)
    with safe_open(path, framework="pt") as file:
        problem = nonfinite_problem((name, file.get_tensor(name)) for name in file.keys())
    if problem:
        raise NonFiniteWeightsError(f"{path}: {problem}. These weights are damaged (a training run that diverged, or "
                                    "a bad conversion) and would score every completion NaN: do not use or publish "
                                    "them; use an earlier checkpoint, or train again.")


def check_finite_weights(model, what: str) -> None:
    """Check the values of a model's parameters in memory (`nonfinite_problem`: cheap, see there).

    Args:
        model: a `torch.nn.Module` (a PeftModel's adapter weights included).
        what (`str`): how the error names the model (``"the policy"``, ``"checkpoint-500"``...).

    Raises:
        `NonFiniteWeightsError`: naming ``what`` and the first parameter that holds NaN or infinite values.
    """
    problem = nonfinite_problem(model.named_parameters())
    if problem:
        raise NonFiniteWeightsError(f"{what}'s weight {problem.removeprefix('tensor ')}: the model is damaged (a "
                                    "training run that diverged, or a bad conversion); train or load it from an "
                                    "earlier checkpoint, or check how it was made.")


def pickled_weights_error(where: str, expected: str, convert: str, pickled: str | None = None) -> WeightsFileError:
    """The error for weights that exist only as a pickle (or not at all), raised without opening any file.

    Args:
        where (`str`): the folder, or Hub repo id, being loaded.
        expected (`str`): the safetensors file that should be there.
        convert (`str`): how to convert the pickle, to be done only where the file is trusted.
        pickled (`str`, *optional*): the pickled file found instead (`adapter_model.bin`, ...), when known.
    """
    found = f"has {pickled} but no {expected}" if pickled else f"has no {expected}"
    return WeightsFileError(
        f"{where} {found}: dpo_ext loads weights from safetensors only, because loading a pickled .bin file can run "
        f"any code it contains. If you trust where the weights come from, convert them once, outside dpo_ext: "
        f"{convert}; then load the converted weights.")


def convert_adapter_hint() -> str:
    """How to turn a trusted ``adapter_model.bin`` into ``adapter_model.safetensors`` (for `pickled_weights_error`)."""
    return ("`safetensors.torch.save_file(torch.load(\"adapter_model.bin\", weights_only=True), "
            "\"adapter_model.safetensors\")` in that folder")


def read_adapter_config(path: str | os.PathLike) -> dict:
    """The JSON object in an ``adapter_config.json``; a `ValueError` naming the file when it is not one.

    PEFT's own reader raises a bare `JSONDecodeError` that names no file; the scorer loader and the Hub staging code
    both read the file through here first.
    """
    path = os.fspath(path)
    with open(path, encoding="utf-8") as file:
        text = file.read()
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}): the adapter was not saved completely, or the file was "
                         "edited by hand; save the adapter again with `save_pretrained()`, or fix the file") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a JSON object of adapter settings, got a {type(config).__name__}; save "
                         "the adapter again with `save_pretrained()`")
    return config


def redact(text: str, secrets: Sequence[str | None] = ()) -> str:
    """`text` with every secret in `secrets`, and anything shaped like a Hub token, replaced by `<redacted>`."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "<redacted>")
    return _TOKEN_PATTERN.sub("<redacted>", text)


def scrub_config(config: Mapping, secrets: Sequence[str] = ()) -> dict:
    """`config` as plain JSON/YAML values with Hub token fields dropped and anything that looks like a token masked,
    so that it is safe to write next to an adapter and to publish.

    Args:
        config (`Mapping`): training settings, e.g. `TrainingArguments.to_dict()`.
        secrets (`Sequence[str]`): strings (the Hub token) to mask wherever they appear.

    Returns:
        `dict` of str, int, float, bool, None, lists and dicts only.
    """
    def clean(value):
        if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:  # numpy / torch scalars
            value = value.item()
        if isinstance(value, Mapping):
            return {str(k): clean(v) for k, v in value.items() if str(k) not in _TOKEN_KEYS}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        if isinstance(value, str):
            return redact(value, secrets)
        if value is None or isinstance(value, (bool, int, float)):
            return value
        return redact(str(value), secrets)  # enums, dtypes, paths: readable without custom YAML tags

    return clean(dict(config))
