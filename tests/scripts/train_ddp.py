"""Run by tests/training/test_distributed.py under torchrun: a tiny PLDPOTrainer run on 2 CPU processes (gloo)."""

import json
import os
import sys

import datasets
import torch
from peft import LoraConfig

sys.path.insert(0, sys.argv[2])  # the tests folder, for the shared row builders
from fixtures import ranked_rows  # noqa: E402

from dpo_ext import PLDPOConfig, PLDPOTrainer  # noqa: E402
from dpo_ext.testing import tiny_causal_lm  # noqa: E402

torch.set_num_threads(1)
model, tokenizer = tiny_causal_lm()
args = PLDPOConfig(output_dir=sys.argv[1], per_device_train_batch_size=2, learning_rate=1e-2, max_steps=3,
                   logging_steps=1, report_to="none", use_cpu=True, save_strategy="no", beta=1.0, seed=0,
                   ddp_find_unused_parameters=False)
trainer = PLDPOTrainer(model, args=args, train_dataset=datasets.Dataset.from_list(ranked_rows(8, k=3)),
                       processing_class=tokenizer,
                       peft_config=LoraConfig(r=4, target_modules=["c_attn"], task_type="CAUSAL_LM"))
trainer.train()
trainer.save_model(sys.argv[1] + "/adapter")
if trainer.accelerator.is_main_process:
    summary = {"world_size": trainer.accelerator.num_processes, "reference": trainer.reference.name,
               "losses": [h["loss"] for h in trainer.state.log_history if "loss" in h]}
    with open(sys.argv[1] + "/summary.json", "w") as f:
        json.dump(summary, f)
trainer.accelerator.wait_for_everyone()
torch.distributed.destroy_process_group()
# Everything is written. About one run in ten, a gloo/torch worker thread is still joinable when the interpreter
# tears down its C++ statics and the process aborts ("terminate called without an active exception") after the
# script's last line; leaving without that teardown keeps the exit code about our code, not about it.
sys.stdout.flush()
sys.stderr.flush()
os._exit(0)
