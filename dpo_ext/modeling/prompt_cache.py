"""Log-probs of many completions per prompt, with the prompt processed once (prefix sharing) or not (plain).

A *group* is one prompt and the completions scored against it. ``score_groups`` returns the summed log-prob of every
completion; it runs the model in one of two ways that give the same numbers:

- prefix sharing (two passes per batch of groups):
  1. prompt pass: the B prompts, right-padded, with the usual 2-D mask; it returns their KV cache and, from the
     last prompt position, the log-prob of every completion's *first* token.
  2. completion pass: rows of completions (one or several of the same group, concatenated) that attend to their
     prompt's cache rows. An additive float 4-D mask lets each completion see its prompt's real tokens and itself
     (causally) and nothing else; ``position_ids`` restart at ``len(prompt)`` for each completion. A bool 4-D mask
     would be silently wrong in eager attention (it is added, not applied), hence float.
  The prompt costs P tokens instead of K * P, and a completion attends to P + C keys instead of its row's full
  length: both the linear layers and the attention shrink.
- plain: one ``prompt + completion`` row per completion (the fallback, and what the results must equal).

``copies`` > 1 runs every row once per entry of ``copy_adapters`` in the same forward (PEFT mixed-adapter batch,
``adapter_names`` with ``"__base__"`` = adapters off): the policy and the reference in one pass.
"""

from dataclasses import dataclass, field

import inspect

import torch

from dpo_ext.data.collate import pad_rows
from dpo_ext.modeling.models import accepts_logits_to_keep, bare_model
from dpo_ext.logps import picked_position_logps


@dataclass
class Group:
    """One prompt and its completions; ``slots[k]`` is where completion k's log-prob goes in the flat output."""

    prompt_ids: list[int]
    completion_ids: list[list[int]]
    slots: list[int]


@dataclass
class SuffixRow:
    """A completion-pass row: completions of one group, concatenated, attending to that group's prompt cache."""

    group: int  # index of the group in its prompt-pass batch (= its cache row)
    prompt_len: int
    input_ids: list[int] = field(default_factory=list)
    segments: list[int] = field(default_factory=list)  # 1, 2, ...: which completion each token belongs to
    positions: list[int] = field(default_factory=list)
    targets: list[tuple[int, int, int]] = field(default_factory=list)  # (predicting query position, label, slot)


def suffix_rows(group: Group, index: int, max_row_tokens: int) -> list[SuffixRow]:
    """Concatenate a group's completions into rows of at most ``max_row_tokens`` tokens (a longer completion gets a
    row of its own). Token 0 of a completion is predicted by the prompt pass, so it has no target here."""
    rows, row = [], None
    for completion, slot in zip(group.completion_ids, group.slots):
        if row is None or (row.input_ids and len(row.input_ids) + len(completion) > max_row_tokens):
            row = SuffixRow(index, len(group.prompt_ids))
            rows.append(row)
        start, segment = len(row.input_ids), len(set(row.segments)) + 1
        row.targets += [(start + j - 1, token, slot) for j, token in enumerate(completion) if j > 0]
        row.input_ids += completion
        row.segments += [segment] * len(completion)
        row.positions += range(row.prompt_len, row.prompt_len + len(completion))
    return rows


def _budget_chunks(items: list, cost, max_tokens: int) -> list[list]:
    """Cut items (sorted by ``cost``) into chunks where len(chunk) * max cost stays within ``max_tokens``."""
    chunks, chunk = [], []
    for item in sorted(items, key=cost):
        if chunk and (len(chunk) + 1) * cost(item) > max_tokens:
            chunks.append(chunk)
            chunk = []
        chunk.append(item)
    return chunks + [chunk] if chunk else chunks


def suffix_attention_mask(prompt_lens, segments, cache_len: int, dtype) -> torch.Tensor:
    """Additive float mask (R, 1, Q, cache_len + Q) for completion rows over their prompt cache.

    Args:
        prompt_lens (`torch.Tensor`): (R,) real prompt tokens in each row's cache row (the rest is padding).
        segments (`torch.Tensor`): (R, Q) completion id of each query token, 0 for padding.

    A query sees the real prompt tokens and the earlier tokens of its own completion. A padding query sees only
    itself, so that no softmax row is empty (an all-masked row gives NaN in some attention kernels).
    """
    rows, length = segments.shape
    device = segments.device
    query, key = segments.unsqueeze(2), segments.unsqueeze(1)  # (R, Q, 1), (R, 1, Q)
    causal = torch.ones(length, length, dtype=torch.bool, device=device).tril()
    own = causal & (query == key) & (query > 0)  # (R, Q, Q)
    own |= torch.eye(length, dtype=torch.bool, device=device) & (query == 0)
    prompt = (torch.arange(cache_len, device=device) < prompt_lens.unsqueeze(1)).unsqueeze(1)  # (R, 1, P)
    prompt = prompt & (query > 0)  # (R, Q, P)
    allowed = torch.cat([prompt, own], dim=2)  # (R, Q, P + Q)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=device)
    return mask.masked_fill_(~allowed, torch.finfo(dtype).min).unsqueeze(1)


def _repeat_rows(tensor: torch.Tensor, copies: int) -> torch.Tensor:
    return tensor if copies == 1 else tensor.repeat(copies, *([1] * (tensor.dim() - 1)))  # (copies * R, ...)


def _picked_logps(logits, rows, columns, labels) -> torch.Tensor:
    """log softmax(logits[rows, columns])[labels] for N targets: (N,) float32."""
    flat = logits.reshape(-1, logits.shape[-1])  # (R * M, V)
    return picked_position_logps(flat, rows * logits.shape[1] + columns, labels)


class Runner:
    """Runs ``model`` on batches, once per entry of ``copy_adapters`` (``None``: once, as the model is)."""

    def __init__(self, model, pad_token_id: int, copy_adapters=None):
        self.model = model
        self.pad_token_id = pad_token_id
        self.copy_adapters = list(copy_adapters) if copy_adapters else None
        self.copies = len(self.copy_adapters) if self.copy_adapters else 1
        self.device = next(model.parameters()).device
        self.dtype = model.get_input_embeddings().weight.dtype
        if not self.dtype.is_floating_point:
            self.dtype = torch.float32
        self.logits_to_keep = accepts_logits_to_keep(model)
        # Token-budget weight of one LM-head position: its logits (V floats) against the ~8 * hidden floats of
        # activations a token costs. For small models with large vocabularies the logits dominate memory.
        config = getattr(model, "config", None)
        vocab, hidden = getattr(config, "vocab_size", None), getattr(config, "hidden_size", None)
        self.logit_cost = max(1, vocab // (8 * hidden)) if isinstance(vocab, int) and isinstance(hidden, int) else 1
        bare = bare_model(model)
        # transformers 5.x renamed `past_key_values` to `cache` (the old name goes in 5.40)
        self.cache_kwarg = "cache" if "cache" in inspect.signature(bare.forward).parameters else "past_key_values"

    def forward(self, keep: torch.Tensor, **inputs):
        """Logits (copies * R, len(keep), V) at positions ``keep`` for inputs of R rows, repeated per copy."""
        inputs = {k: _repeat_rows(v, self.copies) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        if self.copy_adapters:
            rows = inputs["input_ids"].shape[0] // self.copies
            inputs["adapter_names"] = [name for name in self.copy_adapters for _ in range(rows)]
        if self.logits_to_keep:
            return self.model(**inputs, logits_to_keep=keep).logits
        return self.model(**inputs).logits[:, keep]

    def per_copy(self, logits, rows, columns, labels, num_rows) -> torch.Tensor:
        """Picked log-probs for each copy: (copies, N)."""
        return torch.stack([_picked_logps(logits, rows + c * num_rows, columns, labels) for c in range(self.copies)])


def _prompt_pass(runner: Runner, groups: list[Group]):
    """Prompt KV cache of ``groups`` and the log-probs of every completion's first token: (copies, N_first)."""
    from transformers import DynamicCache

    device = runner.device
    prompts = pad_rows([g.prompt_ids for g in groups], runner.pad_token_id, device=device)  # (B, P)
    attention_mask = pad_rows([[1] * len(g.prompt_ids) for g in groups], 0, device=device)
    last = torch.tensor([len(g.prompt_ids) - 1 for g in groups], device=device)  # (B,)
    keep = torch.unique(last)
    cache = DynamicCache()
    logits = runner.forward(keep, input_ids=prompts, attention_mask=attention_mask, use_cache=True,
                            **{runner.cache_kwarg: cache})
    rows = torch.tensor([b for b, g in enumerate(groups) for _ in g.slots], device=device)
    labels = torch.tensor([c[0] for g in groups for c in g.completion_ids], device=device)
    first = runner.per_copy(logits, rows, torch.searchsorted(keep, last[rows]), labels, len(groups))
    kv = [(layer.keys.contiguous(), layer.values.contiguous()) for layer in cache.layers]  # (copies * B, H, P, D)
    return first, kv, prompts.shape[1]


def _suffix_pass(runner: Runner, rows: list[SuffixRow], kv, cache_len: int, num_groups: int) -> torch.Tensor:
    """Log-probs of the targets of completion rows over the prompt cache: (copies, N_targets)."""
    from transformers import DynamicCache

    device, copies = runner.device, runner.copies
    group = torch.tensor([r.group for r in rows], device=device)  # (R,)
    cache_rows = torch.cat([group + c * num_groups for c in range(copies)])  # (copies * R,)
    # Advanced indexing, not index_select: the latter is ~30x slower on CPU for these (R, H, P, D) tensors.
    cache = DynamicCache(ddp_cache_data=[(k[cache_rows], v[cache_rows])
                                         for k, v in kv])
    segments = pad_rows([r.segments for r in rows], 0, device=device)  # (R, Q)
    prompt_lens = torch.tensor([r.prompt_len for r in rows], device=device)
    mask = suffix_attention_mask(prompt_lens, segments, cache_len, runner.dtype)  # (R, 1, Q, P + Q)
    targets = torch.tensor([(b, *t) for b, r in enumerate(rows) for t in r.targets], dtype=torch.long,
                           device=device).reshape(-1, 4)  # (N, 4): row, position, label, slot
    keep = torch.unique(targets[:, 1])
    input_ids = pad_rows([r.input_ids for r in rows], runner.pad_token_id, device=device)  # (R, Q)
    positions = pad_rows([r.positions for r in rows], 0, device=device)  # (R, Q)
    logits = runner.forward(keep, input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True,
                            **{runner.cache_kwarg: cache})
    columns = torch.searchsorted(keep, targets[:, 1].contiguous())
    logps = runner.per_copy(logits, targets[:, 0], columns, targets[:, 2], len(rows))
    return logps, targets[:, 3]


def _plain_pass(runner: Runner, groups: list[Group], max_batch_tokens: int, out: torch.Tensor) -> None:
    rows = [(g.prompt_ids, c, s) for g in groups for c, s in zip(g.completion_ids, g.slots)]
    cost = lambda r: max(len(r[0]) + len(r[1]), len(r[1]) * runner.logit_cost) * runner.copies  # noqa: E731
    for chunk in _budget_chunks(rows, cost, max_batch_tokens):
        ids = [list(p) + list(c) for p, c, _ in chunk]
        device = runner.device
        # Without a prompt token nothing predicts a completion's first token: it is not scored (as in training).
        targets = torch.tensor([(b, len(p) - 1 + j, t, s) for b, (p, c, s) in enumerate(chunk)
                                for j, t in enumerate(c) if len(p) - 1 + j >= 0], dtype=torch.long,
                               device=device).reshape(-1, 4)  # (N, 4): row, position, label, slot
        keep = torch.unique(targets[:, 1])
        attention_mask = pad_rows([[1] * len(i) for i in ids], 0, device=device)
        logits = runner.forward(keep, input_ids=pad_rows(ids, runner.pad_token_id, device=device),
                                attention_mask=attention_mask, use_cache=False)
        columns = torch.searchsorted(keep, targets[:, 1].contiguous())
        logps = runner.per_copy(logits, targets[:, 0], columns, targets[:, 2], len(chunk))
        out.index_add_(1, targets[:, 3], logps)


def score_groups(runner: Runner, groups: list[Group], num_slots: int, *, prefix_sharing: bool = True,
                 max_batch_tokens: int = 1024, max_row_tokens: int = 128, progress=None) -> torch.Tensor:
    """Summed log-probs of every completion of every group.

    Args:
        runner (`Runner`): the model and how many copies (adapters) each row runs under.
        groups (`list[Group]`): prompts and completions as token ids; every prompt and completion non-empty.
        num_slots (`int`): size of the output (every ``slot`` of every group is < ``num_slots``).
        prefix_sharing (`bool`): two-pass prefix sharing, or plain ``prompt + completion`` rows.
        max_batch_tokens (`int`): padded tokens per forward, all copies included; a completion-pass row costs its
            keys (cache + its own tokens), or its LM-head positions times ``runner.logit_cost`` if that is more.
        max_row_tokens (`int`): completion tokens concatenated into one completion-pass row.
        progress (*optional*): a tqdm-like object whose ``update(n)`` is called with the completions done.

    Returns:
        `torch.Tensor`: (copies, num_slots) float32 on CPU.
    """
    out = torch.zeros(runner.copies, num_slots, device=runner.device)
    plain = groups if not prefix_sharing else [g for g in groups if not g.prompt_ids]
    for chunk in _budget_chunks(plain, lambda g: len(g.prompt_ids), max_batch_tokens):
        _plain_pass(runner, chunk, max_batch_tokens, out)
        if progress is not None:
            progress.update(sum(len(g.slots) for g in chunk))
    if not prefix_sharing:
        return out.cpu()
    groups = [g for g in groups if g.prompt_ids]
    prompt_cost = lambda g: len(g.prompt_ids) * runner.copies  # noqa: E731
    for batch in _budget_chunks(groups, prompt_cost, max_batch_tokens):
        first, kv, cache_len = _prompt_pass(runner, batch)
        out.index_add_(1, torch.tensor([s for g in batch for s in g.slots], device=runner.device), first)
        rows = [r for b, g in enumerate(batch) for r in suffix_rows(g, b, max_row_tokens) if r.targets]

        def row_cost(row, cache_len=cache_len):  # the row's keys, or its logits if they weigh more
            return max(cache_len + len(row.input_ids), len(row.input_ids) * runner.logit_cost) * runner.copies

        for chunk in _budget_chunks(rows, row_cost, max_batch_tokens):
            logps, slots = _suffix_pass(runner, chunk, kv, cache_len, len(batch))
            out.index_add_(1, slots, logps)
        if progress is not None:
            progress.update(sum(len(g.slots) for g in batch))
    return out.cpu()
