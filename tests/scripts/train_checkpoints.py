"""Run by tests/training/test_checkpoints.py: a training server that runs tiny PLDPOTrainer runs (6 steps over 1.5
epochs, a checkpoint every 2 steps) in forked children, and SIGKILLs them at a chosen point.

    python tests/scripts/train_checkpoints.py TESTS_DIR

The heavy imports (torch, transformers, peft, datasets: ~10 s) are paid once, and every run starts from the same
interpreter state. Each stdin line is a JSON request ``{"run_dir": ..., "resume": bool, "stop": null | "saved:N" |
"mid_save:N"}``; the answer is one stdout line ``@@{"exitcode": ..., "killed": bool}``. With ``saved:N`` the run stops
right after checkpoint N is complete; with ``mid_save:N`` in the middle of saving step N (model weights, optimizer
and scheduler written; RNG state and trainer_state not yet). A run that finishes writes its adapter to RUN_DIR/final
and its logged training entries (and how many steps this process ran) to RUN_DIR/summary.json. Exits when stdin
closes.
"""

import json
import multiprocessing
import os
import signal
import sys
import time

import datasets
import torch
from peft import LoraConfig
from transformers import TrainerCallback

sys.path.insert(0, sys.argv[1])  # the tests folder, for the shared row builders
from fixtures import ranked_rows  # noqa: E402

from dpo_ext import PLDPOConfig, PLDPOTrainer  # noqa: E402
from dpo_ext.testing import tiny_causal_lm  # noqa: E402

MARKER = "stopped"
TIMING_KEYS = ("epoch",)  # float progress; everything else a training log entry holds must match after a resume


def stop_here(run_dir):
    with open(os.path.join(run_dir, MARKER), "w") as f:
        f.write(str(os.getpid()))
    time.sleep(600)  # the server kills this process with SIGKILL


class CountSteps(TrainerCallback):
    """How many optimizer steps this process ran (a resumed run runs only the remaining ones)."""

    steps = 0

    def on_step_end(self, args, state, control, **kwargs):
        self.steps += 1


class StopAfterSave(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_save(self, args, state, control, **kwargs):  # called once _save_checkpoint has returned
        if state.global_step == self.step:
            stop_here(args.output_dir)


def train(run_dir, resume, stop):
    os.dup2(2, 1)  # the Trainer prints its logs: keep stdout for the server's answers
    torch.set_num_threads(1)
    model, tokenizer = tiny_causal_lm()
    args = PLDPOConfig(output_dir=run_dir, per_device_train_batch_size=2, learning_rate=1e-2, max_steps=6,
                       save_strategy="steps", save_steps=2, logging_steps=1, report_to=[], use_cpu=True, bf16=False,
                       gradient_checkpointing=False, dataloader_num_workers=0, max_length=32, beta=1.0, seed=0,
                       disable_tqdm=True)
    trainer = PLDPOTrainer(model, args=args, train_dataset=datasets.Dataset.from_list(ranked_rows(8, k=3)),
                           processing_class=tokenizer,
                           peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"], lora_dropout=0.0,
                                                  task_type="CAUSAL_LM"))
    counter = CountSteps()
    trainer.add_callback(counter)
    when, _, step = (stop or "").partition(":")
    if when == "saved":
        trainer.add_callback(StopAfterSave(int(step)))
    elif when == "mid_save":
        save_rng_state = trainer._save_rng_state  # runs after weights, optimizer and scheduler, before trainer_state

        def stop_mid_save(checkpoint_dir):
            if trainer.state.global_step == int(step):
                stop_here(run_dir)
            save_rng_state(checkpoint_dir)

        trainer._save_rng_state = stop_mid_save
    trainer.train(resume_from_checkpoint=True if resume else None)
    trainer.save_model(os.path.join(run_dir, "final"))
    logs = [{k: v for k, v in entry.items() if k not in TIMING_KEYS}
            for entry in trainer.state.log_history if "loss" in entry]
    with open(os.path.join(run_dir, "summary.json"), "w") as f:
        json.dump({"logs": logs, "global_step": trainer.state.global_step, "steps_run": counter.steps}, f)


def run(run_dir, resume=False, stop=None, timeout=120):
    os.makedirs(run_dir, exist_ok=True)
    marker = os.path.join(run_dir, MARKER)
    if os.path.exists(marker):
        os.remove(marker)
    child = multiprocessing.get_context("fork").Process(target=train, args=(run_dir, resume, stop))
    child.start()
    killed = False
    deadline = time.monotonic() + timeout
    while stop and child.is_alive() and time.monotonic() < deadline:
        if os.path.exists(marker):
            os.kill(child.pid, signal.SIGKILL)
            killed = True
            break
        time.sleep(0.02)
    child.join(max(0.0, deadline - time.monotonic()))
    if child.is_alive():
        os.kill(child.pid, signal.SIGKILL)
        child.join()
    return {"exitcode": child.exitcode, "killed": killed}


def serve():
    for line in sys.stdin:
        result = run(**json.loads(line))
        print("@@" + json.dumps(result), flush=True)


if __name__ == "__main__":
    serve()
