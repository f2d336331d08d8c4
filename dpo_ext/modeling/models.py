"""What a model is underneath its wrappers, what its forward accepts, and its state while scoring (eval mode, which
adapter is active).
"""

import contextlib
import inspect


def bare_model(model):
    """The transformers model inside a DDP/accelerate wrapper and/or a PeftModel."""
    model = getattr(model, "module", model)  # DDP / accelerate wrapper
    if hasattr(model, "get_base_model"):  # PeftModel
        model = model.get_base_model()
    return model


def accepts_logits_to_keep(model) -> bool:
    """Whether the model can compute logits for selected positions only (``logits_to_keep``)."""
    return "logits_to_keep" in inspect.signature(bare_model(model).forward).parameters


def position_limit(model) -> int | None:
    """How many positions the model can attend over (learned position tables index out of range past it), or None."""
    config = getattr(bare_model(model), "config", None)
    return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)


def vocabulary_size(model) -> int | None:
    """Rows of the model's output embedding (the token ids it can score), or None when it has none."""
    head = bare_model(model).get_output_embeddings() if hasattr(bare_model(model), "get_output_embeddings") else None
    if head is not None and getattr(head, "weight", None) is not None:
        return int(head.weight.shape[0])
    return getattr(getattr(bare_model(model), "config", None), "vocab_size", None)


def check_tokenizer_fits(model, tokenizer, what: str = "the model") -> None:
    """Refuse a tokenizer whose ids run past the model's vocabulary (torch would fail with a bare IndexError)."""
    rows = vocabulary_size(model)
    if rows is not None and len(tokenizer) > rows:
        raise ValueError(f"the tokenizer has {len(tokenizer)} tokens but {what} scores only {rows} token ids: it was "
                         "trained with another tokenizer, or tokens were added without "
                         "`model.resize_token_embeddings(len(tokenizer))`")


def vocabulary_problem(ids, vocab_size: int | None) -> str | None:
    """What is wrong when a token id in ``ids`` is outside ``0 .. vocab_size - 1`` (it would index past the
    embedding), naming the first such id, or `None`."""
    if vocab_size is None or not ids:
        return None
    low, high = min(ids), max(ids)
    bad = low if low < 0 else high if high >= vocab_size else None
    if bad is None:
        return None
    return (f"token id {bad} is outside the model's vocabulary (0..{vocab_size - 1}); tokenize with the model's own "
            "tokenizer")


def compute_dtype(model):
    """The floating dtype the model computes in (its input embeddings'), float32 for integer (quantized) weights."""
    import torch  # not at module level: the CLI reads this module and must start without torch

    embeddings = bare_model(model).get_input_embeddings()
    dtype = embeddings.weight.dtype if embeddings is not None else next(model.parameters()).dtype
    return dtype if dtype.is_floating_point else torch.float32


@contextlib.contextmanager
def eval_mode(*models):
    """Put models (None entries skipped) in eval mode for a while, then back in the mode each was in."""
    states = [(m, m.training) for m in models if m is not None]
    for m, _ in states:
        m.eval()
    try:
        yield
    finally:
        for m, training in states:
            m.train(training)


def check_device(device) -> None:
    """Refuse a device this machine does not have (``"cuda"`` without a CUDA GPU, ``"cuda:3"`` with two, a name torch
    does not know) before any model loads: torch would say so only at the first tensor moved, in a traceback."""
    import torch

    if device is None:
        return
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device {device!r} is not a device torch knows ({error}); use cpu, cuda or cuda:N") from None
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device {device!r}: this machine has no CUDA GPU that torch can use; use cpu")
        if parsed.index is not None and parsed.index >= count:
            raise ValueError(f"device {device!r}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}")
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r}: MPS is not available on this machine; use cpu")


@contextlib.contextmanager
def on_device(model, device):
    """Keep ``model`` on ``device`` for a while, then move it back. FSDP and DeepSpeed keep the model on the CPU until
    they shard it; work done before that (precomputed reference log-probs) belongs on the accelerator."""
    import torch

    device = torch.device(device)
    previous = next(model.parameters()).device
    if previous == device:
        yield
        return
    model.to(device)
    try:
        yield
    finally:
        model.to(previous)


@contextlib.contextmanager
def active_adapter(model, name):
    """Make adapter ``name`` the active one for a while, leaving every parameter's requires_grad as it was."""
    previous = model.active_adapter
    if name is None or name == previous:
        yield
        return
    trainable = [p for p in model.parameters() if p.requires_grad]
    model.set_adapter(name, inference_mode=True)
    try:
        yield
    finally:
        model.set_adapter(previous, inference_mode=True)
        for p in trainable:
            p.requires_grad_(True)


def __getattr__(name):
    # the tokenizer loader moved to dpo_ext.modeling.tokenizers (this module is about models); the old path works
    if name == "load_tokenizer":
        import warnings

        from dpo_ext.modeling.tokenizers import load_tokenizer

        warnings.warn("dpo_ext.modeling.models.load_tokenizer moved: import "
                      "dpo_ext.modeling.tokenizers.load_tokenizer", DeprecationWarning, stacklevel=2)
        return load_tokenizer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
