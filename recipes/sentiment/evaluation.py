"""Stage 7a: a policy's point on the reward-KL plane (DPO paper, section 6.1, Figure 2 left).

- reward: mean ground-truth reward of completions sampled from the policy on held-out prompts;
- KL: sequence-level KL(pi || pi_ref) estimated from the same samples, mean over y ~ pi of
  sum_t [log pi(y_t | x, y_<t) - log pi_ref(y_t | x, y_<t)], the reference being the adapters disabled. Both
  log-probs come from `dpo_ext.ImplicitRewardScorer`, the package's scorer.

The same seed is used at every evaluation, so checkpoints and methods are compared on common random numbers.
"""

import logging
import math

import generation
import preference_data

NUM_EXAMPLES = 4  # completions kept per evaluation, shown in the report


def mean_and_sem(values) -> tuple[float, float]:
    """Mean of ``values`` and its standard error (sample standard deviation / sqrt(n); 0 for one value)."""
    n = len(values)
    mean = sum(values) / n
    variance = sum((v - mean) ** 2 for v in values) / max(1, n - 1)
    return mean, math.sqrt(variance / n)


def evaluate_policy(model, tokenizer, reward, prompts, samples_per_prompt, max_new_tokens, seed, has_adapter=True):
    """Reward and KL of ``model`` (a PeftModel; ``has_adapter=False`` for the SFT policy itself, KL 0).

    Returns:
        `dict`: ``reward``, ``reward_sem``, ``kl``, ``kl_sem``, ``num_samples`` and ``examples`` (text and reward
            of the first sample of each of the first `NUM_EXAMPLES` prompts).
    """
    completions = generation.sample(
        model, prompts, samples_per_prompt, max_new_tokens, tokenizer.eos_token_id, tokenizer.pad_token_id, seed=seed
    )  # (P, S)
    flat_prompts = [p for p, row in zip(prompts, completions) for _ in row]
    flat_completions = [c for row in completions for c in row]
    texts = [
        preference_data.reward_text(tokenizer, preference_data.decode(tokenizer, p),
                                    preference_data.decode(tokenizer, c))
        for p, c in zip(flat_prompts, flat_completions)
    ]
    rewards = reward(texts)
    if has_adapter:
        kls = log_ratios(model, tokenizer, prompts, completions).flatten().tolist()  # prompt-major, like texts
    else:
        kls = [0.0] * len(texts)
    reward_mean, reward_sem = mean_and_sem(rewards)
    kl_mean, kl_sem = mean_and_sem(kls)
    return {
        "reward": round(reward_mean, 4),
        "reward_sem": round(reward_sem, 4),
        "kl": round(kl_mean, 4),
        "kl_sem": round(kl_sem, 4),
        "num_samples": len(texts),
        # The first sample of the first prompts: with the shared seed, every policy answers the same prompts here.
        "examples": [{"text": texts[i], "reward": round(rewards[i], 4)}
                     for i in range(0, min(len(texts), NUM_EXAMPLES * samples_per_prompt), samples_per_prompt)],
    }


def sft_eval_job(out, args, settings: dict) -> dict:
    """Stage 6, the SFT policy's own point (its KL to itself is 0), as a `parallel.JobPool` job."""
    import json

    import sft_policy
    import stage_outputs
    from stage_cache import stage

    def build(d):
        inputs = stage_outputs.load(out, args)
        point = evaluate_policy(
            sft_policy.load(inputs.sft_dir, args.training.use_cpu), inputs.tokenizer, inputs.reward,
            inputs.prefs["prompts"]["eval"], args.run.eval_samples_per_prompt, args.data.max_new_tokens,
            seed=args.training.seed + 1, has_adapter=False)
        (d / "eval_results.json").write_text(json.dumps(point, indent=2))

    return stage(6, "SFT evaluation", out / "sft_eval", build,
                 lambda d: stage_outputs.read_json(d / "eval_results.json"), settings=settings)


def log_ratios(peft_model, tokenizer, prompts, completions):
    """log pi(y|x) - log pi_ref(y|x) of every completion, (P, S); pi_ref is ``peft_model`` with adapters disabled.

    Args:
        prompts (`list[list[int]]`): P prompts' token ids.
        completions (`list[list[list[int]]]`): (P, S) sampled completions' token ids, each with at least one token
            (`generation.sample` keeps the first sampled token even when it is EOS).
    """
    from dpo_ext import ImplicitRewardScorer

    result = ImplicitRewardScorer(peft_model, tokenizer).score_tokens(prompts, completions)
    return result.policy_logps - result.ref_logps


def make_callback(run_name, tokenizer, reward, prompts, recipe_args, curve: list):
    """A `transformers.TrainerCallback` that appends ``{"step", reward, kl, ...}`` to ``curve`` every
    ``eval_every_steps`` optimizer steps: the checkpoints that trace each run's frontier (paper: every 100 steps)."""
    from transformers import TrainerCallback

    class FrontierCallback(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            every = recipe_args.run.eval_every_steps
            if every <= 0 or state.global_step % every != 0 or not state.is_world_process_zero:
                return
            if state.global_step >= state.max_steps:  # the final evaluation (of the saved adapter) covers it
                return
            point = evaluate_policy(
                model, tokenizer, reward, prompts, recipe_args.run.eval_samples_per_prompt,
                recipe_args.data.max_new_tokens, seed=recipe_args.training.seed + 1,
            )
            point.pop("examples")
            curve.append({"step": state.global_step, **point})
            logging.getLogger("sentiment").info(
                f"{run_name} step {state.global_step}: reward {point['reward']:.3f}, KL {point['kl']:.2f}")

    return FrontierCallback()
