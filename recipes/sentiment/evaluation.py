"""A policy's point on the reward-KL plane (DPO paper, section 6.1, Figure 2 left), for stage 6 and its checkpoints:
the mean ground-truth reward of completions sampled on held-out prompts, and the sequence-level KL(pi || pi_ref)
estimated from the same samples, the mean over y ~ pi of log pi(y|x) - log pi_ref(y|x) (pi_ref: the policy with its
adapters disabled; log-probs from `dpo_ext.ImplicitRewardScorer`). Every evaluation uses the same seed, so
checkpoints and methods are compared on common random numbers.
"""

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import policy
import preference_data
from recipe_config import stage
from recipe_kit import frontier

from dpo_ext import ImplicitRewardScorer

NUM_EXAMPLES = 4  # completions kept per evaluation, shown in the report
log = logging.getLogger("sentiment")


def mean_and_sem(values) -> tuple[float, float]:
    """`recipe_kit.frontier.mean_and_sem` with 0 for the standard error of one value, as the reports print it; used
    over samples here and over prompts in Best-of-N."""
    mean, sem = frontier.mean_and_sem(values)
    return mean, 0.0 if sem is None else sem


def evaluate_policy(model, tokenizer, reward, prompts, samples_per_prompt, max_new_tokens, seed, has_adapter=True):
    """Reward and KL of ``model``, a PeftModel (``has_adapter=False``: the SFT policy itself, KL 0).

    Returns:
        `dict`: ``reward``, ``reward_sem``, ``kl``, ``kl_sem``, ``num_samples`` and ``examples``: text and reward of
            the first sample of each of the first `NUM_EXAMPLES` prompts (with the shared seed, every policy answers
            the same prompts there).
    """
    completions = policy.sample(model, prompts, samples_per_prompt, max_new_tokens, tokenizer.eos_token_id,
                                    tokenizer.pad_token_id, seed=seed)  # (P, S)
    texts = preference_data.reward_texts(tokenizer, prompts, completions)  # prompt-major, P * S
    rewards = reward(texts)
    kls = log_ratios(model, tokenizer, prompts, completions).flatten().tolist() if has_adapter else [0.0] * len(texts)
    point = {}
    for name, values in (("reward", rewards), ("kl", kls)):
        mean, sem = mean_and_sem(values)
        point.update({name: round(mean, 4), f"{name}_sem": round(sem, 4)})
    first = range(0, min(len(texts), NUM_EXAMPLES * samples_per_prompt), samples_per_prompt)
    return {**point, "num_samples": len(texts),
            "examples": [{"text": texts[i], "reward": round(rewards[i], 4)} for i in first]}


def log_ratios(peft_model, tokenizer, prompts, completions):
    """log pi(y|x) - log pi_ref(y|x), (P, S), of ``completions`` ((P, S) token-id lists, none empty) of ``prompts``
    (P token-id lists); pi_ref is ``peft_model`` with its adapters disabled."""
    result = ImplicitRewardScorer(peft_model, tokenizer).score_tokens(prompts, completions)
    return result.policy_logps - result.ref_logps


def stage_outputs(out: Path, args) -> SimpleNamespace:
    """What a `recipe_kit.pool.JobPool` job (training, evaluation) reads of the finished stages, from their folders:
    ``sft_dir``, ``tokenizer``, ``reward`` (texts -> list of floats) and ``prefs`` (the prompts and preference rows).
    Nothing but paths and settings crosses a process boundary."""
    import sentiment_reward

    return SimpleNamespace(sft_dir=out / "sft", tokenizer=policy.load_tokenizer(out / "tokenizer"),
                           reward=sentiment_reward.load(out / "reward", args.recipe_model.reward_model_name),
                           prefs=preference_data.load(out / "preferences"))


def sft_eval_job(out: Path, args, settings: dict) -> dict:
    """Stage 6, the SFT policy's own point (KL 0 to itself), as a `recipe_kit.pool.JobPool` job."""
    def build(d):
        inputs = stage_outputs(out, args)
        point = evaluate_policy(
            policy.load(inputs.sft_dir, args.training.use_cpu), inputs.tokenizer, inputs.reward,
            inputs.prefs["prompts"]["eval"], args.run.eval_samples_per_prompt, args.data.max_new_tokens,
            seed=args.training.seed + 1, has_adapter=False)
        (d / "eval_results.json").write_text(json.dumps(point, indent=2))

    return stage(6, "SFT evaluation", out / "sft_eval", build,
                 lambda d: json.loads((d / "eval_results.json").read_text()), settings=settings)


def make_callback(run_name, tokenizer, reward, prompts, recipe_args, curve: list):
    """A `transformers.TrainerCallback` that appends ``{"step", reward, kl, ...}`` to ``curve`` every
    ``eval_every_steps`` optimizer steps: the checkpoints that trace each run's frontier (paper: every 100 steps).
    Given to several trainings in turn (on-policy rounds), it numbers the steps across them."""
    from transformers import TrainerCallback

    class FrontierCallback(TrainerCallback):
        steps_before = 0  # steps of the trainings that came before this one

        def on_train_end(self, args, state, control, **kwargs):
            self.steps_before += state.global_step

        def on_step_end(self, args, state, control, model=None, **kwargs):
            step, every = state.global_step, recipe_args.run.eval_every_steps
            # The last step is left to the final evaluation, of the adapter as saved.
            if every <= 0 or step % every or step >= state.max_steps or not state.is_world_process_zero:
                return
            point = evaluate_policy(model, tokenizer, reward, prompts, recipe_args.run.eval_samples_per_prompt,
                                    recipe_args.data.max_new_tokens, seed=recipe_args.training.seed + 1)
            point.pop("examples")
            curve.append({"step": self.steps_before + step, **point})
            log.info(f"{run_name} step {step}: reward {point['reward']:.3f}, KL {point['kl']:.2f}")

    return FrontierCallback()
