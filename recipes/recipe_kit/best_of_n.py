"""Best-of-N (the DPO paper's baseline: N samples from the SFT model, the one a reward ranks first is kept), picked by
the ground-truth reward (an oracle upper bound), by the implicit reward beta * log(pi/pi_ref) of trained adapters, or
by chance (its exact expectation, the mean reward). What counts is always the ground-truth reward of the kept sample:
does the implicit reward rank samples like the truth?

Lower variance for free: for N < N_max the N_max samples of a prompt are cut into N_max / N disjoint groups and
every group contributes its pick. Tensors are (P, N_max): prompts by samples.
"""

import torch

from recipe_kit.frontier import markdown_header, reported_mean_and_sem


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
    """Mean over prompts (the independent units) and its standard error, as reported."""
    return reported_mean_and_sem(values.tolist())


def pair_agreement(scores: torch.Tensor, truth: torch.Tensor) -> float:
    """Share of same-prompt sample pairs (ties in truth skipped, ties in scores wrong) that ``scores`` orders like
    ``truth``, pooled over prompts: `dpo_ext.ranking_metrics.pairwise_accuracy` averages per prompt instead, which
    differs when identical samples tie."""
    score_diff = scores[:, :, None] - scores[:, None, :]  # (P, N, N)
    truth_diff = truth[:, :, None] - truth[:, None, :]
    valid = truth_diff != 0
    agree = (torch.sign(score_diff) == torch.sign(truth_diff)) & valid
    return (agree.sum() / valid.sum().clamp(min=1)).item()


def implicit_rewards(base_dir, adapter_dir, prompts, samples, beta: float, use_cpu: bool = True) -> list:
    """beta * log pi(y|x) / pi_ref(y|x) of (P, N) token-id ``samples``, as lists (pi: the adapter in ``adapter_dir``
    on the model in ``base_dir``; pi_ref: that adapter disabled). A `recipe_kit.pool.JobPool` job."""
    from dpo_ext import ImplicitRewardScorer

    scorer = ImplicitRewardScorer.from_pretrained(str(adapter_dir), base_model=str(base_dir), beta=beta,
                                                  device="cpu" if use_cpu else None)
    return scorer.score_tokens(prompts, samples).rewards.tolist()


def build(pool, truth: torch.Tensor, prompts, samples, base_dir, scorers: dict, use_cpu: bool, log) -> dict:
    """`summarize` the pickers of (P, N_max) ``samples`` (token ids) of ``prompts`` from the model in ``base_dir``:
    ``truth``, their ground-truth rewards, and the implicit rewards of ``scorers`` (run name -> ``(adapter folder,
    beta)``), scored as jobs on ``pool``."""
    scores = pool.run([(implicit_rewards, str(base_dir), str(adapter_dir), prompts, samples, beta, use_cpu)
                       for adapter_dir, beta in scorers.values()])
    for name in scorers:
        log(f"best-of-n: implicit reward of {name} scored {truth.numel()} samples")
    implicit = {name: torch.tensor(values) for name, values in zip(scorers, scores)}
    return summarize(truth, implicit, source="SFT policy samples")


def summarize(truth: torch.Tensor, implicit: dict, source: str) -> dict:
    """The picks of every picker for N = 1, 2, 4, ... N_max, and each picker's pair agreement. ``truth``: (P, N_max)
    ground-truth rewards; ``implicit``: run name -> its (P, N_max) implicit rewards of the same samples."""
    prompts, n_max = truth.shape
    pickers = {"ground_truth": truth, **{f"implicit_{name}": scores for name, scores in implicit.items()}}
    ns = [2**i for i in range(n_max.bit_length()) if 2**i <= n_max]
    stats = {name: [per_prompt_stats(picks_per_prompt(s, truth, n)) for n in ns] for name, s in pickers.items()}
    # A random pick's expected reward is the mean reward whatever N: that exact value rather than a noisy draw.
    stats["random"] = [per_prompt_stats(truth.mean(-1))] * len(ns)
    agreement = {name: round(pair_agreement(s, truth), 4) for name, s in pickers.items()}
    return {"N": ns, "prompts": prompts, "samples_per_prompt": n_max, "source": source,
            "picks": {name: [m for m, _ in values] for name, values in stats.items()},
            "picks_sem": {name: [e for _, e in values] for name, values in stats.items()},
            "pair_agreement": {**agreement, "random": 0.5}}


def markdown_table(bon: dict) -> list[str]:
    """`summarize`'s result as Markdown lines: a caption, then one row per picker."""
    lines = [f"Best-of-N: {bon['samples_per_prompt']} samples from the SFT policy on {bon['prompts']} held-out "
             "prompts; mean ground-truth reward of the sample each picker keeps +- standard error over prompts. 'pair "
             "agreement': share of same-prompt sample pairs the picker orders like the ground truth.", "",
             *markdown_header("picker", [f"N={n}" for n in bon["N"]] + ["pair agreement"])]
    for picker, values in bon["picks"].items():
        cells = [f"{v:.3f} +- {e:.3f}" for v, e in zip(values, bon["picks_sem"][picker])]
        lines.append(f"| {picker} | " + " | ".join(cells) + f" | {bon['pair_agreement'][picker]:.3f} |")
    return lines
