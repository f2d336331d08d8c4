"""Prefix sharing: one packed row ``prompt + c_1 + ... + c_K`` per ranked list instead of K ``prompt + c_k`` rows.

The prompt's tokens go through the model once per list; every completion attends to them (and to itself, causally)
through a block attention mask, and its position ids restart right after the prompt, so each completion sees
exactly what it would see in its own row. Gradients flow into the shared prompt positions from all K completions.

Layout of one packed row (P prompt tokens, completions of lengths C_1..C_K, then right padding)::

    tokens      p_0 .. p_{P-1} | c_1 tokens      | c_2 tokens      | ... | pad
    segment     0  ..  0       | 1 ..  1         | 2 ..  2         | ... | -1
    position    0  ..  P-1     | P .. P+C_1-1    | P .. P+C_2-1    | ... | 0

The first token of every completion is predicted by the last prompt position (P-1), the others by the token before
them, so per-completion log-probs come out as (N,) rows in the same order (and ``slot_index``) as
`dpo_ext.data.RankedCollator`, with each completion cut the way that collator cuts it (prompt + completion kept to
``max_length`` tokens).

Facts this rests on (transformers 5.24, see the project NOTES): a 4-D attention mask is passed to the attention
unchanged, so padding must be in it; it must be an additive *float* mask (a bool 4-D mask is silently wrong in eager
attention); and restarted position ids are only correct together with such a mask. Flash-attention kernels ignore
4-D masks, so those models fall back to the plain K-row path (see `prefix_sharing_unsupported`).
"""

import inspect
import logging
from dataclasses import dataclass

import torch

from .data import pad_rows, per_list_tensors, prompt_ids_of
from .logps import picked_position_logps
from .model_utils import accepts_logits_to_keep, bare_model

logger = logging.getLogger(__name__)

SEGMENT_IDS = "segment_ids"  # the key that marks a collated batch as packed

# Model types checked to give the same log-probs packed as in separate rows, with eager and sdpa attention
# (tests/test_prefix_sharing.py, marked slow, checks them all). MPT (ALiBi from the 2-D mask) gives wrong ones.
VERIFIED_MODEL_TYPES = frozenset({
    "cohere", "gemma", "gemma2", "gemma3_text", "glm", "gpt2", "gpt_bigcode", "gpt_neox", "granite", "helium",
    "llama", "ministral", "mistral", "mixtral", "olmo", "olmo2", "opt", "phi", "phi3", "qwen2", "qwen2_moe", "qwen3",
    "qwen3_moe", "smollm3", "stablelm", "starcoder2",
})
SUPPORTED_ATTENTION = ("eager", "sdpa")


@dataclass
class PackedRankedCollator:
    """Collate tokenized ranked examples into one packed ``prompt + c_1 + ... + c_K`` row per list.

    Returns a dict with ``input_ids``, ``position_ids``, ``segment_ids`` (B, L), right-padded (segment -1 is
    padding); ``token_index``, ``predictor_index``, ``token_mask`` (N, C): for token j of completion row n, its flat
    index into the (B * L) packed tokens and the flat index of the position whose logits predict it; plus
    ``slot_index`` (N,), ``ranks`` (B, K_max), ``ref_logps`` and ``row_index`` exactly as `RankedCollator` returns
    them.
    """

    pad_token_id: int
    max_length: int | None = None

    def __call__(self, examples: list[dict]) -> dict:
        max_k = max(len(e["completion_ids"]) for e in examples)
        packed, segments, positions = [], [], []
        completions = []  # per completion row: (list b, start in the packed row, length, prompt length)
        for b, example in enumerate(examples):
            prompt = prompt_ids_of(example)
            if self.max_length is not None:
                prompt = prompt[: self.max_length]
            room = None if self.max_length is None else self.max_length - len(prompt)
            ids, seg, pos = list(prompt), [0] * len(prompt), list(range(len(prompt)))
            for k, completion in enumerate(example["completion_ids"]):
                completion = list(completion)[:room]  # RankedCollator keeps (prompt + completion)[:max_length]
                completions.append((b, len(ids), len(completion), len(prompt)))
                ids += completion
                seg += [k + 1] * len(completion)
                pos += range(len(prompt), len(prompt) + len(completion))
            packed.append(ids)
            segments.append(seg)
            positions.append(pos)

        width = max(len(r) for r in packed)
        return {
            "input_ids": pad_rows(packed, self.pad_token_id, width),
            "position_ids": pad_rows(positions, 0, width),
            SEGMENT_IDS: pad_rows(segments, -1, width),
            **_token_indices(completions, width),
            "slot_index": torch.tensor(
                [b * max_k + k for b, e in enumerate(examples) for k in range(len(e["completion_ids"]))],
                dtype=torch.long,
            ),
            **per_list_tensors(examples, max_k),
        }


def _token_indices(completions, width: int) -> dict:
    """Flat (B * L) indices of every completion token and of the position predicting it, (N, C_max) each."""
    c_max = max(1, max(length for _, _, length, _ in completions))
    token_index = torch.zeros((len(completions), c_max), dtype=torch.long)
    predictor_index = torch.zeros_like(token_index)
    token_mask = torch.zeros_like(token_index)
    for n, (b, start, length, prompt_len) in enumerate(completions):
        if length == 0:
            continue
        tokens = torch.arange(start, start + length) + b * width
        predictors = tokens - 1
        predictors[0] = b * width + prompt_len - 1  # the first token is predicted by the last prompt token
        token_index[n, :length], predictor_index[n, :length] = tokens, predictors
        token_mask[n, :length] = 1
    return {"token_index": token_index, "predictor_index": predictor_index, "token_mask": token_mask}


def is_packed(batch: dict) -> bool:
    return SEGMENT_IDS in batch


def block_attention_mask(segment_ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive 4-D mask (B, 1, L, L): 0 where query i may attend to key j, the dtype's minimum elsewhere.

    A token attends causally to the prompt (segment 0) and to earlier tokens of its own segment. Padding (segment
    -1) is hidden from everyone; a padding query attends to itself only, so no row of the softmax is empty.
    """
    length = segment_ids.shape[1]
    index = torch.arange(length, device=segment_ids.device)
    causal = index[:, None] >= index[None, :]  # (L, L)
    query, key = segment_ids[:, :, None], segment_ids[:, None, :]  # (B, L, 1), (B, 1, L)
    allowed = causal & (query >= 0) & (key >= 0) & ((key == 0) | (key == query))  # (B, L, L)
    allowed |= torch.eye(length, dtype=torch.bool, device=segment_ids.device)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=segment_ids.device)
    return mask.masked_fill_(~allowed, torch.finfo(dtype).min)[:, None]  # (B, 1, L, L)


def _compute_dtype(model) -> torch.dtype:
    embeddings = bare_model(model).get_input_embeddings()
    dtype = embeddings.weight.dtype if embeddings is not None else next(model.parameters()).dtype
    return dtype if dtype.is_floating_point else torch.float32


def packed_token_logps(model, batch: dict, **model_kwargs):
    """Per-token log-probs of every completion of a packed batch, in one forward pass.

    Returns:
        `(per_token_logps, mask)`: both (N, C_max), one row per completion in `RankedCollator`'s row order;
        ``per_token_logps`` is float32 and 0 where ``mask`` is 0.
    """
    input_ids, mask = batch["input_ids"], batch["token_mask"]  # (B, L), (N, C)
    length = input_ids.shape[1]
    predictor = batch["predictor_index"]  # (N, C), flat into B * L
    # Logits only at positions that predict some completion token (the union over the batch's lists).
    keep = torch.unique(predictor[mask.bool()] % length) if bool(mask.any()) else predictor.new_zeros(1)
    attention = block_attention_mask(batch[SEGMENT_IDS], _compute_dtype(model))
    kwargs = dict(input_ids=input_ids, attention_mask=attention, position_ids=batch["position_ids"], use_cache=False)
    if accepts_logits_to_keep(model):
        logits = model(**kwargs, logits_to_keep=keep, **model_kwargs).logits  # (B, len(keep), V)
    else:
        logits = model(**kwargs, **model_kwargs).logits[:, keep]
    flat = logits.reshape(-1, logits.shape[-1])  # (B * len(keep), V)
    # Where each predictor's logits landed: list b, column = its rank among the kept positions.
    column = torch.searchsorted(keep, predictor % length).clamp_max(keep.numel() - 1)  # (N, C)
    rows = (predictor // length) * keep.numel() + column
    labels = input_ids.reshape(-1)[batch["token_index"]]  # (N, C)
    # float32 copies of at most 2**26 elements (256 MiB) at a time
    return picked_position_logps(flat, rows, labels, max_elements=2**26) * mask, mask  # (N, C)


def prefix_sharing_unsupported(model, max_length: int | None = None) -> str | None:
    """Why ``model`` cannot run packed rows exactly (a sentence), or `None` when it can.

    Supported: decoder-only models of a verified type (`VERIFIED_MODEL_TYPES`) with eager or sdpa attention, whose
    forward takes a 4-D ``attention_mask`` and ``position_ids``. Flash-attention and other kernels that ignore a 4-D
    mask would let completions see each other; a sliding window is not applied to a custom mask, so it is only
    exact when no plain row (at most ``max_length`` tokens) could exceed the window.
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
    if window and getattr(config, "use_sliding_window", True) and (max_length is None or max_length > window):
        return f"its sliding window ({window} tokens) is not applied to a custom mask and max_length={max_length}"
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
