"""Model state while scoring: eval mode, which adapter is active, and whether prefix sharing is possible."""

import contextlib
import inspect


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


def prefix_sharing_problem(model) -> str | None:
    """Why prefix sharing cannot be used with ``model`` (read from its config), or `None`."""
    config = getattr(model, "config", None)
    if config is None:
        return "the model has no config"
    if getattr(config, "is_encoder_decoder", False):
        return "encoder-decoder models are not supported"
    implementation = getattr(config, "_attn_implementation", None)
    if implementation not in ("eager", "sdpa"):
        return f"attn_implementation={implementation!r} does not take a custom 4-D float mask (use eager or sdpa)"
    window = getattr(config, "sliding_window", None)
    if (window and getattr(config, "use_sliding_window", True)) or "sliding_attention" in (
            getattr(config, "layer_types", None) or ()):
        return "sliding-window attention is not expressed by the prefix-sharing mask"
    bare = model.get_base_model() if hasattr(model, "get_base_model") else model
    if "position_ids" not in inspect.signature(bare.forward).parameters:
        return "the model's forward takes no position_ids"
    return None
