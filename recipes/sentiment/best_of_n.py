"""Stage 7: Best-of-N (the DPO paper's baseline: N samples from the SFT model, the one a reward ranks first is kept),
picked by the ground-truth classifier (an oracle upper bound), by the implicit reward beta * log(pi/pi_ref) of a
trained DPO / PL-DPO adapter, or by chance (its exact expectation, the mean reward). What counts is always the
ground-truth reward of the kept sample: does the implicit reward rank samples like the truth?

Lower variance for free: for N < N_max the N_max samples of a prompt are cut into N_max / N disjoint groups and
every group contributes its pick. Tensors are (P, N_max): prompts by samples.
"""

import json
from pathlib import Path

import generation
import preference_data
import torch
from evaluation import mean_and_sem

from dpo_ext import ImplicitRewardScorer


def picks_per_prompt(scores: torch.Tensor, truth: torch.Tensor, n: int) -> torch.Tensor:
    """(P,): per prompt, the mean ground-truth reward ``truth`` of the highest-``scores`` sample of each disjoint
    group of ``n``."""
    prompts, n_max = scores.shape
    groups = n_max // n
    scores = scores[:, : groups * n].reshape(prompts, groups, n)  # (P, G, n)
    truth = truth[:, : groups * n].reshape(prompts, groups, n)
    best = scores.argmax(-1, keepdim=True)  # (P, G, 1)
    return truth.gather(-1, best).squeeze(-1).mean(-1)


def per_prompt_stats(values: torch.Tensor) -> tuple[float, float]:
    """Mean over prompts (the independent units) and its standard error, rounded as reported."""
    mean, sem = mean_and_sem(values.tolist())
    return round(mean, 4), round(sem, 4)


def pair_agreement(scores: torch.Tensor, truth: torch.Tensor) -> float:
    """Share of same-prompt sample pairs (ties in truth skipped, ties in scores wrong) that ``scores`` orders like
    ``truth``, pooled over prompts: `dpo_ext.ranking_metrics.pairwise_accuracy` averages per prompt instead, which
    differs when identical samples tie."""
    score_diff = scores[:, :, None] - scores[:, None, :]  # (P, N, N)
    truth_diff = truth[:, :, None] - truth[:, None, :]
    valid = truth_diff != 0
    agree = (torch.sign(score_diff) == torch.sign(truth_diff)) & valid
    return (agree.sum() / valid.sum().clamp(min=1)).item()


def implicit_rewards(sft_dir, adapter_dir, prompts, samples, beta: float, use_cpu: bool = True) -> list:
    """beta * log pi(y|x) / pi_ref(y|x) of (P, N) token-id ``samples``, as lists (pi: the adapter in ``adapter_dir``
    on the SFT model in ``sft_dir``; pi_ref: that adapter disabled). A `recipe_kit.pool.JobPool` job."""
    scorer = ImplicitRewardScorer.from_pretrained(str(adapter_dir), base_model=str(sft_dir), beta=beta,
                                                  device="cpu" if use_cpu else None)
    return scorer.score_tokens(prompts, samples).rewards.tolist()


def build(out_dir: Path, pool, sft_dir: Path, tokenizer, reward, prompts, scorer_dirs: dict, data_args, seed, log,
          use_cpu: bool = True) -> dict:
    """Sample N_max completions per prompt from the SFT policy, score them with every picker (``scorer_dirs``: run
    name -> (adapter folder, beta)), write best_of_n.json. Sampling shards and scorers are jobs on ``pool``."""
    n_max = data_args.best_of_n_max
    samples = generation.sample_in_shards(pool, sft_dir, prompts, n_max, data_args.max_new_tokens, seed + 2,
                                          use_cpu)  # (P, N_max)
    truth = torch.tensor(reward(preference_data.reward_texts(tokenizer, prompts, samples))).reshape(len(prompts), n_max)
    pickers = {"ground_truth": truth}
    scores = pool.run([(implicit_rewards, str(sft_dir), adapter_dir, prompts, samples, beta, use_cpu)
                       for adapter_dir, beta in scorer_dirs.values()])
    for name, values in zip(scorer_dirs, scores):
        pickers[f"implicit_{name}"] = torch.tensor(values)
        log(f"best-of-n: implicit reward of {name} scored {truth.numel()} samples")
    ns = [2**i for i in range(n_max.bit_length()) if 2**i <= n_max]
    stats = {name: [per_prompt_stats(picks_per_prompt(s, truth, n)) for n in ns] for name, s in pickers.items()}
    # A random pick's expected reward is the mean reward whatever N: that exact value rather than a noisy draw.
    stats["random"] = [per_prompt_stats(truth.mean(-1))] * len(ns)
    agreement = {name: round(pair_agreement(s, truth), 4) for name, s in pickers.items()}
    result = {"N": ns, "prompts": len(prompts), "samples_per_prompt": n_max, "source": "SFT policy samples",
              "picks": {name: [m for m, _ in values] for name, values in stats.items()},
              "picks_sem": {name: [e for _, e in values] for name, values in stats.items()},
              "pair_agreement": {**agreement, "random": 0.5}}
    (out_dir / "best_of_n.json").write_text(json.dumps(result, indent=2))
    return result


def load(out_dir: Path) -> dict:
    return json.loads((out_dir / "best_of_n.json").read_text())
