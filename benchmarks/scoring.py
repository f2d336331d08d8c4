"""Benchmark: ImplicitRewardScorer against naive two-model scoring (throughput and peak memory).

    python benchmarks/scoring.py                      # tiny GPT-2 on CPU, N in {4, 16}, prompts of {64, 512} tokens
    python benchmarks/scoring.py --model gpt2 --device cuda --dtype bfloat16

Naive scoring is what one writes without this package: a separate reference model (a deep copy of the base model)
and, for every prompt, one batch of N ``prompt + completion`` rows through the policy and one through the
reference (with ``logits_to_keep``, so the LM head only runs on completion positions). The scorer processes each
prompt once per model and, by default on CPU, runs the policy and the adapters-off reference one after the other
on the same weights.

Every (configuration, method) runs in its own child process, so that peak memory is measured from a clean start:
the RSS high-water mark (``getrusage``) minus the RSS before the reference copy / scorer is built on CPU, and
``torch.cuda.max_memory_allocated`` minus the memory allocated at that point on GPU. Throughput is completions
scored per second, the best of ``--repeats`` runs after one warm-up prompt, timed in one process that alternates
the methods (so both see the same load on a shared machine). The scorer's rewards are compared with the naive ones
(``max_abs_reward_diff``). The last column times the scorer with ``mixed_adapter_batches=True`` (policy and
adapters-off reference in one forward).
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

METHODS = ("naive", "scorer")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model id or path (default: a ~5M-parameter GPT-2 built from a config)")
    parser.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--dtype", default="float32", help="weights dtype: float32, bfloat16, float16")
    parser.add_argument("--n", type=int, nargs="+", default=[4, 16], help="completions per prompt")
    parser.add_argument("--prompt-lengths", type=int, nargs="+", default=[64, 512], help="prompt tokens")
    parser.add_argument("--completion-length", type=int, default=32, help="completion tokens")
    parser.add_argument("--prompts", type=int, default=8, help="prompts per configuration")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per measurement (best is kept)")
    parser.add_argument("--threads", type=int,
                        help="torch threads (default: 1 on CPU: on a shared machine, OpenMP threads that wait for a "
                             "descheduled sibling can make a small forward 100x slower; torch's choice on GPU)")
    parser.add_argument("--scorer-kwargs", default="{}", help="JSON of ImplicitRewardScorer keyword arguments")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/scoring.json"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# -- child: one (configuration, method) --------------------------------------------------------------------------

def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def build_policy(spec):
    """A PeftModel whose LoRA is not zero (so policy and reference differ), and its vocabulary size."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    dtype = getattr(torch, spec["dtype"])
    if spec["model"]:
        base = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=dtype)
        lora = LoraConfig(r=8, target_modules="all-linear", lora_dropout=0.0)
    else:
        config = GPT2Config(vocab_size=8192, n_positions=1024, n_embd=256, n_layer=4, n_head=4,
                            bos_token_id=0, eos_token_id=0, pad_token_id=0)
        base = GPT2LMHeadModel(config).to(dtype)
        lora = LoraConfig(r=8, target_modules=["c_attn", "c_proj", "c_fc"], fan_in_fan_out=True, lora_dropout=0.0)
    model = get_peft_model(base, lora)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.02)
    return model.to(spec["device"]).eval(), model.config.vocab_size


def make_tokens(spec, vocab_size):
    import torch

    generator = torch.Generator().manual_seed(1)
    draw = lambda n: torch.randint(3, vocab_size, (n,), generator=generator).tolist()  # noqa: E731
    prompts = [draw(spec["prompt_length"]) for _ in range(spec["prompts"] + 1)]  # +1: warm-up
    completions = [[draw(spec["completion_length"]) for _ in range(spec["n"])] for _ in prompts]
    return prompts, completions


def naive_scores(policy, reference, prompts, completions, beta=0.1):
    """Per prompt: N full rows through the policy, then through the separate reference model."""
    import torch

    from dpo_ext.modeling.batches import completion_logps

    rewards = []
    for prompt, candidates in zip(prompts, completions):
        rows = [prompt + c for c in candidates]
        input_ids = torch.tensor(rows, device=policy.device)
        completion_mask = torch.tensor([[0] * len(prompt) + [1] * len(c) for c in candidates], device=policy.device)
        batch = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids),
                 "completion_mask": completion_mask}
        rewards.append((beta * (completion_logps(policy, batch) - completion_logps(reference, batch))).tolist())
    return rewards


def _scorer(spec, policy):
    from dpo_ext.scoring.scorer import ImplicitRewardScorer

    class Tokenizer:  # token ids are given directly: the scorer only needs the pad id and the vocabulary size
        pad_token_id, eos_token_id = 0, 0

        def __len__(self):
            return policy.config.vocab_size

    return ImplicitRewardScorer(policy, Tokenizer(), **spec["scorer_kwargs"])


def _reference_copy(policy):
    import copy

    with policy.disable_adapter():  # the starting policy = the base model, copied as naive code would
        return copy.deepcopy(policy.get_base_model()).eval()


def _scoring_functions(spec, policy, methods):
    import torch

    functions = {}
    if "naive" in methods:
        reference = _reference_copy(policy)

        def naive(p, c):
            with torch.inference_mode():
                return naive_scores(policy, reference, p, c)

        functions["naive"] = naive
    if "scorer" in methods:
        scorer = _scorer(spec, policy)
        functions["scorer"] = lambda p, c: scorer.score_tokens(p, c).rewards.tolist()
    if "scorer_mixed" in methods:  # policy and adapters-off reference in one forward (PEFT adapter_names)
        mixed = _scorer({**spec, "scorer_kwargs": {**spec["scorer_kwargs"], "mixed_adapter_batches": True}}, policy)
        functions["scorer_mixed"] = lambda p, c: mixed.score_tokens(p, c).rewards.tolist()
    return functions


def run_child(spec) -> dict:
    """``spec["method"]``: "naive" or "scorer" (peak memory of that method alone, from a clean process), or
    "time" (both methods in one process, timed alternately so that both see the same machine load)."""
    import torch

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    cuda = spec["device"].startswith("cuda")
    policy, vocab_size = build_policy(spec)
    prompts, completions = make_tokens(spec, vocab_size)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    import dpo_ext.modeling.batches  # noqa: F401 - imports and kernel set-up are not part of either method's peak
    import dpo_ext.scoring  # noqa: F401

    with torch.inference_mode():
        policy(input_ids=torch.tensor([prompts[0][:8]], device=policy.device))
    if spec["method"] != "time":
        sync()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
            start_memory = torch.cuda.memory_allocated()
        start_rss = _rss_mb()
        score = _scoring_functions(spec, policy, [spec["method"]])[spec["method"]]
        score(prompts[:1], completions[:1])  # warm-up
        rewards = score(prompts[1:], completions[1:])
        sync()
        peak = (torch.cuda.max_memory_allocated() - start_memory) / 2**20 if cuda else _peak_rss_mb() - start_rss
        return {"peak_memory_mb": peak, "rewards": rewards}

    timed = METHODS + ("scorer_mixed",)
    functions = _scoring_functions(spec, policy, timed)
    for score in functions.values():
        score(prompts[:1], completions[:1])  # warm-up
    wall = {m: [] for m in timed}
    cpu = {m: [] for m in timed}
    for repeat in range(spec["repeats"]):
        for method in (timed if repeat % 2 == 0 else timed[::-1]):
            sync()
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            functions[method](prompts[1:], completions[1:])
            sync()
            wall[method].append(time.perf_counter() - start_wall)
            cpu[method].append(time.process_time() - start_cpu)
    return {"wall_seconds": wall, "cpu_seconds": cpu, "candidates": spec["prompts"] * spec["n"]}


# -- parent: all configurations, table, JSON ---------------------------------------------------------------------

def machine_info(device: str) -> dict:
    import peft
    import torch
    import transformers

    info = {"platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "transformers": transformers.__version__, "peft": peft.__version__, "device": device}
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
    info["load_average_at_start"] = os.getloadavg()
    return info


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(run_child(json.loads(args.child))))
        return 0
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.threads is None and device == "cpu":
        args.threads = 1
    if args.threads:
        torch.set_num_threads(args.threads)
    info = machine_info(device)
    results = []
    for prompt_length in args.prompt_lengths:
        for n in args.n:
            runs = {}
            for method in METHODS + ("time",):
                spec = {"method": method, "model": args.model, "device": device, "dtype": args.dtype, "n": n,
                        "prompt_length": prompt_length, "completion_length": args.completion_length,
                        "prompts": args.prompts, "repeats": args.repeats, "threads": args.threads,
                        "scorer_kwargs": json.loads(args.scorer_kwargs)}
                out = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True,
                                     text=True)
                if out.returncode != 0:
                    print(out.stderr, file=sys.stderr)
                    return out.returncode
                runs[method] = json.loads(out.stdout.strip().splitlines()[-1])
            naive, fast, timing = runs["naive"], runs["scorer"], runs["time"]
            diff = max(abs(a - b) for ra, rb in zip(naive["rewards"], fast["rewards"]) for a, b in zip(ra, rb))
            candidates = timing["candidates"]
            row = {"n": n, "prompt_tokens": prompt_length, "completion_tokens": args.completion_length,
                   "candidates": candidates, "max_abs_reward_diff": diff,
                   "naive_peak_mb": naive["peak_memory_mb"], "scorer_peak_mb": fast["peak_memory_mb"],
                   "wall_seconds": timing["wall_seconds"], "cpu_seconds": timing["cpu_seconds"]}
            for method in METHODS + ("scorer_mixed",):
                row[f"{method}_candidates_per_s"] = candidates / min(timing["wall_seconds"][method])
                row[f"{method}_candidates_per_cpu_s"] = candidates / min(timing["cpu_seconds"][method])
            row["throughput_ratio"] = row["scorer_candidates_per_s"] / row["naive_candidates_per_s"]
            row["cpu_throughput_ratio"] = row["scorer_candidates_per_cpu_s"] / row["naive_candidates_per_cpu_s"]
            row["memory_ratio"] = row["scorer_peak_mb"] / max(row["naive_peak_mb"], 1e-9)
            row["mixed_throughput_ratio"] = row["scorer_mixed_candidates_per_s"] / row["naive_candidates_per_s"]
            results.append(row)
            print(f"done N={n} P={prompt_length}", file=sys.stderr)
    info["load_average_at_end"] = os.getloadavg()
    print(format_table(results, info))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in vars(args).items() if k not in ("child", "output")}
    args.output.write_text(json.dumps({"machine": info, "settings": settings, "results": results}, indent=2) + "\n")
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


def format_table(results, info) -> str:
    head = ("|  N | prompt | naive cand/s | scorer cand/s | speed-up (wall) | speed-up (CPU time) | naive peak MB | "
            "scorer peak MB | memory | max abs reward diff | mixed-adapter cand/s |")
    lines = [f"device: {info['device']} ({info.get('gpu') or info.get('cpu', '?')}, {info['cpu_count']} cores, "
             f"{info['torch_threads']} torch threads); load average {info['load_average_at_start'][0]:.1f} at "
             f"start, {info['load_average_at_end'][0]:.1f} at end",
             "", head, "|" + "|".join("---" for _ in range(head.count("|") - 1)) + "|"]
    for r in results:
        lines.append(f"| {r['n']:2d} | {r['prompt_tokens']:6d} | {r['naive_candidates_per_s']:12.1f} | "
                     f"{r['scorer_candidates_per_s']:13.1f} | {r['throughput_ratio']:14.2f}x | "
                     f"{r['cpu_throughput_ratio']:18.2f}x | {r['naive_peak_mb']:13.1f} | "
                     f"{r['scorer_peak_mb']:14.1f} | {r['memory_ratio']:5.2f}x | {r['max_abs_reward_diff']:.2e} | "
                     f"{r['scorer_mixed_candidates_per_s']:.1f} ({r['mixed_throughput_ratio']:.2f}x) |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
