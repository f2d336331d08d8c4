"""Stage 6: train each method as a LoRA adapter on the SFT model; the reference is that model with the adapter
disabled (the adapter starts at B = 0, so policy == reference at step 0).

| run          | trainer                                    | data                                      |
|--------------|--------------------------------------------|-------------------------------------------|
| dpo          | dpo_ext.PLDPOTrainer, plackett_luce        | best vs worst of K (K = 2: sigmoid DPO)   |
| trl_dpo      | trl.DPOTrainer, sigmoid                    | the same pairs                            |
| all_pairs    | dpo_ext.PLDPOTrainer, all_pairs            | the K = 4 ranked completions, every pair  |
| pl_dpo       | dpo_ext.PLDPOTrainer, plackett_luce        | the K = 4 ranked completions              |
| lipo         | dpo_ext.PLDPOTrainer, lipo_lambda          | the K = 4 completions and their scores    |
| rounds       | dpo_ext.rounds.run_rounds, plackett_luce   | K = 4 policy samples a round, classifier  |
| rounds_self  | the same, rounds 2.. self-rewarded         | the same, then the implicit reward        |
| preferred_ft | dpo_ext.PLDPOTrainer, preferred_ft         | the pairs (SFT on the chosen)             |
| unlikelihood | dpo_ext.PLDPOTrainer, unlikelihood         | the pairs                                 |
| rloo / grpo  | trl.RLOOTrainer / trl.GRPOTrainer          | prompts, the classifier as reward         |

Rounds (`dpo_ext.rounds`, the package's on-policy loop): each round samples K completions from the current policy
for its own slice of the training prompts (1/rounds of them: the rounds train about as many steps on as many prompts
as one offline pass), labels them and trains; the reference stays the SFT model. ``rounds_self`` runs round 1 as
``rounds`` does (same seed: the same round), then labels each round with the implicit reward of the policy it starts
from (self-rewarding, DICE), the classifier left out.

RL baseline: the ground-truth classifier optimised directly by TRL's RLOO (or GRPO) under a KL penalty (``rl_beta``)
to the SFT policy, standing in for the paper's PPO-GT, which TRL no longer ships; its own step budget
(``rl_max_steps``), since on-policy sampling makes it the costliest run per step on CPU.

Each run's trainer config is the parsed `PLDPOConfig` with the run's output folder, loss, beta and alpha
(`run_config`); TRL's trainers get their own config class filled from it (`trl_config`). Every run writes a
ready-to-publish folder: adapter, tokenizer, ``training_config.json`` and ``eval_results.json`` (final reward and KL,
and the checkpoints that trace its frontier).
"""

import json
import time
from dataclasses import fields, replace
from pathlib import Path

import evaluation

from dpo_ext.cli.train import lora_config  # the one LoRA config of every command and recipe

LOSS_TYPES = {"dpo": "plackett_luce", "pl_dpo": "plackett_luce", "all_pairs": "all_pairs", "lipo": "lipo_lambda",
              "preferred_ft": "preferred_ft", "unlikelihood": "unlikelihood", "rounds": "plackett_luce",
              "rounds_self": "plackett_luce"}
RANKED_METHODS = ("pl_dpo", "all_pairs", "lipo")  # trained on the K ranked completions (LiPO: on their scores)
BETA_METHODS = ("dpo", "trl_dpo", "pl_dpo", "all_pairs", "lipo")  # one run per beta of ``betas``
ROUND_METHODS = ("rounds", "rounds_self")
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
        if method in BETA_METHODS:
            runs += [{"name": f"{method}_beta{b:g}", "method": method, "beta": b} for b in betas]
        elif method == "unlikelihood":
            runs += [{"name": f"unlikelihood_alpha{a:g}", "method": method, "beta": training_args.beta, "alpha": a}
                     for a in alphas]
        elif method in ROUND_METHODS:
            runs.append({"name": f"{method}_beta{run_args.rounds_beta:g}", "method": method,
                         "beta": run_args.rounds_beta})
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
        return rl_trainer(method, run, model, tokenizer, prefs, config, peft_config, callbacks, reward)
    from dpo_ext import PLDPOTrainer

    data = Dataset.from_list(prefs["ranked"]) if method in RANKED_METHODS else pairwise
    return PLDPOTrainer(model=model, ref_model=None, args=config, train_dataset=data, processing_class=tokenizer,
                        peft_config=peft_config, callbacks=callbacks)


def rl_trainer(method, run, model, tokenizer, prefs, config, peft_config, callbacks, reward):
    """TRL's RLOO or GRPO trainer; its config takes ``config``'s (the run's `PLDPOConfig`) training settings."""
    from datasets import Dataset

    prompts = [row["prompt"] for row in prefs["ranked"]]
    dataset = Dataset.from_dict({"prompt": prompts})
    num_generations = max(2, len(prefs["ranked"][0]["completions"]))  # K, as in the preference data

    def ground_truth_reward(prompts, completions, **_):
        # The classifier reads the whole review so far, as everywhere else in the recipe.
        return reward([p + c.replace(tokenizer.eos_token, "") for p, c in zip(prompts, completions)])

    # Per-device batch counts completions; it must be a multiple of the completions per prompt.
    batch = config.per_device_train_batch_size
    overrides = {"max_steps": run["max_steps"], "beta": run["beta"],
                 "per_device_train_batch_size": max(num_generations, batch - batch % num_generations),
                 "num_generations": num_generations, "max_completion_length": run["max_new_tokens"],
                 "temperature": 1.0, "top_k": 0, "top_p": 1.0}
    if method == "rloo":
        from trl import RLOOConfig, RLOOTrainer

        args, trainer_class = trl_config(RLOOConfig, config, **overrides), RLOOTrainer
    else:
        from trl import GRPOConfig, GRPOTrainer

        args, trainer_class = trl_config(GRPOConfig, config, **overrides), GRPOTrainer
    return trainer_class(model=model, reward_funcs=ground_truth_reward, args=args, train_dataset=dataset,
                         processing_class=tokenizer, peft_config=head_trained_in_full(peft_config), callbacks=callbacks)


def head_trained_in_full(peft_config):
    """TRL's RL trainers compute log-probs from ``lm_head.weight`` directly and refuse a LoRA adapter on the LM head.
    An adapter that cannot move the head can barely shift the probability of single words on this tiny model (see
    the recipe README), so the RL run trains a full copy of the head instead (PEFT's ``modules_to_save``: its
    ``weight`` is the trained copy, and disabling the adapter gives back the SFT head, the reference)."""
    import copy

    config = copy.deepcopy(peft_config)
    if "lm_head" in config.target_modules:
        config.target_modules = {m for m in config.target_modules if m != "lm_head"}
        config.modules_to_save = sorted(set(config.modules_to_save or []) | {"lm_head"})
    return config


def load_adapter(sft_dir: Path, adapter_dir: Path, use_cpu: bool):
    import sft_policy
    from peft import PeftModel

    model = PeftModel.from_pretrained(sft_policy.load(sft_dir, use_cpu), str(adapter_dir))
    return model.eval()


# Cost of a run relative to DPO's (the default run on CPU: RLOO 104 s, PL-DPO 96-100 s, the others 55-58 s), to
# start the longest jobs first. Only the wall time depends on the order.
_RELATIVE_COST = {"rloo": 1.8, "grpo": 1.8, "pl_dpo": 1.7, "all_pairs": 1.7, "lipo": 1.7, "trl_dpo": 1.5,
                  "rounds": 2.5, "rounds_self": 3.0}


def relative_cost(run: dict) -> float:
    return _RELATIVE_COST.get(run["method"], 1.0)


def train_job(out: Path, args, run: dict, settings: dict) -> dict:
    """Stage 6 for one run, as a `JobPool` job: loads what it needs from the earlier stages' folders, trains
    into ``out/adapters/<run>`` (skipped when that folder is marked done) and returns its eval_results.json."""
    import stage_cache
    from stage_cache import logger, stage

    def build(run_dir):
        inputs = stage_cache.outputs(out, args)
        train_run(run, run_dir, inputs.sft_dir, inputs.tokenizer, inputs.prefs, inputs.reward,
                  inputs.prefs["prompts"]["eval"], args, logger.info)

    return stage(6, f"train {run['name']}", out / "adapters" / run["name"], build,
                 lambda d: stage_cache.read_json(d / "eval_results.json"), all_processes=True, settings=settings)


def train_run(run, run_dir: Path, sft_dir: Path, tokenizer, prefs, reward, eval_prompts, args, log) -> dict:
    """Train one run, evaluate it, and write its publishable folder. Returns the content of eval_results.json."""
    import sft_policy

    model = sft_policy.load(sft_dir)
    curve = []
    callback = evaluation.make_callback(run["name"], tokenizer, reward, eval_prompts, args, curve)
    # The trainer's own output (logs) stays out of the publishable folder.
    config = run_config(args.training, run, run_dir.parent.parent / "trainer_output" / run_dir.name)
    if run["method"] in ROUND_METHODS:
        return train_rounds(run, run_dir, sft_dir, tokenizer, prefs, reward, eval_prompts, args, log)
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
    write_training_config(run_dir, trainer.args.to_dict(), trainer.model.peft_config["default"], type(trainer).__name__,
                          run, args, seconds)
    return write_results(run_dir, run, final, step, curve, log, seconds)


def write_results(run_dir: Path, run: dict, final: dict, step: int, curve: list, log, seconds: float) -> dict:
    """eval_results.json of a run: the final evaluation, the curve of checkpoints, the examples. Returns it."""
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


def train_rounds(run, run_dir: Path, sft_dir: Path, tokenizer, prefs, reward, eval_prompts, args, log) -> dict:
    """The on-policy rounds of ``run`` (`dpo_ext.rounds.run_rounds`, in ``<output_dir>/rounds/<run>``), each round's
    adapter evaluated like every other run's checkpoints; the last round's adapter is the run's. Returns
    eval_results.json's content."""
    import math
    import shutil

    import generation
    import preference_data
    import sft_policy

    from dpo_ext.judges import FunctionJudge
    from dpo_ext.rounds import RoundSettings, run_rounds

    def classifier(prompts, completions):  # the ground truth, reading the review so far as everywhere in the recipe
        texts = [p + c for p, row in zip(prompts, completions) for c in row]
        scores, out, start = reward(texts), [], 0
        for row in completions:
            out.append([round(s, 6) for s in scores[start : start + len(row)]])
            start += len(row)
        return out

    judge = FunctionJudge(classifier, name="sentiment classifier (ground truth)")
    prompts = [preference_data.decode(tokenizer, ids) for ids in prefs["prompts"]["train"]]
    rounds = args.run.rounds
    settings = RoundSettings(
        rounds=rounds, k=args.data.num_completions, judge=judge, eval_judge=judge, reference="initial",
        seed=args.training.seed,
        generation={**generation.SAMPLING, "max_new_tokens": args.data.max_new_tokens},
        prompts_per_round=math.ceil(len(prompts) / rounds))
    rounds_dir = run_dir.parent.parent / "rounds" / run_dir.name
    config = run_config(args.training, run, rounds_dir)
    model = sft_policy.load(sft_dir)
    lora = lora_config(args.model, model)
    # Within a round, every eval_every_steps; at its end, the adapter as saved (as for every run's last point).
    curve = []
    callbacks = [evaluation.make_callback(run["name"], tokenizer, reward, eval_prompts, args, curve)]
    shutil.rmtree(rounds_dir, ignore_errors=True)  # an unfinished run starts again (its curve counts every step)
    start = time.time()
    if run["method"] == "rounds_self":  # round 1 judged by the classifier, then by the policy itself
        run_rounds(lambda: sft_policy.load(sft_dir), tokenizer, prompts, config, replace(settings, rounds=1),
                   peft_config=lora, callbacks=callbacks)
        settings = replace(settings, judge="self")
    summaries = run_rounds(lambda: sft_policy.load(sft_dir), tokenizer, prompts, config, settings, peft_config=lora,
                           callbacks=callbacks)
    seconds = time.time() - start
    step = 0
    for summary in summaries:
        step += summary["train_steps"]
        policy = load_adapter(sft_dir, rounds_dir / f"round-{summary['round']}" / "adapter", args.training.use_cpu)
        final = evaluation.evaluate_policy(policy, tokenizer, reward, eval_prompts, args.run.eval_samples_per_prompt,
                                           args.data.max_new_tokens, seed=args.training.seed + 1)
        curve.append({"step": step, **{k: v for k, v in final.items() if k != "examples"}})
        log(f"{run['name']} round {summary['round']}: reward {final['reward']:.3f}, KL {final['kl']:.2f}")
    curve.sort(key=lambda point: point["step"])
    shutil.copytree(rounds_dir / f"round-{rounds}" / "adapter", run_dir, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("training_args.bin"))  # pickled; training_config.json replaces it
    write_training_config(run_dir, config.to_dict(), policy.peft_config["default"], "dpo_ext.rounds.run_rounds",
                          run, args, seconds, rounds={"rounds": rounds, "judge": [s["judge"] for s in summaries],
                                                      "prompts_per_round": settings.prompts_per_round})
    return write_results(run_dir, run, final, step, curve, log, seconds)


def write_training_config(run_dir: Path, trainer_args: dict, trained, trainer_name: str, run: dict, args,
                          seconds: float, **more) -> None:
    """training_config.json: the trainer's own settings (as it used them), the LoRA settings, the run, and what it
    used (data, reward, base model: `publish.provenance`, which the model card reads)."""
    import publish

    config = {k: v for k, v in trainer_args.items() if k in _RECORDED}
    if run["method"] != "unlikelihood":
        config.pop("unlikelihood_alpha", None)  # unused by every other loss
    lora = {name: getattr(args.model, name) for name in ("lora_r", "lora_alpha", "lora_dropout", "lora_target_modules")}
    # ``trained``: the PEFT config the trainer really adapted (the RL run: the head in full)
    lora.update(lora_target_modules=sorted(trained.target_modules), modules_to_save=trained.modules_to_save)
    config.update({**publish.provenance(args), "method": run["method"], "run_name": run["name"],
                   "trainer": trainer_name, **more,
                   "num_completions": args.data.num_completions if run["method"] in RANKED_METHODS else 2,
                   "lora": lora, "train_seconds": round(seconds, 1)})
    (run_dir / "training_config.json").write_text(json.dumps(config, indent=2, default=str))
