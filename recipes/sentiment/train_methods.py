"""Stage 6: train each method as a LoRA adapter on the SFT model; the reference is that model with the adapter
disabled (the adapter starts at B = 0, so policy == reference at step 0).

| run            | trainer                                  | data                          |
|----------------|------------------------------------------|-------------------------------|
| dpo            | dpo_ext.PLDPOTrainer, plackett_luce      | pairwise (K = 2: sigmoid DPO) |
| trl_dpo        | trl.DPOTrainer, loss_type sigmoid        | the same pairwise rows        |
| pl_dpo         | dpo_ext.PLDPOTrainer, plackett_luce      | ranked, K = 4                 |
| preferred_ft   | dpo_ext.PLDPOTrainer, preferred_ft       | pairwise (SFT on the chosen)  |
| unlikelihood   | dpo_ext.PLDPOTrainer, unlikelihood       | pairwise                      |
| rloo / grpo    | trl.RLOOTrainer / trl.GRPOTrainer        | prompts + the classifier      |

Every run writes a ready-to-publish folder: adapter weights and config, tokenizer, ``training_config.json`` and
``eval_results.json`` (final reward and KL, plus the checkpoints that trace its frontier).
"""

import json
import time
from dataclasses import asdict
from pathlib import Path

import evaluation

PAIRWISE_LOSSES = {"dpo": "plackett_luce", "preferred_ft": "preferred_ft", "unlikelihood": "unlikelihood"}
# Arguments copied from the trainer config into training_config.json (what a model card shows).
_RECORDED = (
    "learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps",
    "lr_scheduler_type", "warmup_steps", "weight_decay", "optim", "max_length", "bf16", "seed", "beta",
    "loss_type", "unlikelihood_alpha", "num_generations", "max_completion_length",
)


def plan_runs(training_args) -> list[dict]:
    """One dict per run: ``name``, ``method``, ``beta`` and (unlikelihood) ``alpha``; the sweep widens them."""
    betas = training_args.sweep_betas if training_args.sweep else [training_args.beta]
    alphas = training_args.sweep_unlikelihood_alphas if training_args.sweep else [training_args.unlikelihood_alpha]
    methods = list(training_args.methods)
    if training_args.sweep and training_args.rl_method not in methods:
        methods.append(training_args.rl_method)
    runs = []
    for method in methods:
        if method in ("dpo", "trl_dpo", "pl_dpo"):
            runs += [{"name": f"{method}_beta{b:g}", "method": method, "beta": b} for b in betas]
        elif method == "unlikelihood":
            runs += [{"name": f"unlikelihood_alpha{a:g}", "method": method, "beta": training_args.beta, "alpha": a}
                     for a in alphas]
        elif method == "preferred_ft":
            runs.append({"name": "preferred_ft", "method": method, "beta": training_args.beta})
        else:  # RL baselines
            runs.append({"name": f"{method}_beta{training_args.beta:g}", "method": method, "beta": training_args.beta,
                         "max_steps": training_args.rl_max_steps})
    return runs


def common_trainer_kwargs(trainer_dir: Path, training_args, max_length: int) -> dict:
    return {
        "output_dir": str(trainer_dir),
        "per_device_train_batch_size": training_args.per_device_train_batch_size,
        "gradient_accumulation_steps": training_args.gradient_accumulation_steps,
        "learning_rate": training_args.learning_rate,
        "num_train_epochs": training_args.num_train_epochs,
        "optim": training_args.optim,
        "warmup_steps": training_args.warmup_steps,
        "max_length": max_length,
        "bf16": training_args.bf16,
        "gradient_checkpointing": training_args.gradient_checkpointing,
        "use_cpu": training_args.use_cpu,
        "logging_steps": training_args.logging_steps,
        "save_strategy": "no",
        "report_to": "none",
        "seed": training_args.seed,
        "disable_tqdm": False,
    }


def make_trainer(run, model, tokenizer, prefs, kwargs, peft_config, callbacks, reward):
    """The one place a run's method becomes a trainer. Switch point: every dpo_ext method goes through PLDPOTrainer."""
    from datasets import Dataset

    method = run["method"]
    pairwise = Dataset.from_list(prefs["pairwise"])
    if method == "trl_dpo":
        from trl import DPOConfig, DPOTrainer

        args = DPOConfig(**kwargs, beta=run["beta"], loss_type=["sigmoid"])
        return DPOTrainer(model=model, ref_model=None, args=args, train_dataset=pairwise, processing_class=tokenizer,
                          peft_config=peft_config, callbacks=callbacks)
    if method in ("rloo", "grpo"):
        import rl_baseline

        return rl_baseline.make_trainer(method, run, model, tokenizer, prefs, kwargs, peft_config, callbacks, reward)
    from dpo_ext import PLDPOConfig, PLDPOTrainer

    if method == "pl_dpo":
        data, loss_type = Dataset.from_list(prefs["ranked"]), "plackett_luce"
    else:
        data, loss_type = pairwise, PAIRWISE_LOSSES[method]
    args = PLDPOConfig(**kwargs, beta=run["beta"], loss_type=loss_type, unlikelihood_alpha=run.get("alpha", 1.0))
    return PLDPOTrainer(model=model, ref_model=None, args=args, train_dataset=data, processing_class=tokenizer,
                        peft_config=peft_config, callbacks=callbacks)


def lora_config(lora_args):
    from peft import LoraConfig

    return LoraConfig(
        r=lora_args.lora_r,
        lora_alpha=lora_args.lora_alpha,
        lora_dropout=lora_args.lora_dropout,
        target_modules=list(lora_args.lora_target_modules),
        fan_in_fan_out=True,  # GPT-2's Conv1D layers store weights transposed
        bias="none",  # with bias, disabling the adapter would not give back the reference
        task_type="CAUSAL_LM",
    )


def load_adapter(sft_dir: Path, adapter_dir: Path, training_args):
    from peft import PeftModel

    import sft_policy

    model = PeftModel.from_pretrained(sft_policy.load(sft_dir, training_args.use_cpu), str(adapter_dir))
    return model.eval()


def train_run(run, run_dir: Path, sft_dir: Path, tokenizer, prefs, reward, eval_prompts, args, log) -> dict:
    """Train one run, evaluate it, and write its publishable folder. Returns the content of eval_results.json."""
    import sft_policy

    model_args, lora_args, data_args, training_args = args
    model = sft_policy.load(sft_dir)
    curve = []
    callback = evaluation.make_callback(tokenizer, reward, eval_prompts, training_args, data_args, curve)
    # The trainer's own output (logs) stays out of the publishable folder.
    trainer_dir = run_dir.parent.parent / "trainer_output" / run_dir.name
    kwargs = common_trainer_kwargs(trainer_dir, training_args, model_args.context_length)
    start = time.time()
    trainer = make_trainer({**run, "max_new_tokens": data_args.max_new_tokens}, model, tokenizer, prefs, kwargs, lora_config(lora_args), [callback], reward)
    trainer.train()
    seconds = time.time() - start
    trainer.save_model(str(run_dir))
    if not trainer.is_world_process_zero():
        return {}
    (run_dir / "training_args.bin").unlink(missing_ok=True)  # pickled; training_config.json replaces it
    # Evaluate the adapter as saved, on a fresh copy of the SFT model: checks the saved folder, and works whatever
    # sharding (FSDP, ZeRO-3) the trainer used.
    final = evaluation.evaluate_policy(
        load_adapter(sft_dir, run_dir, training_args), tokenizer, reward, eval_prompts,
        training_args.eval_samples_per_prompt, data_args.max_new_tokens, seed=training_args.seed + 1,
    )
    step = trainer.state.global_step
    if not curve or curve[-1]["step"] != step:
        curve.append({"step": step, **{k: v for k, v in final.items() if k != "examples"}})
    config = {k: v for k, v in trainer.args.to_dict().items() if k in _RECORDED}
    config.update({"datasets": ["stanfordnlp/imdb"], "method": run["method"], "run_name": run["name"], "trainer": type(trainer).__name__,
                   "num_completions": data_args.num_completions if run["method"] == "pl_dpo" else 2,
                   "lora": asdict(lora_args), "train_seconds": round(seconds, 1)})
    (run_dir / "training_config.json").write_text(json.dumps(config, indent=2, default=str))
    results = {
        "ground_truth_reward": final["reward"],
        "ground_truth_reward_sem": final["reward_sem"],
        "kl": final["kl"],
        "kl_sem": final["kl_sem"],
        "num_eval_samples": final["num_samples"],
        "method": run["method"],
        "beta": run["beta"],
        **({"unlikelihood_alpha": run["alpha"]} if "alpha" in run else {}),
        "train_steps": step,
        "train_seconds": round(seconds, 1),
        "checkpoints": curve,
        "examples": final["examples"],
    }
    (run_dir / "eval_results.json").write_text(json.dumps(results, indent=2))
    log(f"{run['name']}: reward {final['reward']:.3f}, KL {final['kl']:.2f} after {step} steps ({seconds:.0f}s)")
    return results
