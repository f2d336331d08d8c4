"""Stage 8: the results table (Markdown + JSON), the reward-KL frontier plot, the Best-of-N plot and the output
folder's README. Always rebuilt from the cached stage outputs (cheap)."""

import json
from pathlib import Path

from recipe_config import PREFERENCE_METHODS, RL_METHODS

LABELS = {
    "sft": "SFT (reference)", "dpo": "DPO (dpo_ext)", "trl_dpo": "DPO (trl.DPOTrainer)", "pl_dpo": "PL-DPO (K=4)",
    "preferred_ft": "Preferred-FT", "unlikelihood": "Unlikelihood", "rloo": "RLOO (GT reward)",
    "grpo": "GRPO (GT reward)",
}
COLORS = {
    "dpo": "tab:orange", "trl_dpo": "tab:brown", "pl_dpo": "tab:red", "preferred_ft": "tab:blue",
    "unlikelihood": "tab:green", "rloo": "tab:purple", "grpo": "tab:purple",
}
# dpo and trl_dpo should coincide (same loss, same data): distinct markers keep both visible when they do.
MARKERS = {"dpo": "o", "trl_dpo": "x", "pl_dpo": "s", "preferred_ft": "^", "unlikelihood": "v", "rloo": "D",
           "grpo": "D"}
KL_BUDGETS = (1.0, 2.0, 4.0, 7.0, 10.0)
# Pairs of methods compared at equal KL in the report: (method, baseline).
COMPARISONS = (("pl_dpo", "dpo"),)
SAMPLE_METHODS = ("dpo", "pl_dpo")  # runs (at the Best-of-N beta) whose completions the report shows next to SFT's


def best_within(points, budget):
    """The checkpoint with the highest reward among those whose KL is at most ``budget`` (None if none is)."""
    inside = [p for p in points if p["kl"] <= budget]
    return max(inside, key=lambda p: p["reward"]) if inside else None


def frontier_table(runs: dict) -> dict:
    """Per method, per KL budget: the best checkpoint of any of the method's runs within the budget (reward, its
    standard error, KL, run and step)."""
    by_method = {}
    for name, result in runs.items():
        by_method.setdefault(result["method"], []).extend({**p, "run": name} for p in result["checkpoints"])
    keep = ("reward", "reward_sem", "kl", "run", "step")
    table = {}
    for method, points in by_method.items():
        best = {b: best_within(points, b) for b in KL_BUDGETS}
        table[method] = {f"kl<={b:g}": None if p is None else {k: p[k] for k in keep} for b, p in best.items()}
    return table


def differences(frontier: dict) -> dict:
    """``method - baseline`` at every KL budget where both have a checkpoint, with the standard error of the
    difference (independent evaluations: the errors add in quadrature)."""
    out = {}
    for method, baseline in COMPARISONS:
        if method not in frontier or baseline not in frontier:
            continue
        row = {}
        for budget, point in frontier[method].items():
            other = frontier[baseline][budget]
            row[budget] = None if point is None or other is None else {
                "difference": round(point["reward"] - other["reward"], 4),
                "sem": round((point["reward_sem"] ** 2 + other["reward_sem"] ** 2) ** 0.5, 4)}
        out[f"{method}-{baseline}"] = row
    return out


def samples(sft_point: dict, runs: dict, beta: float) -> list[dict]:
    """The same eval prompts answered by SFT and by the final DPO and PL-DPO adapters at ``beta``: one entry per
    prompt, ``{policy name: {"text", "reward"}}``."""
    sources = {"sft": sft_point["examples"]}
    for name, run in runs.items():
        if run["method"] in SAMPLE_METHODS and run["beta"] == beta:
            sources[name] = run["examples"]
    count = min(len(v) for v in sources.values())
    return [{name: examples[i] for name, examples in sources.items()} for i in range(count)]


def summarize(sft_point, runs: dict, reward_metrics, pref_stats, bon, beta: float) -> dict:
    frontier = frontier_table(runs)
    return {
        "sft": {k: v for k, v in sft_point.items() if k != "examples"},
        "reward_model": reward_metrics,
        "preference_data": pref_stats,
        "runs": {name: {k: v for k, v in r.items() if k != "examples"} for name, r in runs.items()},
        "frontier_best_reward_within_kl": frontier,
        "frontier_differences": differences(frontier),
        "best_of_n": bon,
        "samples": samples(sft_point, runs, beta),
    }


def _fmt(value, digits=3):
    return "-" if value is None else f"{value:.{digits}f}"


def markdown(summary: dict) -> str:
    sft, rm = summary["sft"], summary["reward_model"]
    lines = [
        "# Controlled sentiment generation: results",
        "",
        f"Ground-truth reward: p(positive) from {rm.get('kind')}"
        + (f", held-out accuracy {rm['held_out_accuracy']:.3f} (48-word prefixes "
           f"{rm['held_out_accuracy_48_word_prefixes']:.3f})" if "held_out_accuracy" in rm else "") + ".",
        f"Reward and KL: {sft['num_samples']} samples on held-out prompts; KL(pi || pi_ref) is the sequence-level "
        "sample estimate. Mean +- standard error.",
        "",
        "| run | method | beta | alpha | reward | KL | steps |",
        "|---|---|---|---|---|---|---|",
        f"| sft | {LABELS['sft']} | - | - | {sft['reward']:.3f} +- {sft['reward_sem']:.3f} | 0 | - |",
    ]
    for name, r in summary["runs"].items():
        lines.append(
            f"| {name} | {LABELS.get(r['method'], r['method'])} | {r['beta']:g} | "
            f"{_fmt(r.get('unlikelihood_alpha'), 2)} | {r['ground_truth_reward']:.3f} +- "
            f"{r['ground_truth_reward_sem']:.3f} | {r['kl']:.2f} +- {r['kl_sem']:.2f} | {r['train_steps']} |"
        )
    lines += ["", "Frontier: the best checkpoint of a method (all its runs) whose KL is within each budget: reward +- "
              "standard error.", "",
              "| method | " + " | ".join(f"KL <= {b:g}" for b in KL_BUDGETS) + " |",
              "|---|" + "---|" * len(KL_BUDGETS)]
    for method, row in summary["frontier_best_reward_within_kl"].items():
        lines.append(f"| {LABELS.get(method, method)} | " + " | ".join(
            "-" if p is None else f"{p['reward']:.3f} +- {p['reward_sem']:.3f}" for p in row.values()) + " |")
    for name, row in summary["frontier_differences"].items():
        method, baseline = name.split("-")
        lines.append(f"| {LABELS.get(method, method)} - {LABELS.get(baseline, baseline)} | " + " | ".join(
            "-" if d is None else f"{d['difference']:+.3f} +- {d['sem']:.3f}" for d in row.values()) + " |")
    bon = summary.get("best_of_n")
    if bon:
        lines += ["", f"Best-of-N: {bon['samples_per_prompt']} samples from the SFT policy on {bon['prompts']} "
                  "held-out prompts; mean ground-truth reward of the sample each picker keeps +- standard error "
                  "over prompts. 'pair agreement': share of same-prompt sample pairs the picker orders like the "
                  "ground truth.", "",
                  "| picker | " + " | ".join(f"N={n}" for n in bon["N"]) + " | pair agreement |",
                  "|---|" + "---|" * (len(bon["N"]) + 1)]
        for picker, values in bon["picks"].items():
            sems = bon["picks_sem"][picker]
            lines.append(f"| {picker} | " + " | ".join(f"{v:.3f} +- {e:.3f}" for v, e in zip(values, sems))
                         + f" | {bon['pair_agreement'][picker]:.3f} |")
    if summary.get("samples"):
        lines += ["", "Samples: the first completion of each policy (final adapters) for the same held-out prompts, "
                  "with its ground-truth reward.", "", "| prompt | policy | reward | review so far |",
                  "|---|---|---|---|"]
        for i, entry in enumerate(summary["samples"], 1):
            for policy, example in entry.items():
                text = example["text"].replace("|", "/").replace("\n", " ")
                lines.append(f"| {i} | {policy} | {example['reward']:.3f} | {text} |")
    return "\n".join(lines) + "\n"


def frontier_plot(path: Path, sft_point, runs: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    seen = set()
    order = {m: i for i, m in enumerate(PREFERENCE_METHODS + RL_METHODS)}
    for r in sorted(runs.values(), key=lambda run: order.get(run["method"], 99)):
        method = r["method"]
        points = [{"kl": 0.0, "reward": sft_point["reward"]}] + r["checkpoints"]
        label = None if method in seen else LABELS.get(method, method)
        seen.add(method)
        ax.plot([p["kl"] for p in points], [p["reward"] for p in points], "-", color=COLORS.get(method), alpha=0.35)
        marker = MARKERS.get(method, "o")
        style = {"facecolors": "none", "edgecolors": COLORS.get(method)} if marker == "o" else {
            "color": COLORS.get(method)}
        ax.scatter([p["kl"] for p in points[1:]], [p["reward"] for p in points[1:]], s=40 if marker == "o" else 22,
                   marker=marker, label=label, **style)
        ax.errorbar([p["kl"] for p in points[1:]], [p["reward"] for p in points[1:]],
                    xerr=[p["kl_sem"] for p in points[1:]], yerr=[p["reward_sem"] for p in points[1:]], fmt="none",
                    ecolor=COLORS.get(method), alpha=0.3, linewidth=0.8)
    ax.scatter([0], [sft_point["reward"]], marker="*", s=120, color="black", label=LABELS["sft"], zorder=5)
    ax.set_xlabel("KL(pi || pi_ref), sequence level")
    ax.set_ylabel("ground-truth reward, p(positive)")
    ax.set_title("IMDb sentiment: reward vs KL, one point per checkpoint (+- s.e.)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def best_of_n_plot(path: Path, bon: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for picker, values in bon["picks"].items():
        errors = bon["picks_sem"][picker]
        if picker in ("ground_truth", "random"):
            label = {"ground_truth": "ground-truth reward (oracle)", "random": "random (expected)"}[picker]
            ax.errorbar(bon["N"], values, yerr=errors, fmt="--", capsize=2,
                        color="black" if picker == "ground_truth" else "gray", label=label)
            continue
        run_name = picker.removeprefix("implicit_")
        method = run_name.rsplit("_beta", 1)[0]
        ax.errorbar(bon["N"], values, yerr=errors, fmt="-" + MARKERS.get(method, "o"), capsize=2,
                    color=COLORS.get(method), label=f"implicit reward of {run_name}")
    ax.set_xscale("log", base=2)
    ax.set_xticks(bon["N"], [str(n) for n in bon["N"]])
    ax.set_xlabel("N (samples from the SFT policy)")
    ax.set_ylabel("ground-truth reward of the pick")
    ax.set_title("Best-of-N: picking by implicit vs ground-truth reward (+- s.e.)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(out: Path, summary: dict, license_note: str, command: str) -> None:
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    table = markdown(summary)
    (out / "results.md").write_text(table)
    frontier_plot(out / "frontier.png", summary["sft"], summary["runs"])
    if summary.get("best_of_n"):
        best_of_n_plot(out / "best_of_n.png", summary["best_of_n"])
    readme = [
        "# Controlled sentiment generation (DPO paper, section 6.1)",
        "",
        f"Produced by: `{command}`",
        "",
        "- `results.md`, `results.json`: the tables below; `frontier.png`: reward vs KL, one point per checkpoint; "
        "`best_of_n.png`: Best-of-N pickers.",
        "- `adapters/<run>/`: one ready-to-publish LoRA adapter per run (weights, config, tokenizer, "
        "`training_config.json`, `eval_results.json`); its base model is `sft/`.",
        "- `data/`, `tokenizer/`, `sft/`, `reward/`, `preferences/`, `best_of_n/`: cached stages; delete one to "
        "rebuild it (and what depends on it).",
        "",
        f"Data: {license_note}",
        "",
        table.split("\n", 2)[2],
    ]
    (out / "README.md").write_text("\n".join(readme))
