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
- plain: one ``prompt + completion`` row per completion (`dpo_ext.modeling.forward.plain_rows_logps`, the trainer's
  plain path too): the fallback, and what the results must equal.

``copies`` > 1 runs every row once per entry of the runner's ``adapters`` in the same forward (PEFT mixed-adapter
batch, ``adapter_names`` with ``"__base__"`` = adapters off): the policy and the reference in one pass.

Whether prefix sharing is used for a model is decided once per model by `prompt_cache_problem`.
"""

import contextlib
import inspect
from dataclasses import dataclass, field

import torch

from dpo_ext.data.collate import pad_rows
from dpo_ext.modeling.forward import block_attention_mask, plain_rows_logps, target_logps
from dpo_ext.modeling.models import bare_model, compute_dtype
from dpo_ext.modeling.support import prefix_sharing_unsupported


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


class PromptCacheError(RuntimeError):
    """The prompt KV cache cannot be reused here; `prompt_cache_problem` turns this into plain rows."""


@contextlib.contextmanager
def _cache_api():
    try:
        yield
    except (ImportError, AttributeError, TypeError) as error:
        raise PromptCacheError(f"transformers' KV-cache API is not the one dpo_ext was written against "
                               f"(transformers 5.x DynamicCache): {type(error).__name__}: {error}") from error


class PromptKV:
    """The one place that knows transformers' KV-cache internals (5.x: `DynamicCache`, the forward's ``cache``
    keyword, formerly ``past_key_values``, ``cache.layers[i].keys/values``, ``DynamicCache(ddp_cache_data=...)``).

    Anything unexpected raises `PromptCacheError`, never a cache that is silently not used: that would score the
    completions without their prompt.
    """

    def __init__(self, model):
        bare = bare_model(model)
        # In training mode with gradient checkpointing, transformers drops the cache with only a log line.
        checkpointing = getattr(bare, "is_activation_checkpointing", None)
        if checkpointing is None:
            checkpointing = getattr(bare, "is_gradient_checkpointing", False)
        if model.training and checkpointing:
            raise PromptCacheError("the model is in training mode with gradient checkpointing, where transformers "
                                   "drops the KV cache; put it in eval mode (or disable gradient checkpointing)")
        with _cache_api():
            from transformers import DynamicCache

            parameters = inspect.signature(bare.forward).parameters
            self.keyword = next((k for k in ("cache", "past_key_values") if k in parameters), None)
            if self.keyword is None:
                raise TypeError(f"{type(bare).__name__}.forward takes neither cache= nor past_key_values=")
            self.cache_class = DynamicCache

    def empty(self) -> dict:
        """Forward keyword arguments that make the prompt pass fill a new cache."""
        with _cache_api():
            return {self.keyword: self.cache_class(), "use_cache": True}

    def layers(self, inputs: dict, length: int) -> list:
        """The (keys, values) of every layer after the prompt pass over ``inputs``: (copies * B, H, length, D)."""
        with _cache_api():
            layers = [(layer.keys.contiguous(), layer.values.contiguous()) for layer in inputs[self.keyword].layers]
        if not layers or any(keys.shape[-2] != length for keys, _ in layers):
            raise PromptCacheError(f"the prompt pass did not fill the KV cache with its {length} positions")
        return layers

    def rows(self, layers: list, rows: torch.Tensor) -> dict:
        """Forward keyword arguments with a cache holding rows ``rows`` of ``layers``, for the completion pass."""
        with _cache_api():
            # Advanced indexing, not index_select: the latter is ~30x slower on CPU for these (R, H, P, D) tensors.
            cache = self.cache_class(ddp_cache_data=[(keys[rows], values[rows]) for keys, values in layers])
        return {self.keyword: cache, "use_cache": True}


class Runner:
    """A model to score with, run once per entry of ``adapters`` (``None``: once, as the model is)."""

    def __init__(self, model, pad_token_id: int, adapters=None):
        self.model = model
        self.pad_token_id = pad_token_id
        self.adapters = list(adapters) if adapters else None
        self.copies = len(self.adapters) if self.adapters else 1
        self.device = next(model.parameters()).device
        self.dtype = compute_dtype(model)
        # Token-budget weight of one LM-head position: its logits (V floats) against the ~8 * hidden floats of
        # activations a token costs. For small models with large vocabularies the logits dominate memory.
        config = getattr(bare_model(model), "config", None)
        vocab, hidden = getattr(config, "vocab_size", None), getattr(config, "hidden_size", None)
        self.logit_cost = max(1, vocab // (8 * hidden)) if isinstance(vocab, int) and isinstance(hidden, int) else 1


def _prompt_pass(runner: Runner, kv: PromptKV, groups: list[Group]):
    """Log-probs of every completion's first token (copies, N_first), and the prompts' KV cache layers."""
    device = runner.device
    prompts = pad_rows([g.prompt_ids for g in groups], runner.pad_token_id, device=device)  # (B, P)
    attention_mask = pad_rows([[1] * len(g.prompt_ids) for g in groups], 0, device=device)
    last = torch.tensor([len(g.prompt_ids) - 1 for g in groups], device=device)  # (B,)
    rows = torch.tensor([b for b, g in enumerate(groups) for _ in g.slots], device=device)
    labels = torch.tensor([c[0] for g in groups for c in g.completion_ids], device=device)
    inputs = dict(input_ids=prompts, attention_mask=attention_mask, **kv.empty())
    first = target_logps(runner.model, inputs, rows, last[rows], labels, runner.adapters)
    return first, kv.layers(inputs, prompts.shape[1])  # layers: (copies * B, H, P, D) each


def _suffix_pass(runner: Runner, kv: PromptKV, rows: list[SuffixRow], layers, num_groups: int):
    """Log-probs of the targets of completion rows over the prompt cache (copies, N_targets), and their slots."""
    device, cache_len = runner.device, layers[0][0].shape[-2]
    group = torch.tensor([r.group for r in rows], device=device)  # (R,)
    cache = kv.rows(layers, torch.cat([group + c * num_groups for c in range(runner.copies)]))  # copies * R rows
    # Keys are [the prompt cache's positions | the row's own tokens]: segment 0 = real prompt tokens, -1 = padding.
    prompt_lens = torch.tensor([r.prompt_len for r in rows], device=device)
    cached = torch.arange(cache_len, device=device) < prompt_lens[:, None]  # (R, P)
    queries = pad_rows([r.segments for r in rows], -1, device=device)  # (R, Q)
    segments = torch.cat([cached.long() - 1, queries], dim=1)  # (R, P + Q)
    mask = block_attention_mask(segments, runner.dtype, queries=queries.shape[1])  # (R, 1, Q, P + Q)
    targets = torch.tensor([(b, *t) for b, r in enumerate(rows) for t in r.targets], dtype=torch.long,
                           device=device).reshape(-1, 4)  # (N, 4): row, position, label, slot
    inputs = dict(input_ids=pad_rows([r.input_ids for r in rows], runner.pad_token_id, device=device),
                  attention_mask=mask, position_ids=pad_rows([r.positions for r in rows], 0, device=device), **cache)
    logps = target_logps(runner.model, inputs, targets[:, 0], targets[:, 1], targets[:, 2], runner.adapters)
    return logps, targets[:, 3]


def _plain_pass(runner: Runner, groups: list[Group], max_batch_tokens: int, out: torch.Tensor) -> None:
    """Add the log-probs of ``groups``' completions, one ``prompt + completion`` row each, to ``out``."""
    rows = [(g.prompt_ids, c, s) for g in groups for c, s in zip(g.completion_ids, g.slots)]
    cost = lambda r: max(len(r[0]) + len(r[1]), len(r[1]) * runner.logit_cost) * runner.copies  # noqa: E731
    device = runner.device
    for chunk in _budget_chunks(rows, cost, max_batch_tokens):
        input_ids = pad_rows([list(p) + list(c) for p, c, _ in chunk], runner.pad_token_id, device=device)
        attention_mask = pad_rows([[1] * (len(p) + len(c)) for p, c, _ in chunk], 0, device=device)
        completion_mask = pad_rows([[0] * len(p) + [1] * len(c) for p, c, _ in chunk], 0, device=device)
        per_token, _ = plain_rows_logps(runner.model, input_ids, attention_mask, completion_mask, runner.adapters)
        out.index_add_(1, torch.tensor([s for _, _, s in chunk], device=device), per_token.sum(-1))


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

    Raises:
        `PromptCacheError`: with ``prefix_sharing``, where the prompt cache cannot be reused (see `PromptKV`).
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
    kv = PromptKV(runner.model) if groups else None
    prompt_cost = lambda g: len(g.prompt_ids) * runner.copies  # noqa: E731
    for batch in _budget_chunks(groups, prompt_cost, max_batch_tokens):
        first, layers = _prompt_pass(runner, kv, batch)
        cache_len = layers[0][0].shape[-2]
        out.index_add_(1, torch.tensor([s for g in batch for s in g.slots], device=runner.device), first)
        rows = [r for b, g in enumerate(batch) for r in suffix_rows(g, b, max_row_tokens) if r.targets]

        def row_cost(row, cache_len=cache_len):  # the row's keys, or its logits if they weigh more
            return max(cache_len + len(row.input_ids), len(row.input_ids) * runner.logit_cost) * runner.copies

        for chunk in _budget_chunks(rows, row_cost, max_batch_tokens):
            logps, slots = _suffix_pass(runner, kv, chunk, layers, len(batch))
            out.index_add_(1, slots, logps)
        if progress is not None:
            progress.update(sum(len(g.slots) for g in batch))
    return out.cpu()


def prompt_cache_problem(runner: Runner, groups: list[Group], max_length: int | None = None) -> str | None:
    """Why ``score_groups`` cannot share prompts for ``runner``'s model (a sentence), or `None` when it can.

    The support check the trainer uses too (`prefix_sharing_unsupported`, with the scorer's ``max_length``), then a
    probe cut from the first group, scored both ways: a model or transformers version where prompt reuse is wrong
    or fails is caught here rather than in the results.
    """
    problem = prefix_sharing_unsupported(runner.model, max_length)
    group = next((g for g in groups if g.prompt_ids), None)
    if problem is not None or group is None:
        return problem
    completions = [c[:4] for c in group.completion_ids[:2]]
    if len(completions) == 1:
        completions.append(list(reversed(completions[0])))
    probe = [Group(group.prompt_ids[-8:], completions, [0, 1])]
    plain = score_groups(runner, probe, 2, prefix_sharing=False)  # errors here are not prefix sharing's
    try:
        shared = score_groups(runner, probe, 2, prefix_sharing=True)
    except PromptCacheError as error:
        return str(error)
    except (TypeError, ValueError, RuntimeError, NotImplementedError, AttributeError, IndexError) as error:
        return f"the prefix-shared forward failed: {type(error).__name__}: {error}"
    tolerance = 1e-3 if runner.dtype == torch.float32 else 0.1
    if not torch.allclose(shared, plain, atol=tolerance * 8, rtol=0):
        return f"prefix-shared log-probs differ from plain ones by {float((shared - plain).abs().max()):.3g}"
    return None
