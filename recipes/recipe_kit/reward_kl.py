"""Sampling a policy and placing it on the reward-KL plane (DPO paper, section 6.1, Figure 2 left), for a recipe that
compares methods by their frontier (`recipe_kit.frontier`): the mean ground-truth reward of completions sampled on
held-out prompts, and the sequence-level KL(pi || pi_ref) estimated from the same samples, the mean over y ~ pi of
log pi(y|x) - log pi_ref(y|x) (pi_ref: the policy with its adapters disabled; log-probs from
`dpo_ext.ImplicitRewardScorer`). Every evaluation uses the same seed, so checkpoints and methods are compared on
common random numbers.

Sampling is the package's sampler (`dpo_ext.sampling`; a prompt is token ids, a completion the sampled ids up to and
including the first EOS, never empty), from the untouched distribution: the KL estimate needs samples from pi itself.
Across processes it runs as `recipe_kit.pool.JobPool` jobs that load the model from its folder.
"""

import logging
from pathlib import Path

from dpo_ext import sampling
from dpo_ext.sampling import SHARD_SEQUENCES, shard_seed  # module names: the tests patch and call them

# No temperature, top-k or top-p warping (transformers skips top_k=0 and top_p=1.0).
SAMPLING = {key: sampling.DEFAULT_GENERATION[key] for key in ("do_sample", "temperature", "top_k", "top_p")}
NUM_EXAMPLES = 4  # completions kept per evaluation, shown in the report


def load_tokenizer(path: str | Path):
    """The tokenizer at ``path`` (a folder or Hub id), padding with EOS when it has no pad token (GPT-2's has none;
    padding is always masked out)."""
    from dpo_ext.modeling.tokenizers import ensure_pad_token, load_tokenizer

    tokenizer = load_tokenizer(str(path), "--model_name_or_path")
    ensure_pad_token(tokenizer, str(path))
    return tokenizer


def load_model(path: str | Path, use_cpu: bool = True, adapter: str | Path | None = None):
    """The causal LM saved in ``path`` (the recipe's SFT policy) in eval mode, on the GPU when one is there and
    ``use_cpu`` is off; with the LoRA ``adapter`` folder loaded on it, a `peft.PeftModel`."""
    import torch

    from dpo_ext.modeling.loading import load_causal_lm

    model = load_causal_lm(str(path), what="the SFT policy", hint="delete its folder to train it again")
    if not use_cpu and torch.cuda.is_available():
        model = model.to("cuda")
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model.eval(), str(adapter))
    return model.eval()


def sample(model, prompts, num_samples, max_new_tokens, eos_token_id, pad_token_id, seed):
    """(P, num_samples) completions as token-id lists, sampled as one shard seeded ``seed``. The caller's random
    state is left as it was, so sampling inside a training loop does not change the run."""
    config = sampling.generation_config(generation={**SAMPLING, "max_new_tokens": max_new_tokens,
                                                    "eos_token_id": eos_token_id, "pad_token_id": pad_token_id})
    # 256 sequences per call, "by_length": the layout the sentiment recipe's results were drawn with (the default pads)
    return sampling.sample_shard(model, prompts, num_samples, config, seed, batch_sequences=256, layout="by_length")


def sample_job(model_dir, prompts, num_samples, max_new_tokens, seed, use_cpu=True):
    """`sample` from the model and tokenizer saved in ``model_dir``: a `recipe_kit.pool.JobPool` job."""
    tokenizer = load_tokenizer(model_dir)
    return sample(load_model(model_dir, use_cpu), prompts, num_samples, max_new_tokens, tokenizer.eos_token_id,
                  tokenizer.pad_token_id, seed)


def sample_in_shards(pool, model_dir, prompts, num_samples, max_new_tokens, seed, use_cpu=True):
    """`sample_job` on ``pool`` over the package's shards of `SHARD_SEQUENCES` sequences, shard ``i`` seeded
    ``shard_seed(seed, i)``: the samples do not depend on the number of workers. Returns (P, num_samples) lists."""
    shards = sampling.plan_shards(len(prompts), num_samples, SHARD_SEQUENCES)
    results = pool.run([(sample_job, str(model_dir), prompts[s.start : s.stop], num_samples, max_new_tokens,
                         shard_seed(seed, i), use_cpu) for i, s in enumerate(shards)])
    return [row for shard in results for row in shard]


def reward_texts(tokenizer, prompts, completions) -> list[str]:
    """What the ground-truth reward reads for (P, K) completions of P prompts (token ids), prompt-major: the whole
    text so far, without special tokens."""
    return [tokenizer.decode(p) + tokenizer.decode(c).replace(tokenizer.eos_token, "")
            for p, row in zip(prompts, completions) for c in row]


def reward_judge(reward, name: str):
    """``reward(texts) -> list[float]`` over each prompt + completion (texts), as a `dpo_ext.judges` judge (the
    labels of on-policy rounds), scored in one call and rounded to 6 decimals as preference data keeps them."""
    from dpo_ext.judges import FunctionJudge

    def judge(prompts, completions):
        texts = [p + c for p, row in zip(prompts, completions) for c in row]
        scores, out, start = reward(texts), [], 0
        for row in completions:
            out.append([round(s, 6) for s in scores[start : start + len(row)]])
            start += len(row)
        return out

    return FunctionJudge(judge, name=name)


def log_ratios(peft_model, tokenizer, prompts, completions):
    """log pi(y|x) - log pi_ref(y|x), (P, S), of ``completions`` ((P, S) token-id lists, none empty) of ``prompts``
    (P token-id lists); pi_ref is ``peft_model`` with its adapters disabled."""
    from dpo_ext import ImplicitRewardScorer

    result = ImplicitRewardScorer(peft_model, tokenizer).score_tokens(prompts, completions)
    return result.policy_logps - result.ref_logps


def evaluate_policy(model, tokenizer, reward, prompts, samples_per_prompt, max_new_tokens, seed, has_adapter=True):
    """Reward and KL of ``model``, a PeftModel (``has_adapter=False``: the SFT policy itself, KL 0), on
    ``samples_per_prompt`` samples of each prompt; ``reward(texts) -> list[float]`` is the ground truth.

    Returns:
        `dict`: ``reward``, ``reward_sem``, ``kl``, ``kl_sem`` (0 for one sample), ``num_samples`` and ``examples``:
            text and reward of the first sample of each of the first `NUM_EXAMPLES` prompts (with the shared seed,
            every policy answers the same prompts there).
    """
    from recipe_kit.frontier import reported_mean_and_sem

    completions = sample(model, prompts, samples_per_prompt, max_new_tokens, tokenizer.eos_token_id,
                         tokenizer.pad_token_id, seed=seed)  # (P, S)
    texts = reward_texts(tokenizer, prompts, completions)  # prompt-major, P * S
    rewards = reward(texts)
    kls = log_ratios(model, tokenizer, prompts, completions).flatten().tolist() if has_adapter else [0.0] * len(texts)
    point = {}
    for name, values in (("reward", rewards), ("kl", kls)):
        point[name], point[f"{name}_sem"] = reported_mean_and_sem(values)
    first = range(0, min(len(texts), NUM_EXAMPLES * samples_per_prompt), samples_per_prompt)
    return {**point, "num_samples": len(texts),
            "examples": [{"text": texts[i], "reward": round(rewards[i], 4)} for i in first]}


def curve_callback(name: str, every: int, evaluate, curve: list, log: logging.Logger):
    """A `transformers.TrainerCallback` that appends ``{"step", **evaluate(model)}`` (``examples`` left out) to
    ``curve`` every ``every`` optimizer steps: the checkpoints that trace a run's frontier (paper: every 100 steps).
    Given to several trainings in turn (on-policy rounds), it numbers the steps across them."""
    from transformers import TrainerCallback

    class FrontierCallback(TrainerCallback):
        steps_before = 0  # steps of the trainings that came before this one

        def on_train_end(self, args, state, control, **kwargs):
            self.steps_before += state.global_step

        def on_step_end(self, args, state, control, model=None, **kwargs):
            step = state.global_step
            # The last step is left to the final evaluation, of the adapter as saved.
            if every <= 0 or step % every or step >= state.max_steps or not state.is_world_process_zero:
                return
            point = evaluate(model)
            point.pop("examples")
            curve.append({"step": self.steps_before + step, **point})
            log.info(f"{name} step {step}: reward {point['reward']:.3f}, KL {point['kl']:.2f}")

    return FrontierCallback()
