"""The GPU suite: training (PL-DPO with prefix sharing vs TRL DPO on adjacent pairs, K=4 and 8, each architecture),
scoring (N=16 candidates of 512-token prompts, ImplicitRewardScorer vs naive two-model scoring), peak memory, MFU,
and the loss head's peak memory on 4,096-token lists (`lm_head_memory`, each architecture's vocabulary and width).
Writes one JSON and one Markdown table. Run it through ``bash benchmarks/gpu_suite.sh [--smoke]``.

Models are built from the published configs with random weights (`archs`), bf16 on a GPU; lists have HH's lengths
(`hh_lengths`); FLOPs and MFU follow `mfu`. Everything runs in one process: on a GPU the peak of every configuration is
exact (``torch.cuda.reset_peak_memory_stats`` before each, the previous model freed). ``--smoke`` runs the same code
at toy size on the CPU (float32, lengths x 0.1), where the RSS-based peaks only grow and are not comparable: the
smoke run checks that the suite works, its numbers mean nothing.
"""

import argparse
import gc
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from archs import ARCHS, arch_config, build_arch, shape_summary  # noqa: E402
from common import PeakMemory, machine, quiet, step_timer, word_tokenizer  # noqa: E402
from hh_lengths import hh_ranked_rows, row_lengths  # noqa: E402
from lm_head_memory import HEADS, add_head_ratios, measure_head  # noqa: E402
from mfu import dpo_list_flops, matmul_parameters, mfu, peak_tflops  # noqa: E402

METHODS = {"trl": "TRL DPO, K-1 adjacent pairs", "prefix": "PL-DPO, prefix sharing"}


def settings(args) -> dict:
    gpu = _gpu_name()
    smoke = args.smoke
    return {"smoke": smoke, "dtype": "bfloat16" if gpu and not smoke else "float32", "bf16": bool(gpu) and not smoke,
            "length_scale": 0.1 if smoke else 1.0, "lists_per_step": 2 if smoke else 4, "steps": 2 if smoke else 3,
            "warmup": 1, "max_length": 256 if smoke else 2048, "scoring_prompt_tokens": 32 if smoke else 512,
            "scoring_completion_tokens": 8 if smoke else 64, "scoring_n": 16, "scoring_prompts": 2 if smoke else 8,
            "archs": args.archs, "ks": args.ks}


def _gpu_name():
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else None


def _free():
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def train_one(arch: str, k: int, method: str, cfg: dict) -> dict:
    """Lists/s, peak memory, tokens processed and MFU of one training configuration."""
    from training import _trainer

    model = build_arch(arch, smoke=cfg["smoke"], dtype=cfg["dtype"])
    shape, n_params = shape_summary(model.config), matmul_parameters(model)
    tokenizer = word_tokenizer(model.config.vocab_size)
    lists, steps = cfg["lists_per_step"], cfg["steps"] + cfg["warmup"]
    rows = hh_ranked_rows(lists * steps, k, model.config.vocab_size, seed=1, scale=cfg["length_scale"])
    run = {"spec": {"bf16": cfg["bf16"]}, "lists_per_step": lists, "steps": steps, "k": k,
           "max_length": cfg["max_length"], "trainer": "trl" if method == "trl" else "pldpo",
           "trl_mode": "batch", "prefix_sharing": method == "prefix"}
    _free()
    memory = PeakMemory()  # baseline: the model is built
    timer = step_timer(cfg["warmup"])
    trainer, _ = _trainer(run, model, tokenizer, rows, [timer])
    trainer.train()
    seconds, _ = timer.seconds_per_step()
    lists_per_s = lists / seconds
    counted = [dpo_list_flops("trl" if method == "trl" else "prefix", *row_lengths(r), shape, n_params) for r in rows]
    tokens_per_list = sum(t for t, _ in counted) / len(counted)
    flops_per_list = sum(f for _, f in counted) / len(counted)
    result = {"arch": arch, "k": k, "method": METHODS[method], "lists_per_s": lists_per_s,
              "tokens_per_list": tokens_per_list, "tokens_per_s": tokens_per_list * lists_per_s,
              "flops_per_list": flops_per_list, "mfu": mfu(flops_per_list, lists_per_s, _gpu_name()),
              "peak_mib": memory.peak_mib(), "n_params": n_params}
    del trainer, model
    _free()
    return result


def heads_one(arch: str, cfg: dict) -> list[dict]:
    """The loss head's peak memory for ``arch``'s vocabulary and width, K = each of ``cfg["ks"]``."""
    config = arch_config(arch, smoke=cfg["smoke"])
    results = []
    for k in cfg["ks"]:
        for head in HEADS:
            _free()
            results.append({"arch": arch, **measure_head(head, k, config.vocab_size, config.hidden_size,
                                                         cfg["dtype"])})
    add_head_ratios(results)
    return results


def score_one(arch: str, cfg: dict) -> list[dict]:
    """Candidates/s and peak memory of naive two-model scoring and of the scorer, N candidates per prompt."""
    import torch
    from peft import LoraConfig, get_peft_model
    from scoring import _scoring_functions, make_tokens

    device = "cuda" if torch.cuda.is_available() else "cpu"
    policy = get_peft_model(build_arch(arch, smoke=cfg["smoke"], dtype=cfg["dtype"]),
                            LoraConfig(r=8, target_modules="all-linear", lora_dropout=0.0))
    with torch.no_grad():
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.02)  # a trained-looking adapter: policy and reference differ
    policy = policy.to(device).eval()
    spec = {"n": cfg["scoring_n"], "prompt_length": cfg["scoring_prompt_tokens"], "prompts": cfg["scoring_prompts"],
            "completion_length": cfg["scoring_completion_tokens"], "scorer_kwargs": {}}
    prompts, completions = make_tokens(spec, policy.config.vocab_size)
    results = []
    for method in ("naive", "scorer"):
        _free()
        memory = PeakMemory()
        score = _scoring_functions(spec, policy, [method])[method]
        score(prompts[:1], completions[:1])  # warm-up
        _sync()
        start = time.perf_counter()
        score(prompts[1:], completions[1:])
        _sync()
        seconds = time.perf_counter() - start
        results.append({"arch": arch, "method": method, "n": spec["n"], "prompt_tokens": spec["prompt_length"],
                        "candidates_per_s": spec["prompts"] * spec["n"] / seconds, "peak_mib": memory.peak_mib()})
        del score
    results[1]["speedup_vs_naive"] = results[1]["candidates_per_s"] / results[0]["candidates_per_s"]
    results[1]["memory_vs_naive"] = results[1]["peak_mib"] / max(results[0]["peak_mib"], 1e-9)
    del policy
    _free()
    return results


def _sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def add_ratios(training: list[dict]) -> None:
    for r in training:
        trl = next(t for t in training if t["arch"] == r["arch"] and t["k"] == r["k"] and t["method"] == METHODS["trl"])
        r["speedup_vs_trl"] = r["lists_per_s"] / trl["lists_per_s"]
        r["memory_vs_trl"] = r["peak_mib"] / max(trl["peak_mib"], 1e-9)


def markdown(payload: dict) -> str:
    info, cfg = payload["machine"], payload["settings"]
    device = info.get("gpu") or f"CPU ({info['cpu_count']} cores)"
    peak = peak_tflops(info.get("gpu"))
    size = "SMOKE RUN (toy sizes, numbers meaningless)" if cfg["smoke"] else "full size"
    lines = [f"Device: {device}; dense bf16 peak {peak or '-'} TFLOPS; {size}; torch {info['torch']}, "
             f"transformers {info.get('transformers')}, trl {info.get('trl')}", "",
             "| arch | K | method | tokens/list | lists/s | vs TRL | tokens/s | MFU | peak MiB | memory vs TRL |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in payload["training"]:
        mfu_cell = "-" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
        lines.append(f"| {r['arch']} | {r['k']} | {r['method']} | {r['tokens_per_list']:.0f} | {r['lists_per_s']:.2f} "
                     f"| {r['speedup_vs_trl']:.2f}x | {r['tokens_per_s']:.0f} | {mfu_cell} | {r['peak_mib']:.0f} "
                     f"| {r['memory_vs_trl']:.2f}x |")
    lines += ["", "| arch | N | prompt tokens | method | candidates/s | vs naive | peak MiB | memory vs naive |",
              "|---|---|---|---|---|---|---|---|"]
    for r in payload["scoring"]:
        lines.append(f"| {r['arch']} | {r['n']} | {r['prompt_tokens']} | {r['method']} | {r['candidates_per_s']:.1f} "
                     f"| {r.get('speedup_vs_naive', 1.0):.2f}x | {r['peak_mib']:.0f} "
                     f"| {r.get('memory_vs_naive', 1.0):.2f}x |")
    lines += ["", "Loss head, one 4,096-token list (1,024-token prompt), forward and backward:", "",
              "| arch | K | head | positions | peak MiB | vs TRL | seconds |", "|---|---|---|---|---|---|---|"]
    for r in payload["lm_head"]:
        ratio = "-" if r["vs_trl"] is None else f"{r['vs_trl']:.3f}x"
        lines.append(f"| {r['arch']} | {r['k']} | {r['head']} | {r['positions']} | {r['peak_mib']:.0f} | {ratio} "
                     f"| {r['seconds']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="toy sizes on the CPU: checks the code paths only")
    parser.add_argument("--archs", nargs="+", default=list(ARCHS), choices=list(ARCHS))
    parser.add_argument("--ks", nargs="+", type=int, default=[4, 8], help="completions per list")
    parser.add_argument("--scoring-arch", default="llama-3.2-1b", choices=list(ARCHS))
    parser.add_argument("--output-dir", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    quiet()
    import datasets
    import torch

    datasets.disable_progress_bars()

    if args.smoke:
        torch.set_num_threads(1)
    cfg = settings(args)
    training = []
    for arch in args.archs:
        for k in args.ks:
            for method in METHODS:
                training.append(train_one(arch, k, method, cfg))
                r = training[-1]
                print(f"{arch} K={k} {r['method']}: {r['lists_per_s']:.2f} lists/s, peak {r['peak_mib']:.0f} MiB",
                      file=sys.stderr, flush=True)
    add_ratios(training)
    scoring = score_one(args.scoring_arch, cfg)
    lm_head = [r for arch in args.archs for r in heads_one(arch, cfg)]
    payload = {"machine": machine(), "settings": cfg, "training": training, "scoring": scoring, "lm_head": lm_head}
    name = "gpu_suite_smoke" if args.smoke else "gpu_suite"
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    table = markdown(payload)
    (args.output_dir / f"{name}.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
