"""Stage 6: train each method (`recipe_config.METHODS`: its loss and data) as a LoRA adapter on the SFT model; the
reference is that model with the adapter disabled (the adapter starts at B = 0, so policy == reference at step 0).
Every method with a loss trains through `dpo_ext.PLDPOTrainer`; ``trl_dpo`` is the same DPO through `trl.DPOTrainer`
(a parity check), ``rloo`` / ``grpo`` the RL baseline (both in `recipe_kit.trl_trainers`).

Rounds (`dpo_ext.rounds`, the package's on-policy loop): each round samples K completions from the current policy
for its own slice of the training prompts (1/rounds of them: the rounds train about as many steps on as many prompts
as one offline pass), labels them and trains; the reference stays the SFT model. ``rounds_self`` runs round 1 as
``rounds`` does (same seed: the same round), then labels each round with the implicit reward of the policy it starts
from (self-rewarding, DICE), the classifier left out.

RL baseline: the ground-truth classifier optimised directly by TRL's RLOO (or GRPO) under a KL penalty (``rl_beta``)
to the SFT policy, standing in for the paper's PPO-GT, which TRL no longer ships; its own step budget
(``rl_max_steps``), since on-policy sampling makes it the costliest run per step on CPU.

Each run's trainer config is the parsed `PLDPOConfig` with the run's output folder, loss, beta and alpha
(`run_config`); TRL's trainers get their own config class filled from it. Every run writes a ready-to-publish folder:
adapter, tokenizer, ``training_config.json`` and ``eval_results.json`` (final reward and KL, and the checkpoints that
trace its frontier).
"""

import json
import math
import shutil
import time
from dataclasses import replace
from itertools import accumulate
from pathlib import Path
from types import SimpleNamespace

import preference_data
import publish
from recipe_config import METHODS, logger, stage
from recipe_kit import reward_kl, trl_trainers
from recipe_kit.reward_kl import load_model

from dpo_ext.cli.train import lora_config  # the one LoRA config of every command and recipe


def plan_runs(args) -> list[dict]:
    """One dict per run: ``name``, ``method``, ``beta`` and (unlikelihood) ``alpha``: every beta of ``betas`` for the
    DPO family, every alpha of ``unlikelihood_alphas``, one run of each other method."""
    run_args, training_args = args.run, args.training
    runs = []
    for method in run_args.methods:
        if METHODS[method].per_beta:
            runs += [{"name": f"{method}_beta{b:g}", "method": method, "beta": b} for b in run_args.betas]
        elif method == "unlikelihood":
            runs += [{"name": f"unlikelihood_alpha{a:g}", "method": method, "beta": training_args.beta, "alpha": a}
                     for a in run_args.unlikelihood_alphas]
        elif METHODS[method].data == "rounds":
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
    loss_type = METHODS[run["method"]].loss_type or training_args.loss_type  # TRL runs: unused
    return replace(training_args, output_dir=str(trainer_dir), push_to_hub=False, beta=run["beta"],
                   loss_type=loss_type, unlikelihood_alpha=run.get("alpha", training_args.unlikelihood_alpha))


def make_trainer(run, model, inputs, config, peft_config, callbacks, args):
    """The one place a run's method becomes a trainer. Switch point: every dpo_ext method goes through PLDPOTrainer.

    ``config`` is the run's `PLDPOConfig` (`run_config`); TRL's trainers get their own config built from it.
    """
    method, prefs, tokenizer = run["method"], inputs.prefs, inputs.tokenizer
    if method == "trl_dpo":
        return trl_trainers.dpo_trainer(model, config, prefs["pairwise"], tokenizer, peft_config, callbacks)
    if METHODS[method].data == "prompts":
        return trl_trainers.rl_trainer(
            method, model, config, [row["prompt"] for row in prefs["ranked"]], inputs.reward, tokenizer, peft_config,
            callbacks, max_steps=run["max_steps"], beta=run["beta"], max_completion_length=args.data.max_new_tokens,
            num_generations=max(2, len(prefs["ranked"][0]["completions"])))  # K, as in the preference data
    from datasets import Dataset

    from dpo_ext import PLDPOTrainer

    data = Dataset.from_list(prefs["ranked" if METHODS[method].data == "ranked" else "pairwise"])
    return PLDPOTrainer(model=model, ref_model=None, args=config, train_dataset=data, processing_class=tokenizer,
                        peft_config=peft_config, callbacks=callbacks)


def stage_outputs(out: Path, args) -> SimpleNamespace:
    """What a `recipe_kit.pool.JobPool` job of this stage reads of the finished stages, from their folders:
    ``sft_dir``, ``tokenizer``, ``reward`` (texts -> list of floats) and ``prefs`` (the prompts and preference rows).
    Nothing but paths and settings crosses a process boundary."""
    import sentiment_reward

    return SimpleNamespace(sft_dir=out / "sft", tokenizer=reward_kl.load_tokenizer(out / "tokenizer"),
                           reward=sentiment_reward.load(out / "reward", args.recipe_model.reward_model_name),
                           prefs=preference_data.load(out / "preferences"))


def evaluate(model, inputs, args, has_adapter=True) -> dict:
    """`recipe_kit.reward_kl.evaluate_policy` on the eval prompts, with the evaluation seed (the same for every
    policy and checkpoint)."""
    return reward_kl.evaluate_policy(model, inputs.tokenizer, inputs.reward, inputs.prefs["prompts"]["eval"],
                                     args.run.eval_samples_per_prompt, args.data.max_new_tokens,
                                     seed=args.training.seed + 1, has_adapter=has_adapter)


def sft_eval_job(out: Path, args, settings: dict) -> dict:
    """Stage 6, the SFT policy's own point (KL 0 to itself), as a `recipe_kit.pool.JobPool` job."""
    def build(d):
        inputs = stage_outputs(out, args)
        point = evaluate(load_model(inputs.sft_dir, args.training.use_cpu), inputs, args, has_adapter=False)
        (d / "eval_results.json").write_text(json.dumps(point, indent=2))

    return stage(6, "SFT evaluation", out / "sft_eval", build,
                 lambda d: json.loads((d / "eval_results.json").read_text()), settings=settings)


def train_job(out: Path, args, run: dict, settings: dict) -> dict:
    """Stage 6 for one run, as a `JobPool` job: loads what it needs from the earlier stages' folders, trains
    into ``out/adapters/<run>`` (skipped when that folder is marked done) and returns its eval_results.json."""
    def build(run_dir):
        train_run(run, run_dir, stage_outputs(out, args), args)

    return stage(6, f"train {run['name']}", out / "adapters" / run["name"], build,
                 lambda d: json.loads((d / "eval_results.json").read_text()), all_processes=True, settings=settings)


def train_run(run: dict, run_dir: Path, inputs, args) -> dict:
    """Train one run (a trainer, or on-policy rounds), evaluate each adapter it saved, and write its publishable
    folder. Returns the content of eval_results.json (empty on processes other than the main one)."""
    # Every eval_every_steps steps (the callback), then each saved adapter (the rounds: one per round), evaluated
    # on a fresh copy of the SFT model: checks the saved folder, and works whatever sharding (FSDP, ZeRO-3) trained it.
    curve = []
    callbacks = [reward_kl.curve_callback(run["name"], args.run.eval_every_steps,
                                          lambda model: evaluate(model, inputs, args), curve, logger)]
    train = train_rounds if METHODS[run["method"]].data == "rounds" else train_trainer
    trained = train(run, run_dir, inputs, args, callbacks)
    if trained is None:
        return {}
    for step, adapter in trained["adapters"]:
        model = load_model(inputs.sft_dir, args.training.use_cpu, adapter=adapter)
        final = evaluate(model, inputs, args)
        if all(point["step"] != step for point in curve):
            curve.append({"step": step, **{k: v for k, v in final.items() if k != "examples"}})
        logger.info(f"{run['name']} step {step}, saved: reward {final['reward']:.3f}, KL {final['kl']:.2f}")
    curve.sort(key=lambda point: point["step"])
    publish.write_training_config(run_dir, trained["config"], model.peft_config["default"], trained["trainer"], run,
                                  args, trained["seconds"], **trained.get("more", {}))
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
    logger.info(f"{run['name']}: reward {final['reward']:.3f}, KL {final['kl']:.2f} after {step} steps "
                f"({trained['seconds']:.0f}s)")
    return results


def train_trainer(run, run_dir: Path, inputs, args, callbacks) -> dict | None:
    """One trainer (`make_trainer`), saved into ``run_dir``: its settings, name, time and ``[(steps, run_dir)]``
    (None on processes other than the main one)."""
    model = load_model(inputs.sft_dir)
    # The trainer's own output (logs) stays out of the publishable folder.
    config = run_config(args.training, run, run_dir.parent.parent / "trainer_output" / run_dir.name)
    start = time.time()
    trainer = make_trainer(run, model, inputs, config, lora_config(args.model, model), callbacks, args)
    trainer.train()
    seconds = time.time() - start
    trainer.save_model(str(run_dir))
    if not trainer.is_world_process_zero():
        return None
    (run_dir / "training_args.bin").unlink(missing_ok=True)  # pickled; training_config.json replaces it
    return {"config": trainer.args.to_dict(), "trainer": type(trainer).__name__, "seconds": seconds,
            "adapters": [(trainer.state.global_step, run_dir)]}


def train_rounds(run, run_dir: Path, inputs, args, callbacks) -> dict:
    """The on-policy rounds of ``run`` (`dpo_ext.rounds.run_rounds`, in ``<output_dir>/rounds/<run>``); the last
    round's adapter is copied into ``run_dir``. Returns what `train_trainer` does, every round's adapter listed."""
    from dpo_ext.rounds import RoundSettings, run_rounds

    # the ground truth, reading the review so far as everywhere in the recipe
    judge = reward_kl.reward_judge(inputs.reward, name="sentiment classifier (ground truth)")
    prompts = [preference_data.decode(inputs.tokenizer, ids) for ids in inputs.prefs["prompts"]["train"]]
    rounds = args.run.rounds
    settings = RoundSettings(
        rounds=rounds, k=args.data.num_completions, judge=judge, eval_judge=judge, reference="initial",
        seed=args.training.seed, generation={**reward_kl.SAMPLING, "max_new_tokens": args.data.max_new_tokens},
        prompts_per_round=math.ceil(len(prompts) / rounds))
    rounds_dir = run_dir.parent.parent / "rounds" / run_dir.name
    config = run_config(args.training, run, rounds_dir)
    lora = lora_config(args.model, load_model(inputs.sft_dir))
    shutil.rmtree(rounds_dir, ignore_errors=True)  # an unfinished run starts again (its curve counts every step)
    start = time.time()
    if run["method"] == "rounds_self":  # round 1 judged by the classifier, then by the policy itself
        run_rounds(lambda: load_model(inputs.sft_dir), inputs.tokenizer, prompts, config, replace(settings, rounds=1),
                   peft_config=lora, callbacks=callbacks)
        settings = replace(settings, judge="self")
    summaries = run_rounds(lambda: load_model(inputs.sft_dir), inputs.tokenizer, prompts, config, settings,
                           peft_config=lora, callbacks=callbacks)
    seconds = time.time() - start
    shutil.copytree(rounds_dir / f"round-{rounds}" / "adapter", run_dir, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("training_args.bin"))  # pickled; training_config.json replaces it
    steps = accumulate(s["train_steps"] for s in summaries)  # each round's end, counted from the first round's start
    return {"config": config.to_dict(), "trainer": "dpo_ext.rounds.run_rounds", "seconds": seconds,
            "adapters": [(step, rounds_dir / f"round-{s['round']}" / "adapter") for step, s in zip(steps, summaries)],
            "more": {"rounds": {"rounds": rounds, "judge": [s["judge"] for s in summaries],
                                "prompts_per_round": settings.prompts_per_round}}}
