"""The win rate of a trained policy against the policy it started from (the SFT model), judged by a reward model;
and, with ``win_rate_vs_chosen``, against the test set's preferred responses, the DPO paper's baseline ("chosen",
its Fig. 3), which needs no sampling: each prompt's first ``chosen`` response in the test rows.

One completion per prompt is sampled from each, with the same settings and the same seed (``generation_seed + i``
for prompt i, so a prompt's samples do not depend on which other prompts are in the set). A reward model
(`AutoModelForSequenceClassification` with one output) scores ``prompt + completion``; the policy wins a prompt when
its completion scores higher, and a tie counts half. The DPO paper judged with GPT-4 instead (section 6.2); a
reward model is what can run offline and be reproduced.

Both policies come from one load of the saved adapter (`dpo_ext.ImplicitRewardScorer.from_pretrained`): the adapter
is the policy and, disabled, the SFT model. A full fine-tune (no adapter) is loaded with the SFT model beside it.
"""

import contextlib
import json
import logging
from pathlib import Path

import torch

from recipe_kit import free_memory

logger = logging.getLogger(__name__)

SAMPLES_FILE = "win_rate_samples.jsonl"


def distinct_prompts(rows: list[dict], limit: int) -> list:
    """The first ``limit`` distinct prompts of ``rows``, in order (one post is often in several comparisons)."""
    seen, prompts = set(), []
    for row in rows:
        key = json.dumps(row["prompt"], sort_keys=True)
        if key not in seen and len(prompts) < limit:
            seen.add(key)
            prompts.append(row["prompt"])
    return prompts


def chosen_responses(rows: list[dict], prompts: list) -> list[str]:
    """Each prompt's first ``chosen`` response in ``rows`` (the data's preferred response: the paper's baseline).

    Raises:
        `ValueError`: when a prompt's chosen response is not text (chat messages cannot be scored as a reply string).
    """
    first = {}
    for row in rows:
        first.setdefault(json.dumps(row["prompt"], sort_keys=True), row.get("chosen"))
    chosen = [first[json.dumps(prompt, sort_keys=True)] for prompt in prompts]
    if not all(isinstance(text, str) for text in chosen):
        raise ValueError("--win_rate_vs_chosen needs each test row's 'chosen' response as text; these rows have none, "
                         "or chat messages: leave --win_rate_vs_chosen false")
    return chosen


def win_rate_hook(settings, eval_rows: list[dict], sft_model: str, dtype: str | None = None):
    """The ``more_results`` callable of `dpo_ext.cli.train.run_training`: the win rate of the adapter it is given
    against ``sft_model`` (and against the test set's chosen responses with ``settings.win_rate_vs_chosen``) on the
    test prompts; `None` without a reward model (``settings``: `RecipeArguments`)."""
    prompts = distinct_prompts(eval_rows, settings.win_rate_prompts)
    if settings.reward_model_name is None or not prompts:
        return None
    chosen = chosen_responses(eval_rows, prompts) if getattr(settings, "win_rate_vs_chosen", False) else None
    return lambda policy_dir: win_rate(policy_dir, sft_model, prompts, settings, dtype, chosen)


def generation_config(settings) -> dict:
    """Sampling at ``settings.temperature`` without top-k / top-p (greedy at 0), up to ``max_new_tokens``."""
    if settings.temperature == 0:
        return {"do_sample": False, "max_new_tokens": settings.max_new_tokens}
    return {"do_sample": True, "temperature": settings.temperature, "top_k": 0, "top_p": 1.0,
            "max_new_tokens": settings.max_new_tokens}


def sample_texts(model, tokenizer, prompts: list, settings) -> list[str]:
    """One completion per prompt; prompt i is sampled alone, as a shard of the package's sampler seeded
    ``settings.generation_seed + i`` (the caller's random state is left as it was)."""
    from dpo_ext import sampling

    config = sampling.generation_config(tokenizer, generation_config(settings))
    return [tokenizer.decode(sampling.sample_shard(model, [sampling.encode_prompt(prompt, tokenizer)], 1, config,
                                                   settings.generation_seed + i)[0][0], skip_special_tokens=True)
            for i, prompt in enumerate(prompts)]


def sample_policy_and_sft(policy_dir, sft_model: str, prompts: list, settings, dtype=None) -> tuple[list, list]:
    """``(policy_texts, sft_texts)``: one completion per prompt from the trained policy in ``policy_dir`` and from
    ``sft_model``, sampled alike (``dtype``: a `torch.dtype` or `None`)."""
    from dpo_ext import ImplicitRewardScorer

    is_adapter = (Path(policy_dir) / "adapter_config.json").is_file()
    scorer = ImplicitRewardScorer.from_pretrained(str(policy_dir), dtype=dtype, base_model=sft_model if is_adapter
                                                  else None, ref_model=None if is_adapter else sft_model)
    model, tokenizer = scorer.model, scorer.tokenizer
    model.eval()
    policy = sample_texts(model, tokenizer, prompts, settings)
    sft, context = (model, model.disable_adapter()) if is_adapter else (scorer.ref_model, contextlib.nullcontext())
    with context:
        reference = sample_texts(sft.eval(), tokenizer, prompts, settings)
    del scorer, model, sft
    free_memory()
    return policy, reference


def reward_scores(reward_model_name: str, prompts: list, completions: list[str], batch_size: int = 8,
                  dtype=None) -> list[float]:
    """The reward model's score of each ``(prompt, completion)`` (`dpo_ext.judges.RewardModelJudge`: what it reads,
    truncation, chat prompts); the model is freed afterwards."""
    from dpo_ext.judges import RewardModelJudge

    judge = RewardModelJudge.from_pretrained(reward_model_name, batch_size=batch_size, dtype=dtype)
    scores = judge.score_flat(prompts, completions)
    del judge
    free_memory()
    return scores


def _win_share(rewards: list[float], baseline: list[float]) -> float:
    """The share of prompts whose policy reward beats the baseline's; a tie counts half."""
    return sum(1.0 if p > b else 0.5 if p == b else 0.0 for p, b in zip(rewards, baseline)) / len(rewards)


def win_rate(policy_dir, sft_model: str, prompts: list, settings, dtype: str | None = None,
             chosen: list[str] | None = None) -> dict:
    """Sample, score and count; the samples and their rewards go to ``policy_dir/win_rate_samples.jsonl``.
    ``dtype``: `trl.ModelConfig.dtype` (``"bfloat16"``...; `None` or ``"auto"``: as saved). ``chosen``: the
    test set's preferred response of each prompt, a second baseline (scored by the same reward model).

    Returns:
        `dict`: ``win_rate`` (against the SFT samples; ties count half), ``reward_policy`` and ``reward_sft`` (mean
        rewards), ``win_rate_prompts`` (how many prompts) and, with ``chosen``, ``win_rate_vs_chosen`` and
        ``reward_chosen``.
    """
    from dpo_ext.data.jsonl import write_jsonl

    dtype = None if dtype in (None, "auto") else getattr(torch, dtype)
    policy, sft = sample_policy_and_sft(policy_dir, sft_model, prompts, settings, dtype)
    sides = {"policy": policy, "sft": sft, **({"chosen": chosen} if chosen is not None else {})}
    n = len(prompts)
    rewards = reward_scores(settings.reward_model_name, prompts * len(sides), sum(sides.values(), []),
                            settings.reward_batch_size, dtype)
    rewards = {side: rewards[i * n:(i + 1) * n] for i, side in enumerate(sides)}  # (n,) per side, in sides' order
    write_jsonl(Path(policy_dir) / SAMPLES_FILE, [
        {"prompt": prompt, **{side: texts[i] for side, texts in sides.items()},
         **{f"reward_{side}": values[i] for side, values in rewards.items()}} for i, prompt in enumerate(prompts)])
    results = {"win_rate": _win_share(rewards["policy"], rewards["sft"]),
               **{f"reward_{side}": sum(values) / n for side, values in rewards.items()}, "win_rate_prompts": n}
    if chosen is not None:
        results["win_rate_vs_chosen"] = _win_share(rewards["policy"], rewards["chosen"])
    logger.warning("Win rate against the starting (SFT) policy, judged by %s on %d prompts: %.3f%s",
                   settings.reward_model_name, n, results["win_rate"],
                   f"; against the test set's chosen responses: {results['win_rate_vs_chosen']:.3f}"
                   if chosen is not None else "")
    return results

