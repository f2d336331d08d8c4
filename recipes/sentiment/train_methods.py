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

Each run's trainer config is the parsed `PLDPOConfig` with the run's output folder, loss, beta and alpha
(`run_config`); TRL's trainers get their own config class filled from it (`trl_config`). Every run writes a
ready-to-publish folder: adapter weights and config, tokenizer, ``training_config.json`` and
``eval_results.json`` (final reward and KL, plus the checkpoints that trace its frontier).
"""

import json
import time
from dataclasses import fields, replace
from pathlib import Path

import evaluation

LOSS_TYPES = {"dpo": "plackett_luce", "pl_dpo": "plackett_luce", "preferred_ft": "preferred_ft",
              "unlikelihood": "unlikelihood"}
# Trainer settings copied into training_config.json (what a model card shows).
_RECORDED = (
    "learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps",
    "lr_scheduler_type", "warmup_steps", "weight_decay", "optim", "max_length", "bf16", "seed", "beta",
    "loss_type", "unlikelihood_alpha", "num_generations", "max_completion_length", "reference", "prefix_sharing",
    "precompute_ref_log_probs",
)
# Fields trl.DPOConfig shares with PLDPOConfig, meaning the same thing in both.
_DPO_SHARED = ("beta", "max_length", "precompute_ref_log_probs", "precompute_ref_batch_size", "disable_dropout",
               "dataset_num_proc")


def plan_runs(args) -> list[dict]:
    """One dict per run: ``name``, ``method``, ``beta`` and (unlikelihood) ``alpha``: every beta of ``betas`` for the
    DPO family, every alpha of ``unlikelihood_alphas``, one run of each other method."""
    run_args, training_args = args.run, args.training
    betas, alphas = run_args.betas, run_args.unlikelihood_alphas
    runs = []
    for method in run_args.methods:
        if method in ("dpo", "trl_dpo", "pl_dpo"):
            runs += [{"name": f"{method}_beta{b:g}", "method": method, "beta": b} for b in betas]
        elif method == "unlikelihood":
            runs += [{"name": f"unlikelihood_alpha{a:g}", "method": method, "beta": training_args.beta, "alpha": a}
                     for a in alphas]
        elif method == "preferred_ft":
            runs.append({"name": "preferred_ft", "method": method, "beta": training_args.beta})
        else:  # RL baselines
            runs.append({"name": f"{method}_beta{run_args.rl_beta:g}", "method": method, "beta": run_args.rl_beta,
                         "max_steps": run_args.rl_max_steps})
    return runs


def run_config(training_args, run: dict, trainer_dir: Path):
    """The run's `PLDPOConfig`: the parsed one with the run's own output folder, beta, loss and alpha.

    ``push_to_hub`` is switched off for the trainer: the recipe publishes every folder itself, once all are done.
    """
    loss_type = LOSS_TYPES.get(run["method"], training_args.loss_type)  # TRL runs: unused
    return replace(training_args, output_dir=str(trainer_dir), push_to_hub=False, beta=run["beta"],
                   loss_type=loss_type, unlikelihood_alpha=run.get("alpha", training_args.unlikelihood_alpha))


def trl_config(config_class, training_args, **overrides):
    """A TRL trainer config with ``training_args``'s values for every `transformers.TrainingArguments` field, then
    ``overrides``. ``remove_unused_columns`` is left at the TRL default: PLDPOConfig's value is about its own columns.
    """
    from transformers import TrainingArguments

    generic = {f.name: getattr(training_args, f.name) for f in fields(TrainingArguments)
               if f.init and f.name != "remove_unused_columns"}
    return config_class(**{**generic, **overrides})


def trl_dpo_config(config):
    """The ``trl_dpo`` run's `trl.DPOConfig`: ``config``'s (its `PLDPOConfig`'s) values, sigmoid loss."""
    from trl import DPOConfig

    return trl_config(DPOConfig, config, **{name: getattr(config, name) for name in _DPO_SHARED}, loss_type=["sigmoid"])


def make_trainer(run, model, tokenizer, prefs, config, peft_config, callbacks, reward):
    """The one place a run's method becomes a trainer. Switch point: every dpo_ext method goes through PLDPOTrainer.

    ``config`` is the run's `PLDPOConfig` (`run_config`); TRL's trainers get their own config built from it.
    """
    from datasets import Dataset

    method = run["method"]
    pairwise = Dataset.from_list(prefs["pairwise"])
    if method == "trl_dpo":
        from trl import DPOTrainer

        return DPOTrainer(model=model, ref_model=None, args=trl_dpo_config(config), train_dataset=pairwise,
                          processing_class=tokenizer, peft_config=peft_config, callbacks=callbacks)
    if method in ("rloo", "grpo"):
        import rl_baseline

        return rl_baseline.make_trainer(method, run, model, tokenizer, prefs, config, peft_config, callbacks, reward)
    from dpo_ext import PLDPOTrainer

    data = Dataset.from_list(prefs["ranked"]) if method == "pl_dpo" else pairwise
    return PLDPOTrainer(model=model, ref_model=None, args=config, train_dataset=data, processing_class=tokenizer,
                        peft_config=peft_config, callbacks=callbacks)


def lora_config(model_args, model):
    """`dpo_ext.cli.train.lora_config` (the one for every command and recipe), ``fan_in_fan_out`` matching ``model``
    (bias "none": disabling the adapter then gives back the reference exactly)."""
    from dpo_ext.cli.train import lora_config as package_lora_config

    return package_lora_config(model_args, model)


def load_adapter(sft_dir: Path, adapter_dir: Path, use_cpu: bool):
    import sft_policy
    from peft import PeftModel

    model = PeftModel.from_pretrained(sft_policy.load(sft_dir, use_cpu), str(adapter_dir))
    return model.eval()


# Cost of a run relative to DPO's (the default run on CPU: RLOO 104 s, PL-DPO 96-100 s, the others 55-58 s), to
# start the longest jobs first. Only the wall time depends on the order.
_RELATIVE_COST = {"rloo": 1.8, "grpo": 1.8, "pl_dpo": 1.7, "trl_dpo": 1.5}


def relative_cost(run: dict) -> float:
    return _RELATIVE_COST.get(run["method"], 1.0)


def train_job(out: Path, args, run: dict, settings: dict) -> dict:
    """Stage 6 for one run, as a `parallel.JobPool` job: loads what it needs from the earlier stages' folders, trains
    into ``out/adapters/<run>`` (skipped when that folder is marked done) and returns its eval_results.json."""
    import stage_outputs
    from stage_cache import logger, stage

    def build(run_dir):
        inputs = stage_outputs.load(out, args)
        train_run(run, run_dir, inputs.sft_dir, inputs.tokenizer, inputs.prefs, inputs.reward,
                  inputs.prefs["prompts"]["eval"], args, logger.info)

    return stage(6, f"train {run['name']}", out / "adapters" / run["name"], build,
                 lambda d: stage_outputs.read_json(d / "eval_results.json"), all_processes=True, settings=settings)


def train_run(run, run_dir: Path, sft_dir: Path, tokenizer, prefs, reward, eval_prompts, args, log) -> dict:
    """Train one run, evaluate it, and write its publishable folder. Returns the content of eval_results.json."""
    import sft_policy

    model = sft_policy.load(sft_dir)
    curve = []
    callback = evaluation.make_callback(run["name"], tokenizer, reward, eval_prompts, args, curve)
    # The trainer's own output (logs) stays out of the publishable folder.
    config = run_config(args.training, run, run_dir.parent.parent / "trainer_output" / run_dir.name)
    start = time.time()
    trainer = make_trainer({**run, "max_new_tokens": args.data.max_new_tokens}, model, tokenizer, prefs, config,
                           lora_config(args.model, model), [callback], reward)
    trainer.train()
    seconds = time.time() - start
    trainer.save_model(str(run_dir))
    if not trainer.is_world_process_zero():
        return {}
    (run_dir / "training_args.bin").unlink(missing_ok=True)  # pickled; training_config.json replaces it
    # Evaluate the adapter as saved, on a fresh copy of the SFT model: checks the saved folder, and works whatever
    # sharding (FSDP, ZeRO-3) the trainer used.
    final = evaluation.evaluate_policy(
        load_adapter(sft_dir, run_dir, args.training.use_cpu), tokenizer, reward, eval_prompts,
        args.run.eval_samples_per_prompt, args.data.max_new_tokens, seed=args.training.seed + 1,
    )
    step = trainer.state.global_step
    if not curve or curve[-1]["step"] != step:
        curve.append({"step": step, **{k: v for k, v in final.items() if k != "examples"}})
    write_training_config(run_dir, trainer, run, args, seconds)
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
        "checkpoints": curve,
        "examples": final["examples"],
    }
    (run_dir / "eval_results.json").write_text(json.dumps(results, indent=2))
    log(f"{run['name']}: reward {final['reward']:.3f}, KL {final['kl']:.2f} after {step} steps ({seconds:.0f}s)")
    return results


def write_training_config(run_dir: Path, trainer, run: dict, args, seconds: float) -> None:
    """training_config.json: the trainer's own settings (as it used them), the LoRA settings, the run, and what it
    used (data, reward, base model: `publish.provenance`, which the model card reads)."""
    import publish

    config = {k: v for k, v in trainer.args.to_dict().items() if k in _RECORDED}
    if run["method"] != "unlikelihood":
        config.pop("unlikelihood_alpha", None)  # unused by every other loss
    lora = {name: getattr(args.model, name) for name in ("lora_r", "lora_alpha", "lora_dropout", "lora_target_modules")}
    trained = trainer.model.peft_config["default"]  # what the trainer really adapted (the RL run: the head in full)
    lora.update(lora_target_modules=sorted(trained.target_modules), modules_to_save=trained.modules_to_save)
    config.update({**publish.provenance(args), "method": run["method"], "run_name": run["name"],
                   "trainer": type(trainer).__name__,
                   "num_completions": args.data.num_completions if run["method"] == "pl_dpo" else 2,
                   "lora": lora, "train_seconds": round(seconds, 1)})
    (run_dir / "training_config.json").write_text(json.dumps(config, indent=2, default=str))
