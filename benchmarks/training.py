"""Training throughput and peak memory: PLDPOTrainer on K=4 ranked lists vs trl.DPOTrainer on the same lists.

    python benchmarks/training.py                      # 4-layer 512-dim GPT-2 from a config, CPU float32, ~2.5 min
    python benchmarks/training.py --model <id> --bf16  # any causal LM (on the GPU when there is one)

TRL gets each list as its K-1 adjacent pairs (1>2, 2>3, 3>4 at K=4) and processes the same lists per optimizer
step, in one of two settings (``--trl-modes``): ``batch`` = one batch of (K-1)B pairs, ``accumulate`` = K-1
micro-batches of B pairs with gradient accumulation. Both trainers train the same LoRA adapter (all linear
layers, r=16) on the same model, with the reference = adapters disabled, dropout off, no gradient checkpointing,
float32 (``--bf16`` to change), one torch thread on the CPU (``--threads``).
PLDPOTrainer runs once with one row per completion and once with prefix sharing (one packed row per list).

Every configuration runs in two child processes of its own. Timing: lists per step / the median wall-clock time of
the optimizer steps after ``--warmup`` (data loading, both forwards, backward, optimizer step). Memory: RSS
high-water mark (or CUDA peak allocated) minus the value right after the model was built, over two steps, with
glibc told to unmap freed blocks (see `common.MEMORY_ENV`). Writes benchmarks/results/training.json.
"""

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    MEMORY_ENV,
    PeakMemory,
    adjacent_pairs,
    build_model,
    child_result,
    lora_config,
    machine,
    on_gpu,
    print_table,
    quiet,
    ranked_rows,
    run_child,
    step_timer,
    write_results,
)

K = 4
MEMORY_STEPS = 2


def _trainer(cfg: dict, model, tokenizer, rows, callbacks):
    """(trainer, a collated batch of one step's lists) for the configuration."""
    import datasets

    lists, steps, pairs = cfg["lists_per_step"], cfg["steps"], cfg.get("k", K) - 1
    max_length = cfg.get("max_length") or cfg["prompt_tokens"] + cfg["completion_tokens"] + 8
    common = dict(output_dir=tempfile.mkdtemp(), max_steps=steps, learning_rate=1e-4, report_to="none",
                  logging_steps=steps, save_strategy="no", disable_tqdm=True, seed=0, use_cpu=not on_gpu(),
                  bf16=cfg["spec"]["bf16"], max_length=max_length, dataloader_num_workers=0)
    if cfg["trainer"] == "trl":
        from trl import DPOConfig, DPOTrainer

        micro = pairs * lists if cfg["trl_mode"] == "batch" else lists
        args = DPOConfig(**common, per_device_train_batch_size=micro,
                         gradient_accumulation_steps=pairs * lists // micro, gradient_checkpointing=False,
                         loss_type=["sigmoid"])
        trainer = DPOTrainer(model, args=args, train_dataset=datasets.Dataset.from_list(adjacent_pairs(rows)),
                             processing_class=tokenizer, peft_config=lora_config(), callbacks=callbacks)
        return trainer, trainer.data_collator([trainer.train_dataset[i] for i in range(pairs * lists)])
    from dpo_ext import PLDPOConfig, PLDPOTrainer

    args = PLDPOConfig(**common, per_device_train_batch_size=lists, prefix_sharing=cfg["prefix_sharing"])
    trainer = PLDPOTrainer(model, args=args, train_dataset=datasets.Dataset.from_list(rows),
                           processing_class=tokenizer, peft_config=lora_config(), callbacks=callbacks)
    sample = trainer.data_collator([trainer.train_dataset[i] for i in range(lists)])
    if cfg["prefix_sharing"] and "segment_ids" not in sample:
        raise RuntimeError("prefix_sharing fell back to one row per completion for this model (see the warning)")
    return trainer, sample


def run_configuration(cfg: dict) -> dict:
    """One child: time the optimizer steps (``cfg["measure"] == "time"``) or measure the peak memory of two."""
    quiet()
    import datasets  # noqa: F401  (imported before the memory baseline, like everything the trainers need)
    import peft  # noqa: F401

    if cfg["trainer"] == "trl":
        import trl  # noqa: F401
    else:
        import dpo_ext.training.trainer  # noqa: F401
    if cfg["threads"]:
        import torch

        torch.set_num_threads(cfg["threads"])
    if cfg["measure"] == "memory":
        cfg = {**cfg, "steps": MEMORY_STEPS}
    model, tokenizer = build_model(cfg["spec"], seed=0)
    rows = ranked_rows(cfg["lists_per_step"] * cfg["steps"], K, cfg["prompt_tokens"], cfg["completion_tokens"],
                       len(tokenizer), seed=1)
    memory = PeakMemory()  # baseline: the model is built, nothing else
    timer = step_timer(cfg["warmup"])
    trainer, sample = _trainer(cfg, model, tokenizer, rows, [timer] if cfg["measure"] == "time" else [])
    trainer.train()
    if cfg["measure"] == "memory":
        return {"peak_mib": memory.peak_mib()}
    seconds, cpu_seconds = timer.seconds_per_step()
    return {"lists_per_s": cfg["lists_per_step"] / seconds, "s_per_step": seconds,
            "lists_per_cpu_s": cfg["lists_per_step"] / cpu_seconds, "cpu_s_per_step": cpu_seconds,
            "tokens_per_list": sample["input_ids"].numel() / cfg["lists_per_step"],
            "load_average": os.getloadavg()[0]}


def configurations(args) -> list[dict]:
    spec = {"model": args.model, "bf16": args.bf16, "vocab_size": args.vocab_size, "n_layer": args.n_layer,
            "n_embd": args.n_embd, "n_head": args.n_head, "n_positions": args.seq_tokens + 16}
    configs = []
    for ratio in args.ratios.split(","):
        p, c = (int(x) for x in ratio.split(":"))
        prompt_tokens = round(args.seq_tokens * p / (p + c))
        base = {"spec": spec, "ratio": ratio, "prompt_tokens": prompt_tokens,
                "completion_tokens": args.seq_tokens - prompt_tokens, "lists_per_step": args.lists_per_step,
                "steps": args.steps + args.warmup, "warmup": args.warmup, "threads": args.threads}
        for mode in args.trl_modes.split(","):
            configs.append({**base, "trainer": "trl", "trl_mode": mode, "method": f"TRL DPO, 3 pairs/list ({mode})"})
        configs.append({**base, "trainer": "pldpo", "prefix_sharing": False, "method": "PL-DPO, K rows"})
        configs.append({**base, "trainer": "pldpo", "prefix_sharing": True, "method": "PL-DPO, prefix sharing"})
    return configs


def add_ratios(results: list[dict], ratios: list[str]) -> None:
    """Speed and memory of every row relative to the faster TRL setting, and to PL-DPO's K rows, of its ratio."""
    for ratio in ratios:
        group = [r for r in results if r["ratio"] == ratio and "lists_per_s" in r]
        trl = [r for r in group if r["trainer"] == "trl"]
        rows = [r for r in group if r["trainer"] == "pldpo" and not r["prefix_sharing"]]
        fastest = max(trl, key=lambda r: r["lists_per_s"]) if trl else None
        for r in group:
            if fastest:
                r["speedup_vs_trl"] = r["lists_per_s"] / fastest["lists_per_s"]
                r["cpu_speedup_vs_trl"] = r["lists_per_cpu_s"] / max(t["lists_per_cpu_s"] for t in trl)
                r["memory_vs_trl"] = r["peak_mib"] / fastest["peak_mib"]
                r["memory_vs_leanest_trl"] = r["peak_mib"] / min(t["peak_mib"] for t in trl)
            if rows:
                r["speedup_vs_k_rows"] = r["lists_per_s"] / rows[0]["lists_per_s"]
                r["cpu_speedup_vs_k_rows"] = r["lists_per_cpu_s"] / rows[0]["lists_per_cpu_s"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="model id or path (default: a GPT-2 built from a config)")
    parser.add_argument("--bf16", action="store_true", help="bf16 mixed precision for both trainers (GPU)")
    parser.add_argument("--ratios", default="4:1,1:1", help="prompt:completion token ratios")
    parser.add_argument("--seq-tokens", type=int, default=160, help="prompt + completion tokens per completion")
    parser.add_argument("--lists-per-step", type=int, default=2, help="ranked lists (K=4) per optimizer step")
    parser.add_argument("--steps", type=int, default=3, help="timed optimizer steps")
    parser.add_argument("--warmup", type=int, default=1, help="untimed optimizer steps first")
    parser.add_argument("--rounds", type=int, default=1, help="time every configuration this often; keep the fastest")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on CPU (0: torch's choice); with 1, "
                        "CPU time per step is a measure that other processes on the machine barely disturb")
    parser.add_argument("--trl-modes", default="batch", help="batch, accumulate or both (comma-separated)")
    parser.add_argument("--n-layer", type=int, default=4)
    parser.add_argument("--n-embd", type=int, default=512)
    parser.add_argument("--n-head", type=int, default=8)
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--output", default="training", help="results file name under benchmarks/results/")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_result(run_configuration(json.loads(args.child)))
        return

    configs = configurations(args)
    results = [dict(cfg, rounds=[]) for cfg in configs]
    for cfg, result in zip(configs, results):
        memory = run_child(__file__, {**cfg, "measure": "memory"}, env=MEMORY_ENV)
        result["peak_mib"] = memory.get("peak_mib")
        result["error"] = memory.get("error")
    for round_ in range(args.rounds):  # round-robin, so that load from other processes hits every configuration
        for cfg, result in zip(configs, results):
            timing = run_child(__file__, {**cfg, "measure": "time"})
            if "error" in timing:
                result["error"] = timing["error"]
                continue
            result["rounds"].append({k: timing[k] for k in ("lists_per_s", "lists_per_cpu_s", "load_average")})
            if timing["lists_per_s"] >= result.get("lists_per_s", 0):  # keep the least disturbed round
                result.update({k: v for k, v in timing.items() if k not in cfg and k != "measure"})
            result["lists_per_cpu_s"] = max(r["lists_per_cpu_s"] for r in result["rounds"])
            print(f"  round {round_ + 1}  {cfg['ratio']:>4}  {cfg['method']:<34} {timing['lists_per_s']:.2f} lists/s"
                  f" {timing['lists_per_cpu_s']:.2f} lists/CPU-s (load {timing['load_average']:.1f}), "
                  f"peak {result['peak_mib']:.0f} MiB", flush=True)
    results = [{k: v for k, v in r.items() if v is not None} for r in results]
    add_ratios(results, args.ratios.split(","))
    print()
    print_table([r for r in results if "lists_per_s" in r], [
        ("ratio", "prompt:completion", ""), ("method", "method", ""), ("tokens_per_list", "tokens/list", ".0f"),
        ("lists_per_s", "lists/s", ".2f"), ("speedup_vs_trl", "vs TRL", ".2f"),
        ("speedup_vs_k_rows", "vs K rows", ".2f"), ("lists_per_cpu_s", "lists/CPU-s", ".2f"),
        ("cpu_speedup_vs_trl", "vs TRL (CPU time)", ".2f"), ("peak_mib", "peak MiB", ".0f"),
        ("memory_vs_trl", "memory vs TRL", ".2f")])
    for r in results:
        if "error" in r:
            print(f"ERROR {r['ratio']} {r['method']}: {r['error']}")
    path = write_results(args.output, {"machine": machine(), "arguments": vars(args), "results": results})
    print(f"\n'vs TRL' compares with the faster TRL setting of the same ratio. Results: {path}")


if __name__ == "__main__":
    main()
