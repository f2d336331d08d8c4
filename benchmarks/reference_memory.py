"""Peak memory of reference sharing (LoRA adapters disabled) vs a separate reference model, training and scoring.

    python benchmarks/reference_memory.py                 # 8-layer 512-dim GPT-2 from a config, CPU, ~1.5 minutes
    python benchmarks/reference_memory.py --model <id>    # any causal LM (on the GPU when there is one)

The policy is the same LoRA adapter (all linear layers, r=16) in every configuration; only the reference changes:
``shared`` = the policy's base model with its adapters disabled (one copy of the weights), ``separate`` = a second
copy of the base model (`ref_model`). ``train`` runs PLDPOTrainer for a few steps (prefix sharing on; with and
without gradient checkpointing); ``score`` computes policy and reference log-probs of ranked lists, forward only.

Each configuration runs in its own child process; peak memory = RSS high-water mark (or CUDA peak allocated) minus
the value *before* any model is built (everything imported), so the weights count: that is what sharing saves.
glibc is told to unmap freed blocks so that RSS follows the live tensors (see `common.MEMORY_ENV`). Writes
benchmarks/results/reference_memory.json.
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    MEMORY_ENV,
    PeakMemory,
    build_model,
    child_result,
    lora_config,
    machine,
    on_gpu,
    print_table,
    quiet,
    ranked_rows,
    run_child,
    write_results,
)

K = 4


def _train(cfg, model, ref_model, tokenizer, rows):
    import datasets

    from dpo_ext import PLDPOConfig, PLDPOTrainer

    args = PLDPOConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=cfg["lists_per_step"],
                       max_steps=cfg["steps"], learning_rate=1e-4, report_to="none", save_strategy="no",
                       disable_tqdm=True, use_cpu=not on_gpu(), bf16=cfg["spec"]["bf16"], prefix_sharing=True,
                       gradient_checkpointing=cfg["gradient_checkpointing"], max_length=cfg["seq_tokens"] + 8)
    trainer = PLDPOTrainer(model, ref_model=ref_model, args=args, train_dataset=datasets.Dataset.from_list(rows),
                           processing_class=tokenizer, peft_config=lora_config())
    assert trainer.reference.name == ("ref_model" if ref_model is not None else "disabled_adapters")
    trainer.train()


def _score(cfg, model, ref_model, tokenizer, rows):
    import datasets
    import torch
    from peft import get_peft_model

    from dpo_ext.data.collate import PackedRankedCollator
    from dpo_ext.data.tokenize import prepare_ranked_dataset
    from dpo_ext.modeling.batches import completion_logps
    from dpo_ext.reference import DisabledAdapterReference, ModelReference

    policy = get_peft_model(model, lora_config()).eval()
    # the trainer's reference sources; nothing wraps the model here, so there is nothing to unwrap
    reference = ModelReference(ref_model) if ref_model is not None else DisabledAdapterReference(lambda m: m)
    device = next(policy.parameters()).device
    dataset = prepare_ranked_dataset(datasets.Dataset.from_list(rows), tokenizer)
    collate = PackedRankedCollator(pad_token_id=tokenizer.pad_token_id)
    size = cfg["lists_per_step"]
    with torch.no_grad():
        for start in range(0, len(dataset), size):
            batch = collate([dataset[i] for i in range(start, min(start + size, len(dataset)))])
            batch = {k: v.to(device) for k, v in batch.items()}
            completion_logps(policy, batch)
            reference.ref_logps(policy, batch)


def _warm_up(cfg: dict) -> None:
    """Run the workload once on a throwaway 1-layer model, so that one-time costs of the process (kernel code paged
    in, thread pools, allocator arenas) are in the baseline rather than charged to the first configuration's model."""
    tiny = {**cfg["spec"], "model": None, "n_layer": 1, "n_embd": 64, "n_head": 2}
    model, tokenizer = build_model(tiny, seed=0)
    rows = ranked_rows(cfg["lists_per_step"], K, 8, 4, tiny["vocab_size"], seed=2)
    (_train if cfg["mode"] == "train" else _score)({**cfg, "steps": 1, "spec": tiny}, model, None, tokenizer, rows)


def run_configuration(cfg: dict) -> dict:
    quiet()
    import datasets  # noqa: F401  (everything is imported before the memory baseline)
    import peft  # noqa: F401
    import torch

    import dpo_ext.training.trainer  # noqa: F401

    torch.set_num_threads(cfg["threads"] or torch.get_num_threads())
    spec = cfg["spec"]
    prompt_tokens = cfg["seq_tokens"] * 4 // 5
    rows = ranked_rows(cfg["lists_per_step"] * cfg["steps"], K, prompt_tokens, cfg["seq_tokens"] - prompt_tokens,
                       spec["vocab_size"], seed=1)
    _warm_up(cfg)
    memory = PeakMemory()  # baseline: before any model exists
    model, tokenizer = build_model(spec, seed=0)
    ref_model = build_model(spec, seed=0)[0] if cfg["reference"] == "separate" else None
    if on_gpu():
        model = model.cuda()
        ref_model = ref_model.cuda() if ref_model is not None else None
    weights = sum(p.numel() * p.element_size() for m in (model, ref_model) if m is not None for p in m.parameters())
    (_train if cfg["mode"] == "train" else _score)(cfg, model, ref_model, tokenizer, rows)
    return {"peak_mib": memory.peak_mib(), "weights_mib": weights / 2**20}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="model id or path (default: a GPT-2 built from a config)")
    parser.add_argument("--bf16", action="store_true", help="load --model in bf16 and train with bf16")
    parser.add_argument("--seq-tokens", type=int, default=160, help="prompt + completion tokens (ratio 4:1)")
    parser.add_argument("--lists-per-step", type=int, default=2, help="ranked lists (K=4) per batch")
    parser.add_argument("--steps", type=int, default=2, help="training steps / scoring batches")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on CPU (0: torch's default)")
    parser.add_argument("--n-layer", type=int, default=8)
    parser.add_argument("--n-embd", type=int, default=512)
    parser.add_argument("--n-head", type=int, default=8)
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--output", default="reference_memory", help="results file name under benchmarks/results/")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_result(run_configuration(json.loads(args.child)))
        return

    spec = {"model": args.model, "bf16": args.bf16, "vocab_size": args.vocab_size, "n_layer": args.n_layer,
            "n_embd": args.n_embd, "n_head": args.n_head, "n_positions": args.seq_tokens + 16}
    base = {"spec": spec, "seq_tokens": args.seq_tokens, "lists_per_step": args.lists_per_step, "steps": args.steps,
            "threads": args.threads}
    workloads = [("train", True, "train, gradient checkpointing"), ("train", False, "train, no checkpointing"),
                 ("score", False, "score (forward only)")]
    results = []
    for mode, checkpointing, label in workloads:
        for reference in ("shared", "separate"):
            cfg = {**base, "mode": mode, "gradient_checkpointing": checkpointing, "reference": reference,
                   "workload": label}
            result = run_child(__file__, cfg, env=MEMORY_ENV)
            results.append(result)
            print(f"  {label:<30} {reference:<9} " + (
                f"peak {result['peak_mib']:.0f} MiB (weights {result['weights_mib']:.0f} MiB)"
                if "error" not in result else f"ERROR {result['error']}"), flush=True)
    for label in {r["workload"] for r in results}:
        pair = {r["reference"]: r for r in results if r["workload"] == label and "error" not in r}
        if len(pair) == 2:
            pair["shared"]["shared_vs_separate"] = pair["shared"]["peak_mib"] / pair["separate"]["peak_mib"]
    print()
    print_table([r for r in results if "error" not in r], [
        ("workload", "workload", ""), ("reference", "reference", ""), ("weights_mib", "weights MiB", ".0f"),
        ("peak_mib", "peak MiB", ".0f"), ("shared_vs_separate", "shared / separate", ".2f")])
    path = write_results(args.output, {"machine": machine(), "arguments": vars(args), "results": results})
    print(f"\nResults: {path}")


if __name__ == "__main__":
    main()
