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
KL_BUDGETS = (0.5, 1.0, 2.0, 4.0, 8.0)


def best_within(points, budget):
    """Highest reward among checkpoints whose KL is at most ``budget`` (None if none is)."""
    rewards = [p["reward"] for p in points if p["kl"] <= budget]
    return max(rewards) if rewards else None


def summarize(sft_point, runs: dict, reward_metrics, pref_stats, bon) -> dict:
    by_method = {}
    for name, result in runs.items():
        by_method.setdefault(result["method"], []).extend(result["checkpoints"])
    frontier = {m: {f"kl<={b:g}": best_within(points, b) for b in KL_BUDGETS} for m, points in by_method.items()}
    return {
        "sft": sft_point,
        "reward_model": reward_metrics,
        "preference_data": pref_stats,
        "runs": {name: {k: v for k, v in r.items() if k != "examples"} for name, r in runs.items()},
        "frontier_best_reward_within_kl": frontier,
        "best_of_n": bon,
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
        "| run | method | beta | alpha | reward | KL | steps | train s |",
        "|---|---|---|---|---|---|---|---|",
        f"| sft | {LABELS['sft']} | - | - | {sft['reward']:.3f} +- {sft['reward_sem']:.3f} | 0 | - | - |",
    ]
    for name, r in summary["runs"].items():
        lines.append(
            f"| {name} | {LABELS.get(r['method'], r['method'])} | {r['beta']:g} | "
            f"{_fmt(r.get('unlikelihood_alpha'), 2)} | {r['ground_truth_reward']:.3f} +- "
            f"{r['ground_truth_reward_sem']:.3f} | {r['kl']:.2f} +- {r['kl_sem']:.2f} | {r['train_steps']} | "
            f"{r['train_seconds']:.0f} |"
        )
    lines += ["", "Frontier: best reward over every checkpoint of a method whose KL is within a budget "
              "(a method's whole sweep counts).", "",
              "| method | " + " | ".join(f"KL <= {b:g}" for b in KL_BUDGETS) + " |",
              "|---|" + "---|" * len(KL_BUDGETS)]
    for method, row in summary["frontier_best_reward_within_kl"].items():
        lines.append(f"| {LABELS.get(method, method)} | " + " | ".join(_fmt(v) for v in row.values()) + " |")
    bon = summary.get("best_of_n")
    if bon:
        lines += ["", f"Best-of-N: {bon['samples_per_prompt']} samples from the SFT policy on {bon['prompts']} "
                  "held-out prompts; mean ground-truth reward of the sample each picker keeps. "
                  "'pair agreement': share of same-prompt sample pairs the picker orders like the ground truth.", "",
                  "| picker | " + " | ".join(f"N={n}" for n in bon["N"]) + " | pair agreement |",
                  "|---|" + "---|" * (len(bon["N"]) + 1)]
        for picker, values in bon["picks"].items():
            lines.append(f"| {picker} | " + " | ".join(f"{v:.3f}" for v in values)
                         + f" | {bon['pair_agreement'][picker]:.3f} |")
    return "\n".join(lines) + "\n"


def frontier_plot(path: Path, sft_point, runs: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    seen = set()
    order = {m: i for i, m in enumerate(PREFERENCE_METHODS + RL_METHODS)}
    for name, r in sorted(runs.items(), key=lambda item: order.get(item[1]["method"], 99)):
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
    ax.scatter([0], [sft_point["reward"]], marker="*", s=120, color="black", label=LABELS["sft"], zorder=5)
    ax.set_xlabel("KL(pi || pi_ref), sequence level")
    ax.set_ylabel("ground-truth reward, p(positive)")
    ax.set_title("IMDb sentiment: reward vs KL frontier (one point per checkpoint)")
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
        if picker in ("ground_truth", "random"):
            label = {"ground_truth": "ground-truth reward (oracle)", "random": "random (expected)"}[picker]
            ax.plot(bon["N"], values, "--", color="black" if picker == "ground_truth" else "gray", label=label)
            continue
        run_name = picker.removeprefix("implicit_")
        method = run_name.rsplit("_beta", 1)[0]
        ax.plot(bon["N"], values, "-" + MARKERS.get(method, "o"), color=COLORS.get(method),
                label=f"implicit reward of {run_name}")
    ax.set_xscale("log", base=2)
    ax.set_xticks(bon["N"], [str(n) for n in bon["N"]])
    ax.set_xlabel("N (samples from the SFT policy)")
    ax.set_ylabel("ground-truth reward of the pick")
    ax.set_title("Best-of-N: picking by implicit vs ground-truth reward")
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
