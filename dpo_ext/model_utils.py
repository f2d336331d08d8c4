"""What a policy is underneath its wrappers, and what its forward accepts."""

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
