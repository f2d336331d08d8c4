"""Peak memory of the loss head (final hidden states -> completion log-probs, forward and backward) on one list of
4,096 tokens: a 1,024-token prompt and K completions sharing the other 3,072.

    python benchmarks/lm_head_memory.py                  # CPU, reduced size (V = 32,000, H = 512, float32), ~1 minute
    python benchmarks/lm_head_memory.py --vocab 128256 --hidden 2048 --dtype bfloat16   # Llama-3.2-1B's head

Four heads, each given the hidden states it would get, the LM head frozen (as under LoRA):
- ``plain``: the (positions, V) logits materialised, then log-softmax (dpo_ext before the fused head, and still for
  heads it cannot fuse: LoRA on the head, soft-capped logits);
- ``trl``: TRL's chunked log-prob kernel (``trl.kernels.ChunkedLogProbFunction``, 4,096 x 32,768 tiles) on the
  positions TRL's DPOTrainer scores for the list as K-1 adjacent pairs: the completion tokens of 2(K-1) rows on a
  GPU, every position of the padded rows elsewhere (TRL scores only valid positions where Triton runs);
- ``trl_same_positions``: the same kernel on dpo_ext's positions, which separates the tiling from the positions;
- ``fused``: `dpo_ext.logps.linear_target_logps` on the K completions' tokens once (prefix sharing), at
  `dpo_ext.modeling.forward.MAX_UPCAST_ELEMENTS` per tile.

Peak = CUDA max allocated, or the RSS high-water mark of a child process per head (glibc's mmap threshold lowered so
that RSS follows live tensors, see `common.MEMORY_ENV`), above what the hidden states and the head's weight take.
Writes benchmarks/results/lm_head_memory.json; `suite.py` calls `measure_head` for the GPU table.
"""

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import MEMORY_ENV, PeakMemory, child_result, machine, print_table, run_child, write_results  # noqa: E402

HEADS = ("plain", "trl", "trl_same_positions", "fused")
LIST_TOKENS, PROMPT_TOKENS = 4096, 1024


def positions(head: str, k: int, on_gpu: bool) -> int:
    """How many positions ``head`` projects for one list of K completions."""
    completion = (LIST_TOKENS - PROMPT_TOKENS) // k
    if head != "trl":
        return k * completion  # each completion token once
    rows = 2 * (k - 1)  # K-1 pairs, chosen and rejected, each prompt + completion
    return rows * completion if on_gpu else rows * (PROMPT_TOKENS + completion - 1)


def measure_head(head: str, k: int, vocab: int, hidden_size: int, dtype: str) -> dict:
    """Peak MiB and seconds of one forward and backward of ``head`` (in this process; fresh process on CPU)."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch_dtype = getattr(torch, dtype)
    n = positions(head, k, device == "cuda")
    gen = torch.Generator(device).manual_seed(0)
    # filled in place: a temporary would raise the RSS high-water mark above the baseline, hiding a smaller peak
    weight = torch.empty(vocab, hidden_size, device=device, dtype=torch_dtype).normal_(0, hidden_size ** -0.5,
                                                                                      generator=gen)
    hidden = torch.randn(n, hidden_size, generator=gen, device=device, dtype=torch_dtype).requires_grad_()
    labels = torch.randint(0, vocab, (n,), generator=gen, device=device)
    memory = PeakMemory()  # baseline: hidden states and weight exist
    start = time.perf_counter()
    log_probs = _head_log_probs(head, hidden, weight, labels)
    log_probs.sum().backward()
    if device == "cuda":
        torch.cuda.synchronize()
    return {"head": head, "k": k, "positions": n, "vocab": vocab, "hidden": hidden_size, "dtype": dtype,
            "peak_mib": memory.peak_mib(), "seconds": time.perf_counter() - start}


def _head_log_probs(head, hidden, weight, labels):
    import torch

    if head == "plain":
        from dpo_ext.logps import picked_position_logps
        from dpo_ext.modeling.forward import MAX_UPCAST_ELEMENTS

        rows = torch.arange(hidden.shape[0], device=hidden.device)
        return picked_position_logps(torch.nn.functional.linear(hidden, weight), rows, labels, MAX_UPCAST_ELEMENTS)
    if head == "fused":
        from dpo_ext.logps import linear_target_logps
        from dpo_ext.modeling.forward import MAX_UPCAST_ELEMENTS

        rows = torch.arange(hidden.shape[0], device=hidden.device)
        return linear_target_logps(hidden, weight, None, rows, labels, MAX_UPCAST_ELEMENTS)
    from trl.kernels import ChunkedLogProbFunction

    # TRL's DPOTrainer: chunk 32,768 vocabulary entries, temperature 1, no soft-cap, unit logit scale, log-probs only
    return ChunkedLogProbFunction.apply(hidden, weight, None, labels, 1.0, 32768, None, 1.0, ("log_probs",))[0]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--ks", nargs="+", type=int, default=[4, 8])
    parser.add_argument("--output", default="lm_head_memory", help="results file name under benchmarks/results/")
    args = parser.parse_args(argv)
    if args.child:
        import torch

        torch.set_num_threads(1)
        child_result(measure_head(**json.loads(args.child)))
        return 0
    rows = []
    for k in args.ks:
        for head in HEADS:
            spec = {"head": head, "k": k, "vocab": args.vocab, "hidden_size": args.hidden, "dtype": args.dtype}
            rows.append(run_child(__file__, spec, env=MEMORY_ENV))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    add_head_ratios(rows)
    print_table(rows, [("k", "K", ""), ("head", "head", ""), ("positions", "positions", ""),
                       ("peak_mib", "peak MiB", ".0f"), ("vs_trl", "vs TRL", ".3f"), ("seconds", "s", ".2f")])
    path = write_results(args.output, {"machine": machine(), "list_tokens": LIST_TOKENS,
                                       "prompt_tokens": PROMPT_TOKENS, "results": rows})
    print(f"\nwrote {path}")
    return 0


def add_head_ratios(rows: list[dict]) -> None:
    """Each head's peak over TRL's (the kernel on TRL's positions) at the same K; None without a TRL peak (an RSS peak
    measured in one process after the first head only grows, so it can read 0)."""
    for r in rows:
        trl = next((t for t in rows if t["k"] == r["k"] and t["head"] == "trl" and t.get("peak_mib")), None)
        r["vs_trl"] = r["peak_mib"] / trl["peak_mib"] if trl and "peak_mib" in r else None


if __name__ == "__main__":
    sys.exit(main())
