"""The plots of a reward-KL study (matplotlib, written as PNG): every run's frontier, and the Best-of-N pickers.

``styles`` maps a method name to its ``(color, marker)``; a run's method is its ``"method"`` (`recipe_kit.frontier`
structures), a Best-of-N picker ``implicit_<run>`` takes the style of the run's method (the name before ``_beta``).
"""

from pathlib import Path


def _plot(path: Path, size, draw, xlabel: str, ylabel: str, title: str, **legend) -> None:
    """A figure of ``size`` inches, drawn by ``draw(ax)``, labelled and saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=size)
    draw(ax)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, **legend)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def frontier_plot(path: Path, sft_point: dict, runs: dict, *, labels: dict, styles: dict, order, ylabel: str,
                  title: str) -> None:
    """Reward vs KL: every run's path from the SFT point through its checkpoints (+- standard errors), drawn in the
    methods' ``order``; one legend entry per method, from ``labels`` (``labels["sft"]``: the SFT point's)."""
    rank = {m: i for i, m in enumerate(order)}

    def draw(ax):
        seen = set()
        for r in sorted(runs.values(), key=lambda run: rank.get(run["method"], 99)):
            method, points = r["method"], r["checkpoints"]
            color, marker = styles.get(method, (None, "o"))
            kls, rewards = [p["kl"] for p in points], [p["reward"] for p in points]
            ax.plot([0.0] + kls, [sft_point["reward"]] + rewards, "-", color=color, alpha=0.35)
            style = {"facecolors": "none", "edgecolors": color} if marker == "o" else {"color": color}
            ax.scatter(kls, rewards, s=40 if marker == "o" else 22, marker=marker, **style,
                       label=None if method in seen else labels.get(method, method))
            seen.add(method)
            ax.errorbar(kls, rewards, xerr=[p["kl_sem"] for p in points], yerr=[p["reward_sem"] for p in points],
                        fmt="none", ecolor=color, alpha=0.3, linewidth=0.8)
        ax.scatter([0], [sft_point["reward"]], marker="*", s=120, color="black", label=labels["sft"], zorder=5)

    _plot(path, (7, 4.5), draw, "KL(pi || pi_ref), sequence level", ylabel, title, loc="lower right")


def best_of_n_plot(path: Path, bon: dict, *, styles: dict) -> None:
    """Ground-truth reward of the pick vs N, one line per picker (+- standard errors over prompts); ``bon`` as
    `recipe_kit.best_of_n.summarize` returns it."""
    references = {"ground_truth": ("ground-truth reward (oracle)", "black"), "random": ("random (expected)", "gray")}

    def draw(ax):
        for picker, values in bon["picks"].items():
            errors = bon["picks_sem"][picker]
            if picker in references:
                label, color = references[picker]
                ax.errorbar(bon["N"], values, yerr=errors, fmt="--", capsize=2, color=color, label=label)
                continue
            run_name = picker.removeprefix("implicit_")
            method = run_name.rsplit("_beta", 1)[0]
            color, marker = styles.get(method, (None, "o"))
            ax.errorbar(bon["N"], values, yerr=errors, fmt="-" + marker, capsize=2, color=color,
                        label=f"implicit reward of {run_name}")
        ax.set_xscale("log", base=2)
        ax.set_xticks(bon["N"], [str(n) for n in bon["N"]])

    _plot(path, (6, 4), draw, "N (samples from the SFT policy)", "ground-truth reward of the pick",
          "Best-of-N: picking by implicit vs ground-truth reward (+- s.e.)")
