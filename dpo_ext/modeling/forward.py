"""The one forward pass behind every completion log-prob: run the model, compute the LM head only where a log-prob is
needed, pick the log-probs of the target tokens. Plain rows, packed rows and the prompt-cache passes all go through
`target_logps`; `block_attention_mask` is the one mask that lets completions share a prompt.

A *target* is (row, position, label): the log-prob of token ``label`` predicted by the logits at ``position`` of
``row``. Targets are given as three tensors of the same shape.
"""

import torch

from dpo_ext.logps import linear_target_logps, picked_position_logps
from dpo_ext.modeling.models import accepts_logits_to_keep, bare_model

# Logits are computed (fused head) or upcast to float32 (other heads) at most 2**22 elements (16 MiB) at a time
MAX_UPCAST_ELEMENTS = 2**22

# Model types whose logits are exactly ``lm_head(final hidden states)``: no scale, soft-cap or temperature after the
# head (Gemma 2, Cohere, Granite... have one). Each is checked against its own forward in the tests.
FUSED_HEAD_MODEL_TYPES = frozenset({"gpt2", "gpt_neox", "llama", "mistral", "qwen2", "qwen3"})


def _repeat_rows(value, copies: int):
    if not isinstance(value, torch.Tensor) or copies == 1:
        return value
    return value.repeat(copies, *([1] * (value.dim() - 1)))  # (copies * R, ...)


def fusable_lm_head(model) -> torch.nn.Linear | None:
    """The model's output embedding when `linear_target_logps` can stand in for it, else `None`.

    It must be a plain ``nn.Linear`` (a LoRA or modules_to_save wrapper has its own forward) holding its whole weight
    (FSDP2 shards it as a DTensor, ZeRO-3 leaves an empty placeholder), on a model listed in
    `FUSED_HEAD_MODEL_TYPES` that takes ``logits_to_keep``.
    """
    bare = bare_model(model)
    if getattr(getattr(bare, "config", None), "model_type", None) not in FUSED_HEAD_MODEL_TYPES:
        return None
    head = bare.get_output_embeddings()
    if type(head) is not torch.nn.Linear or type(head.weight) is not torch.nn.Parameter or head.weight.numel() == 0:
        return None
    return head if accepts_logits_to_keep(model) else None


def _hidden_before_head(model, head: torch.nn.Linear, inputs: dict, keep: torch.Tensor):
    """Run ``model`` with the head skipped: the final hidden states it would project at ``keep``, (R, M, H), and the
    autocast dtype the head would have run under (None: no autocast), since accelerate autocasts inside the forward
    only."""
    captured = []

    def skip_head(module, args):
        device = args[0].device.type
        autocast = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None
        captured.append((args[0], autocast))
        return (args[0][..., :0, :],)  # the head projects nothing; the model returns empty logits

    handle = head.register_forward_pre_hook(skip_head)
    try:
        model(**inputs, logits_to_keep=keep)
    finally:
        handle.remove()
    return captured[0]


def target_logps(model, inputs: dict, rows, positions, labels, adapters=None) -> torch.Tensor:
    """Log-probs of targets from one forward pass of ``model`` over ``inputs`` (R rows).

    The LM head runs only at the positions some target needs (``logits_to_keep`` with a 1-D index tensor; models
    without that argument compute every position and the kept ones are selected afterwards). Where the head is a
    plain linear layer (`fusable_lm_head`), it is fused with the log-softmax (`linear_target_logps`), so no
    (positions, vocabulary) logits exist at once.

    Args:
        inputs (`dict`): keyword arguments of the forward (``input_ids`` (R, L), masks, a cache...).
        rows, positions, labels (`torch.Tensor`): the targets, any shape S (long).
        adapters (`list[str]`, *optional*): run every row once per adapter name in the same forward (PEFT
            ``adapter_names``, ``"__base__"`` = adapters off, eval mode only); ``None``: once, as the model is.

    Returns:
        `torch.Tensor`: (copies, *S) float32, copies = ``len(adapters)`` or 1.
    """
    copies = len(adapters) if adapters else 1
    num_rows = inputs["input_ids"].shape[0]
    keep = torch.unique(positions) if positions.numel() else positions.new_zeros(1)  # sorted
    inputs = {name: _repeat_rows(value, copies) for name, value in inputs.items()}
    if adapters:
        inputs["adapter_names"] = [name for name in adapters for _ in range(num_rows)]
    kept = keep.numel()
    column = torch.searchsorted(keep, positions.contiguous())  # where each target's position landed among kept
    copy = torch.arange(copies, device=rows.device).view(-1, *([1] * rows.dim()))  # (copies, 1, ...)
    flat_index = ((copy * num_rows + rows) * kept + column)  # (copies, *S) into (copies * R * M)
    head = fusable_lm_head(model)
    if head is not None:
        hidden, autocast = _hidden_before_head(model, head, inputs, keep)  # (copies * R, M, H)
        with torch.autocast(hidden.device.type, dtype=autocast, enabled=autocast is not None):
            return linear_target_logps(hidden.reshape(-1, hidden.shape[-1]), head.weight, head.bias, flat_index,
                                       labels.expand_as(flat_index), MAX_UPCAST_ELEMENTS)
    if accepts_logits_to_keep(model):
        logits = model(**inputs, logits_to_keep=keep).logits  # (copies * R, M, V)
    else:
        logits = model(**inputs).logits[:, keep]
    flat = logits.reshape(-1, logits.shape[-1])  # (copies * R * M, V)
    return picked_position_logps(flat, flat_index, labels.expand_as(flat_index), MAX_UPCAST_ELEMENTS)


def plain_rows_logps(model, input_ids, attention_mask, completion_mask, adapters=None):
    """Per-token completion log-probs of plain ``prompt + completion`` rows (right-padded): the one implementation
    behind the trainer's plain batches and the scorer's plain path.

    Args:
        input_ids, attention_mask, completion_mask (`torch.Tensor`): (N, T); ``completion_mask`` is 1 on the tokens
            to score.
        adapters (`list[str]`, *optional*): see `target_logps`.

    Returns:
        `(per_token_logps, mask)`: (copies, N, T - 1) float32, 0 where ``mask`` (N, T - 1) is 0. Position t holds
        the log-prob of token t + 1 (a row's first token has no predictor, so it is never scored).
    """
    mask = completion_mask[:, 1:]  # (N, T-1): positions whose next token is a completion token
    rows, positions = mask.nonzero(as_tuple=True)
    labels = input_ids[rows, positions + 1]
    inputs = dict(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    logps = target_logps(model, inputs, rows, positions, labels, adapters)  # (copies, n_targets)
    return on_token_grid(logps, mask, rows, positions), mask  # (copies, N, T-1)


def on_token_grid(logps: torch.Tensor, mask: torch.Tensor, rows, columns) -> torch.Tensor:
    """Log-probs (copies, n) of the targets at the nonzero entries ``(rows, columns)`` of ``mask`` (N, X), put
    back on its grid: (copies, N, X), 0 elsewhere (differentiable)."""
    grid = logps.new_zeros(logps.shape[0], *mask.shape)
    grid[:, rows, columns] = logps
    return grid


def block_attention_mask(segment_ids: torch.Tensor, dtype: torch.dtype, queries: int | None = None) -> torch.Tensor:
    """Additive 4-D mask (B, 1, Q, L): 0 where a query may attend to a key, the dtype's minimum elsewhere.

    ``segment_ids`` (B, L) label the keys: -1 padding, 0 the shared prompt, k >= 1 completion k. The queries are
    the last ``queries`` keys (default: all of them), so the same mask serves packed rows (queries = keys) and
    completion rows over a prompt cache (keys = the cache's positions, then the row's own tokens).

    A token attends causally to the prompt and to earlier tokens of its own segment. Padding is hidden from
    everyone; a padding query attends to itself only, so no row of the softmax is empty (NaN in some kernels). It is
    a float mask because transformers adds a 4-D mask to the scores: a bool one would be silently wrong.
    """
    length = segment_ids.shape[1]
    queries = length if queries is None else queries
    key_index = torch.arange(length, device=segment_ids.device)  # (L,)
    query_index = key_index[length - queries:, None]  # (Q, 1)
    query, key = segment_ids[:, length - queries:, None], segment_ids[:, None, :]  # (B, Q, 1), (B, 1, L)
    allowed = (query_index >= key_index) & (query >= 0) & (key >= 0) & ((key == 0) | (key == query))  # (B, Q, L)
    allowed |= query_index == key_index
    mask = torch.zeros(allowed.shape, dtype=dtype, device=segment_ids.device)
    return mask.masked_fill_(~allowed, torch.finfo(dtype).min)[:, None]  # (B, 1, Q, L)
