"""Stage 8: the results table (Markdown + JSON), the reward-KL frontier plot, the Best-of-N plot and the output
folder's README. Always rebuilt from the cached stage outputs (cheap)."""

import json
from pathlib import Path

from recipe_config import ALL_METHODS
from recipe_kit.frontier import envelope_at_kl

LABELS = {"sft": "SFT (reference)", "dpo": "DPO best-vs-worst", "trl_dpo": "DPO (trl.DPOTrainer)",
          "all_pairs": "DPO all pairs (K=4)", "pl_dpo": "PL-DPO (K=4)", "lipo": "LiPO-lambda (K=4)",
          "rounds": "PL-DPO rounds (classifier)", "rounds_self": "PL-DPO rounds (self-rewarded)",
          "preferred_ft": "Preferred-FT", "unlikelihood": "Unlikelihood", "rloo": "RLOO (GT reward)",
          "grpo": "GRPO (GT reward)"}
# (color, marker) per method in the plots. dpo and trl_dpo should coincide (same loss, same data): distinct markers
# keep both visible when they do.
STYLES = {"dpo": ("tab:orange", "o"), "trl_dpo": ("tab:brown", "x"), "all_pairs": ("tab:olive", "P"),
          "pl_dpo": ("tab:red", "s"), "lipo": ("tab:cyan", "*"), "rounds": ("black", "h"),
          "rounds_self": ("tab:gray", "H"), "preferred_ft": ("tab:blue", "^"), "unlikelihood": ("tab:green", "v"),
          "rloo": ("tab:purple", "D"), "grpo": ("tab:purple", "D")}
KL_BUDGETS = (1.0, 2.0, 4.0, 7.0, 10.0)
FRONTIER_KEYS = ("reward", "reward_sem", "kl", "run", "step")  # what the frontier table keeps of a checkpoint
# Pairs of methods compared at equal KL in the report: (method, baseline). The listwise question first: does the
# whole ranking beat the best pair and every pair? Then: do on-policy rounds beat one offline pass, and does a policy
# judging itself keep the gain?
COMPARISONS = (("pl_dpo", "dpo"), ("lipo", "dpo"), ("lipo", "all_pairs"), ("pl_dpo", "all_pairs"),
               ("all_pairs", "dpo"), ("rounds", "pl_dpo"), ("rounds_self", "rounds"))
SAMPLE_METHODS = ("dpo", "pl_dpo")  # runs (at the Best-of-N beta) whose completions the report shows next to SFT's


def frontier_table(runs: dict) -> dict:
    """Per method, per KL budget (``"kl<=b"``): the best checkpoint of any of the method's runs within the budget
    (its `FRONTIER_KEYS`), or None."""
    table = {}
    for method in dict.fromkeys(r["method"] for r in runs.values()):
        points = [{**p, "run": name} for name, r in runs.items() if r["method"] == method for p in r["checkpoints"]]
        row = table[method] = {}
        for budget in KL_BUDGETS:
            inside = [p for p in points if p["kl"] <= budget]
            best = max(inside, key=lambda p: p["reward"]) if inside else None
            row[f"kl<={budget:g}"] = None if best is None else {k: best[k] for k in FRONTIER_KEYS}
    return table


def compare(table: dict, difference) -> dict:
    """``{"method-baseline": {column: difference(method's cell, baseline's cell)}}`` for the `COMPARISONS` whose
    methods are both in ``table`` ({method: {column: cell or None}}); None where either cell is."""
    return {f"{method}-{baseline}": {
        column: None if a is None or b is None else difference(a, b)
        for (column, a), b in zip(table[method].items(), table[baseline].values())}
        for method, baseline in COMPARISONS if method in table and baseline in table}


def differences(frontier: dict) -> dict:
    """`compare` on `frontier_table`: reward differences with their standard error (independent evaluations: the
    errors add in quadrature)."""
    return compare(frontier, lambda a, b: {"difference": round(a["reward"] - b["reward"], 4),
                                           "sem": round((a["reward_sem"] ** 2 + b["reward_sem"] ** 2) ** 0.5, 4)})


def at_fixed_kl(sft_point: dict, runs: dict, kls) -> tuple[dict, dict]:
    """Per method, per KL of ``kls`` (the recipe's ``fixed_kls``): the reward interpolated along each of its runs'
    curves, best run kept (`frontier.envelope_at_kl`: ``{"reward", "run"}`` or None); and the `COMPARISONS` at each
    KL (one seed: the difference only; seeds.py gives it an uncertainty)."""
    methods = dict.fromkeys(r["method"] for r in runs.values())
    table = {m: {f"kl={k:g}": envelope_at_kl(runs, m, sft_point["reward"], k) for k in kls} for m in methods}
    rounded = {m: {kl: None if e is None else {"reward": round(e["reward"], 4), "run": e["run"]}
                   for kl, e in row.items()} for m, row in table.items()}
    return rounded, compare(table, lambda a, b: round(a["reward"] - b["reward"], 4))


def samples(sft_point: dict, runs: dict, beta: float) -> list[dict]:
    """The same eval prompts answered by SFT and by the final `SAMPLE_METHODS` adapters at ``beta``: one entry per
    prompt, ``{policy name: {"text", "reward"}}``."""
    sources = {"sft": sft_point["examples"]}
    sources.update({name: run["examples"] for name, run in runs.items()
                    if run["method"] in SAMPLE_METHODS and run["beta"] == beta})
    count = min(len(v) for v in sources.values())
    return [{name: examples[i] for name, examples in sources.items()} for i in range(count)]


def summarize(sft_point, runs: dict, reward_metrics, pref_stats, bon, beta: float, kls) -> dict:
    frontier = frontier_table(runs)
    fixed, fixed_differences = at_fixed_kl(sft_point, runs, kls)
    return {"sft": {k: v for k, v in sft_point.items() if k != "examples"}, "reward_model": reward_metrics,
            "preference_data": pref_stats,
            "runs": {name: {k: v for k, v in r.items() if k != "examples"} for name, r in runs.items()},
            "frontier_best_reward_within_kl": frontier, "frontier_differences": differences(frontier),
            "fixed_kls": list(kls), "reward_at_fixed_kl": fixed, "fixed_kl_differences": fixed_differences,
            "best_of_n": bon, "samples": samples(sft_point, runs, beta)}


def _header(first: str, columns) -> list[str]:
    return [f"| {first} | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]


def _rows(table: dict, cell) -> list[str]:
    """A Markdown row per entry of ``table`` ({method or "method-baseline": {column: value or None}}): its label, then
    ``cell(value)`` per column ("-" for None)."""
    return [f"| {' - '.join(LABELS.get(m, m) for m in name.split('-'))} | "
            + " | ".join("-" if v is None else cell(v) for v in row.values()) + " |" for name, row in table.items()]


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
        *_header("run", ["method", "beta", "alpha", "reward", "KL", "steps"]),
        f"| sft | {LABELS['sft']} | - | - | {sft['reward']:.3f} +- {sft['reward_sem']:.3f} | 0 | - |",
    ]
    for name, r in summary["runs"].items():
        alpha = "-" if r.get("unlikelihood_alpha") is None else f"{r['unlikelihood_alpha']:.2f}"
        lines.append(f"| {name} | {LABELS.get(r['method'], r['method'])} | {r['beta']:g} | {alpha} | "
                     f"{r['ground_truth_reward']:.3f} +- {r['ground_truth_reward_sem']:.3f} | {r['kl']:.2f} +- "
                     f"{r['kl_sem']:.2f} | {r['train_steps']} |")
    with_sem = "{0[reward]:.3f} +- {0[reward_sem]:.3f}".format
    lines += ["", "Frontier: the best checkpoint of a method (all its runs) whose KL is within each budget: reward +- "
              "standard error.", "", *_header("method", [f"KL <= {b:g}" for b in KL_BUDGETS]),
              *_rows(summary["frontier_best_reward_within_kl"], with_sem),
              *_rows(summary["frontier_differences"], lambda d: f"{d['difference']:+.3f} +- {d['sem']:.3f}")]
    kls = list(next(iter(summary["reward_at_fixed_kl"].values()), {}))
    lines += ["", "Reward at fixed KL: each run's reward interpolated along its curve (SFT at KL 0, then its "
              "checkpoints) where it first reaches the KL; per method the best of its runs (betas), named. One seed: "
              "the differences have no uncertainty here; seeds.py repeats them over seeds.", "",
              *_header("method", [f"KL {k.removeprefix('kl=')}" for k in kls]),
              *_rows(summary["reward_at_fixed_kl"], lambda e: f"{e['reward']:.3f} ({e['run']})"),
              *_rows(summary["fixed_kl_differences"], lambda d: f"{d:+.3f}")]
    bon = summary.get("best_of_n")
    if bon:
        lines += ["", f"Best-of-N: {bon['samples_per_prompt']} samples from the SFT policy on {bon['prompts']} "
                  "held-out prompts; mean ground-truth reward of the sample each picker keeps +- standard error "
                  "over prompts. 'pair agreement': share of same-prompt sample pairs the picker orders like the "
                  "ground truth.", "", *_header("picker", [f"N={n}" for n in bon["N"]] + ["pair agreement"])]
        for picker, values in bon["picks"].items():
            lines.append(f"| {picker} | " + " | ".join(
                f"{v:.3f} +- {e:.3f}" for v, e in zip(values, bon["picks_sem"][picker]))
                + f" | {bon['pair_agreement'][picker]:.3f} |")
    if summary.get("samples"):
        lines += ["", "Samples: the first completion of each policy (final adapters) for the same held-out prompts, "
                  "with its ground-truth reward.", "", *_header("prompt", ["policy", "reward", "review so far"])]
        for i, entry in enumerate(summary["samples"], 1):
            for policy, example in entry.items():
                text = example["text"].replace("|", "/").replace("\n", " ")
                lines.append(f"| {i} | {policy} | {example['reward']:.3f} | {text} |")
    return "\n".join(lines) + "\n"


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


def frontier_plot(path: Path, sft_point, runs: dict) -> None:
    """Reward vs KL: every run's path from the SFT point through its checkpoints (+- standard errors)."""
    order = {m: i for i, m in enumerate(ALL_METHODS)}

    def draw(ax):
        seen = set()
        for r in sorted(runs.values(), key=lambda run: order.get(run["method"], 99)):
            method, points = r["method"], r["checkpoints"]
            color, marker = STYLES.get(method, (None, "o"))
            kls, rewards = [p["kl"] for p in points], [p["reward"] for p in points]
            ax.plot([0.0] + kls, [sft_point["reward"]] + rewards, "-", color=color, alpha=0.35)
            style = {"facecolors": "none", "edgecolors": color} if marker == "o" else {"color": color}
            ax.scatter(kls, rewards, s=40 if marker == "o" else 22, marker=marker, **style,
                       label=None if method in seen else LABELS.get(method, method))
            seen.add(method)
            ax.errorbar(kls, rewards, xerr=[p["kl_sem"] for p in points], yerr=[p["reward_sem"] for p in points],
                        fmt="none", ecolor=color, alpha=0.3, linewidth=0.8)
        ax.scatter([0], [sft_point["reward"]], marker="*", s=120, color="black", label=LABELS["sft"], zorder=5)

    _plot(path, (7, 4.5), draw, "KL(pi || pi_ref), sequence level", "ground-truth reward, p(positive)",
          "IMDb sentiment: reward vs KL, one point per checkpoint (+- s.e.)", loc="lower right")


def best_of_n_plot(path: Path, bon: dict) -> None:
    """Ground-truth reward of the pick vs N, one line per picker (+- standard errors over prompts)."""
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
            color, marker = STYLES.get(method, (None, "o"))
            ax.errorbar(bon["N"], values, yerr=errors, fmt="-" + marker, capsize=2, color=color,
                        label=f"implicit reward of {run_name}")
        ax.set_xscale("log", base=2)
        ax.set_xticks(bon["N"], [str(n) for n in bon["N"]])

    _plot(path, (6, 4), draw, "N (samples from the SFT policy)", "ground-truth reward of the pick",
          "Best-of-N: picking by implicit vs ground-truth reward (+- s.e.)")


def write(out: Path, summary: dict, license_note: str, command: str) -> None:
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    table = markdown(summary)
    (out / "results.md").write_text(table)
    frontier_plot(out / "frontier.png", summary["sft"], summary["runs"])
    if summary.get("best_of_n"):
        best_of_n_plot(out / "best_of_n.png", summary["best_of_n"])
    (out / "README.md").write_text("\n".join([
        "# Controlled sentiment generation (DPO paper, section 6.1)", "", f"Produced by: `{command}`", "",
        "- `results.md`, `results.json`: the tables below; `frontier.png`: reward vs KL, one point per checkpoint; "
        "`best_of_n.png`: Best-of-N pickers.",
        "- `adapters/<run>/`: one ready-to-publish LoRA adapter per run (weights, config, tokenizer, "
        "`training_config.json`, `eval_results.json`); its base model is `sft/`.",
        "- `data/`, `tokenizer/`, `sft/`, `reward/`, `preferences/`, `best_of_n/`: cached stages; delete one to "
        "rebuild it (and what depends on it).", "",
        f"Data: {license_note}", "",
        table.split("\n", 2)[2],  # the tables, under this README's own title
    ]))
