"""Benchmark: what pinning the CPU kernels to AVX2 (`recipe_kit.instruction_set`) costs the sentiment recipe.

    python benchmarks/instruction_set.py             # ~2 min on CPU: 5 repeats of an unpinned and a pinned child

Each child builds the recipe's tiny GPT-2 (4 layers, 128 dim, vocabulary 2048) with a LoRA adapter (r=16 on c_attn,
c_proj, c_fc, lm_head), on one torch thread as the recipe runs, then times
- a DPO-like training step: the reference forward (adapter disabled, no grad), the policy forward and backward on
  64 rows of 24 tokens (32 pairs), the DPO loss (`dpo_ext.losses.plackett_luce_loss`, K=2), an AdamW step;
- a sampling call: `dpo_ext.sampling.sample_shard` as the recipe calls it, 64 prompts of 2-8 tokens, 4 completions
  each, 16 new tokens.
Times are process CPU seconds (one thread: the same as wall time on an idle machine, less noisy on a busy one),
the median over the steps/calls after the first. The unpinned and pinned children alternate, ``--repeats`` times;
the table gives the median of each and the median of the per-repeat ratios pinned / unpinned.
"""

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "recipes")]
from recipe_kit.instruction_set import AVX2_PIN, pin_instruction_set  # noqa: E402

ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=8, help="training steps per child (the first is not timed)")
    parser.add_argument("--calls", type=int, default=4, help="sampling calls per child (the first is not timed)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def child(cfg: dict) -> dict:
    if cfg["pinned"]:
        pin_instruction_set()  # before torch loads, as recipes/sentiment/run.py does
    import random

    import torch
    from common import quiet
    from peft import LoraConfig, get_peft_model
    from transformers import GPT2Config, GPT2LMHeadModel

    from dpo_ext.losses import plackett_luce_loss
    from dpo_ext.sampling import generation_config, sample_shard

    quiet()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    base = GPT2LMHeadModel(GPT2Config(vocab_size=2048, n_positions=64, n_embd=128, n_layer=4, n_head=4,
                                      bos_token_id=1, eos_token_id=1, pad_token_id=0))
    model = get_peft_model(base, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, task_type="CAUSAL_LM",
                                            target_modules=["c_attn", "c_proj", "c_fc", "lm_head"]))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    ids = torch.randint(2, 2048, (64, 24), generator=torch.Generator().manual_seed(1))  # (B, T): 32 pairs

    def sequence_logps(m):
        logits = m(input_ids=ids).logits[:, :-1]  # (B, T-1, V)
        return torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None]).squeeze(-1).sum(-1)  # (B,)

    def train_step():
        with torch.no_grad(), model.disable_adapter():
            ref = sequence_logps(model)
        loss = plackett_luce_loss(sequence_logps(model).view(32, 2), ref.view(32, 2), beta=1.0).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    rng = random.Random(2)
    prompts = [[rng.randrange(2, 2048) for _ in range(rng.randint(2, 8))] for _ in range(64)]
    config = generation_config(generation={"do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 1.0,
                                           "max_new_tokens": 16, "eos_token_id": 1, "pad_token_id": 0})

    def sample_call():
        sample_shard(model, prompts, 4, config, seed=3, batch_sequences=256, layout="by_length")

    def median_seconds(function, times):
        seconds = []
        for _ in range(times):
            start = time.process_time()
            function()
            seconds.append(time.process_time() - start)
        return statistics.median(seconds[1:])

    return {"capability": torch.backends.cpu.get_cpu_capability(),
            "train_s": median_seconds(train_step, cfg["steps"]), "sample_s": median_seconds(sample_call, cfg["calls"])}


def main(args) -> None:
    from common import child_result, print_table, run_child

    if args.child:
        child_result(child(json.loads(args.child)))
        return
    for name in (*AVX2_PIN, "MKL_CBWR"):  # the unpinned child gets this CPU's own kernels
        os.environ.pop(name, None)
    runs = {False: [], True: []}
    for _ in range(args.repeats):
        for pinned in (False, True):
            result = run_child(__file__, {"pinned": pinned, "steps": args.steps, "calls": args.calls}, ONE_THREAD)
            if "error" in result:
                raise SystemExit(f"child (pinned={pinned}) failed: {result['error']}")
            runs[pinned].append(result)
    rows = []
    for task, key in (("DPO-like training step (64 x 24 tokens)", "train_s"), ("sampling call (256 x 16 tokens)",
                                                                                "sample_s")):
        rows.append({"task": task,
                     "unpinned": statistics.median(r[key] for r in runs[False]),
                     "pinned": statistics.median(r[key] for r in runs[True]),
                     "ratio": statistics.median(p[key] / u[key] for u, p in zip(runs[False], runs[True]))})
    print(f"unpinned: torch {runs[False][0]['capability']} kernels; pinned: {runs[True][0]['capability']}; "
          f"{args.repeats} repeats, CPU seconds, medians")
    print_table(rows, [("task", "task", ""), ("unpinned", "unpinned s", ".4f"), ("pinned", "pinned s", ".4f"),
                       ("ratio", "pinned / unpinned", ".3f")])


if __name__ == "__main__":
    main(parse_args())
