"""Stage 7b: Best-of-N (DPO paper's Best-of-N baseline: N samples from the SFT model, the one a reward ranks first
is kept). Here the picker varies: the ground-truth classifier (an oracle upper bound), the implicit reward
beta * log(pi/pi_ref) of a trained DPO / PL-DPO adapter, or chance. The y-axis is always the ground-truth reward
of the kept sample, so the question is whether the implicit reward ranks samples like the true reward does.
For chance the exact expectation (the mean reward) is reported.

Lower variance for free: for N < N_max the N_max samples of a prompt are cut into N_max / N disjoint groups and
every group contributes its pick.
"""

import json
from pathlib import Path

import evaluation
import generation
import preference_data
import torch


def picks_per_prompt(scores: torch.Tensor, truth: torch.Tensor, n: int) -> torch.Tensor:
    """Per prompt, the mean ground-truth reward of the highest-``scores`` sample in each disjoint group of ``n``.

    Args:
        scores (`torch.Tensor`): (P, N_max) the picker's scores.
        truth (`torch.Tensor`): (P, N_max) ground-truth rewards.

    Returns:
        `torch.Tensor`: (P,).
    """
    prompts, n_max = scores.shape
    groups = n_max // n
    scores = scores[:, : groups * n].reshape(prompts, groups, n)  # (P, G, n)
    truth = truth[:, : groups * n].reshape(prompts, groups, n)
    best = scores.argmax(-1, keepdim=True)  # (P, G, 1)
    return truth.gather(-1, best).squeeze(-1).mean(-1)


def per_prompt_stats(values: torch.Tensor) -> tuple[float, float]:
    """Mean over prompts and its standard error (prompts are the independent units), rounded as reported."""
    mean, sem = evaluation.mean_and_sem(values.tolist())
    return round(mean, 4), round(sem, 4)


def implicit_rewards(sft_dir, adapter_dir, prompts, samples, beta: float, use_cpu: bool = True) -> list:
    """beta * log pi(y|x) / pi_ref(y|x) of every sample, (P, N) as lists, scored by `dpo_ext.ImplicitRewardScorer`
    (pi: the SFT model with the adapter in ``adapter_dir``; pi_ref: that adapter disabled). ``samples`` are (P, N)
    token-id lists, as `generation.sample` returns. A `parallel.JobPool` job."""
    import bpe_tokenizer
    import sft_policy
    from peft import PeftModel

    from dpo_ext import ImplicitRewardScorer

    peft_model = PeftModel.from_pretrained(sft_policy.load(sft_dir, use_cpu), str(adapter_dir))
    scorer = ImplicitRewardScorer(peft_model, bpe_tokenizer.load(sft_dir), beta=beta)
    return scorer.score_tokens(prompts, samples).rewards.tolist()


def build(out_dir: Path, pool, sft_dir: Path, tokenizer, reward, prompts, scorer_dirs: dict, data_args, seed, log,
          use_cpu: bool = True) -> dict:
    """Sample N_max completions per prompt from the SFT policy, score them with every picker, write bon.json.
    Sampling shards and the scorers run as jobs on ``pool`` (a `parallel.JobPool`)."""
    n_max = data_args.best_of_n_max
    samples = generation.sample_in_shards(pool, sft_dir, prompts, n_max, data_args.max_new_tokens, seed + 2,
                                          use_cpu)  # (P, N_max)
    flat_prompts = [p for p, row in zip(prompts, samples) for _ in row]
    flat_completions = [c for row in samples for c in row]
    texts = [preference_data.reward_text(tokenizer, preference_data.decode(tokenizer, p),
                                         preference_data.decode(tokenizer, c))
             for p, c in zip(flat_prompts, flat_completions)]
    truth = torch.tensor(reward(texts)).reshape(len(prompts), n_max)
    pickers = {"ground_truth": truth}
    scores = pool.run([(implicit_rewards, str(sft_dir), adapter_dir, prompts, samples, beta, use_cpu)
                       for adapter_dir, beta in scorer_dirs.values()])
    for name, values in zip(scorer_dirs, scores):
        pickers[f"implicit_{name}"] = torch.tensor(values)
        log(f"best-of-n: implicit reward of {name} scored {len(texts)} samples")
    ns = [2**i for i in range(n_max.bit_length()) if 2**i <= n_max]
    stats = {name: [per_prompt_stats(picks_per_prompt(scores, truth, n)) for n in ns]
             for name, scores in pickers.items()}
    # A random pick's expected reward is the mean reward whatever N: use that exact value rather than a noisy draw.
    stats["random"] = [per_prompt_stats(truth.mean(-1))] * len(ns)
    agreement = {name: round(pair_agreement(scores, truth), 4) for name, scores in pickers.items()}
    agreement["random"] = 0.5
    result = {"N": ns, "prompts": len(prompts), "samples_per_prompt": n_max, "source": "SFT policy samples",
              "picks": {name: [m for m, _ in values] for name, values in stats.items()},
              "picks_sem": {name: [e for _, e in values] for name, values in stats.items()},
              "pair_agreement": agreement}
    (out_dir / "best_of_n.json").write_text(json.dumps(result, indent=2))
    return result


def pair_agreement(scores: torch.Tensor, truth: torch.Tensor) -> float:
    """Fraction of same-prompt sample pairs (ties in truth skipped) that ``scores`` orders like the ground truth."""
    score_diff = scores[:, :, None] - scores[:, None, :]  # (P, N, N)
    truth_diff = truth[:, :, None] - truth[:, None, :]
    valid = truth_diff != 0
    agree = (torch.sign(score_diff) == torch.sign(truth_diff)) & valid
    return (agree.sum() / valid.sum().clamp(min=1)).item()


def load(out_dir: Path) -> dict:
    return json.loads((out_dir / "best_of_n.json").read_text())
