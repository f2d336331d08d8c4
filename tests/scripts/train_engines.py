"""Run by tests/training/test_distributed.py: two tiny PLDPOTrainer runs with LoRA reference sharing, on one process
or under torchrun on 2 CPU processes (gloo), with the same global batch of 4 lists:

- run ``precomputed``: reference log-probs precomputed before training (the ``ref_logps`` column is written out);
- run ``live``: the reference is the model with its adapters disabled, at every step.

Usage: ``train_engines.py OUT_DIR TESTS_DIR ENGINE`` with ENGINE ``single``, ``ddp`` or ``fsdp2``. Writes
``OUT_DIR/<run>/adapter/`` and, from the main process, ``OUT_DIR/summary.json``.

FSDP2 on CPU: accelerate picks FSDP only on accelerators; on CPU it runs plain data parallelism and ignores the FSDP
settings. So for ``fsdp2`` the accelerator state is told it is FSDP, and accelerate then shards the model with torch's
``fully_shard`` exactly as on GPUs (checked below: parameters are DTensors). Saving needs one more step on CPU: the
full state dict accelerate gathers (``cpu_offload=True``) still holds the adapter weights as DTensors whose storage
FSDP has freed, so this script gathers those with ``full_tensor()`` and copies every tensor. (Whether a GPU run needs
the same has not been checked here.)
"""

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

OUT, ENGINE = sys.argv[1], sys.argv[3]
GLOBAL_BATCH = 4
torch.set_num_threads(1)
engine_settings = {}
if ENGINE == "fsdp2":
    import accelerate.accelerator
    import accelerate.state
    from accelerate.utils import DistributedType

    original_init = accelerate.state.AcceleratorState.__init__

    def fsdp_on_cpu(self, *args, fsdp_plugin=None, **kwargs):
        original_init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        if fsdp_plugin is not None:
            self.distributed_type, self.fsdp_plugin = DistributedType.FSDP, fsdp_plugin

    accelerate.state.AcceleratorState.__init__ = fsdp_on_cpu
    original_get_state_dict = accelerate.accelerator.Accelerator.get_state_dict
    def gathered_state_dict(self, model, unwrap=True):
        from torch.distributed.tensor import DTensor

        state = original_get_state_dict(self, model, unwrap)
        return {k: (v.full_tensor() if isinstance(v, DTensor) else v).clone() for k, v in state.items()}

    accelerate.accelerator.Accelerator.get_state_dict = gathered_state_dict
    engine_settings = {"fsdp": "full_shard", "fsdp_config": {
        "fsdp_version": 2, "transformer_layer_cls_to_wrap": ["GPT2Block"], "reshard_after_forward": True,
        "state_dict_type": "FULL_STATE_DICT"}}


def run(name: str, precompute: bool) -> dict:
    model, tokenizer = tiny_causal_lm()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    args = PLDPOConfig(output_dir=f"{OUT}/{name}", per_device_train_batch_size=GLOBAL_BATCH // world,
                       per_device_eval_batch_size=2, learning_rate=1e-2, max_steps=3, logging_steps=1,
                       report_to="none", use_cpu=True, save_strategy="no", beta=1.0, seed=0,
                       ddp_find_unused_parameters=False, precompute_ref_log_probs=precompute, **engine_settings)
    trainer = PLDPOTrainer(model, args=args, train_dataset=datasets.Dataset.from_list(ranked_rows(8, k=3)),
                           processing_class=tokenizer,
                           peft_config=LoraConfig(r=4, target_modules=["c_attn"], task_type="CAUSAL_LM"))
    trainer.train()
    trainer.save_model(f"{OUT}/{name}/adapter")
    from torch.distributed.tensor import DTensor

    return {"world_size": trainer.accelerator.num_processes, "reference": trainer.reference.name,
            "sharded_parameters": sum(isinstance(p, DTensor) for p in trainer.model_wrapped.parameters()),
            "losses": [h["loss"] for h in trainer.state.log_history if "loss" in h],
            "ref_logps": list(trainer.train_dataset["ref_logps"]) if precompute else None}


summary = {"precomputed": run("precomputed", True), "live": run("live", False)}
if int(os.environ.get("RANK", "0")) == 0:
    with open(f"{OUT}/summary.json", "w") as f:
        json.dump(summary, f)
if torch.distributed.is_initialized():
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
# Everything is written. About one run in ten, a gloo/torch worker thread is still joinable when the interpreter
# tears down its C++ statics and the process aborts ("terminate called without an active exception") after the
# script's last line; leaving without that teardown keeps the exit code about our code, not about it.
sys.stdout.flush()
sys.stderr.flush()
os._exit(0)
