"""Comparing methods on the reward-KL plane: reward interpolated at fixed KL, the upper envelope over a method's
betas, the older view of the best checkpoint within a KL budget, and mean +- standard error over training seeds,
differences paired by seed (see docs: STYLE.md, "Results"); with the Markdown tables of one seed's and of several.

Structures (plain dicts, as in the runs' ``eval_results.json``):
- a curve: ``[{"step", "reward", "kl", ...}, ...]``, the checkpoints in step order; the SFT policy (KL 0) precedes it;
- runs: ``{run_name: {"method": str, "beta": float, "checkpoints": curve, "ground_truth_reward", "kl",
  "train_steps", ...}}``, one training seed (each with its ``_sem``);
- a method table: ``{method: {kl: reward or None}}``; per-seed tables: ``{seed: method table}``;
- comparisons: ``((method, baseline), ...)``, the pairs a report sets against each other.
Pure Python: no torch, so the report can be rebuilt anywhere.
"""

import math
import statistics

KL_BUDGETS = (1.0, 2.0, 4.0, 7.0, 10.0)  # the budget view's columns
BUDGET_KEYS = ("reward", "reward_sem", "kl", "run", "step")  # what the budget view keeps of a checkpoint

# Student t 0.975 quantiles for 1..30 degrees of freedom (two-sided 95%); beyond, a Cornish-Fisher expansion.
T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t_975(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` >= 1 degrees of freedom (within 1e-4 beyond the table)."""
    if df <= len(T_975):
        return T_975[df - 1]
    z = 1.959964
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def reward_at_kl(curve: list[dict], sft_reward: float, kl: float) -> float | None:
    """The reward where the path SFT -> checkpoints (straight segments, step order) first reaches KL ``kl``.

    KL estimates from samples can be negative, so the path need not move right: a segment "reaches" ``kl`` when its
    KL range [min, max] contains it, whichever way it runs, and the first such segment is used. The path starts at
    the SFT point, so ``kl == 0`` gives ``sft_reward``. Returns None when no segment contains ``kl``.
    """
    if kl == 0:
        return sft_reward
    path = [(0.0, sft_reward)]
    for i, point in enumerate(curve):
        if "kl" not in point or "reward" not in point:
            raise ValueError(f"checkpoint {i} of the curve ({point}) lacks 'kl' or 'reward': pass the list "
                             "eval_results.json['checkpoints'] of a run")
        path.append((point["kl"], point["reward"]))
    for (kl_a, reward_a), (kl_b, reward_b) in zip(path, path[1:]):
        if min(kl_a, kl_b) <= kl <= max(kl_a, kl_b):
            # kl == kl_a only for the SFT point (a segment's start ends the one before), handled above: no 0 / 0.
            return reward_a + (kl - kl_a) / (kl_b - kl_a) * (reward_b - reward_a)
    return None


def envelope_at_kl(runs: dict, method: str, sft_reward: float, kl: float) -> dict | None:
    """The best reward at KL ``kl`` over ``method``'s runs (all its betas): ``{"reward", "run"}`` (the first run in
    ``runs`` order on a tie), or None when none of its runs reaches ``kl``."""
    best = None
    for name, run in runs.items():
        if run["method"] != method:
            continue
        reward = reward_at_kl(run["checkpoints"], sft_reward, kl)
        if reward is not None and (best is None or reward > best["reward"]):
            best = {"reward": reward, "run": name}
    return best


def method_table(runs: dict, sft_reward: float, kls) -> dict:
    """``{method: {kl: envelope reward or None}}`` for one seed's ``runs``, methods in order of first appearance."""
    methods = dict.fromkeys(run["method"] for run in runs.values())
    table = {}
    for method in methods:
        table[method] = {}
        for kl in kls:
            best = envelope_at_kl(runs, method, sft_reward, kl)
            table[method][kl] = None if best is None else best["reward"]
    return table


def budget_table(runs: dict, budgets=KL_BUDGETS) -> dict:
    """Per method, per KL budget (``"kl<=b"``): the best checkpoint of any of the method's runs within the budget
    (its `BUDGET_KEYS`), or None. Noisier than `fixed_kl_tables`: it jumps with which checkpoint falls inside."""
    table = {}
    for method in dict.fromkeys(r["method"] for r in runs.values()):
        points = [{**p, "run": name} for name, r in runs.items() if r["method"] == method for p in r["checkpoints"]]
        row = table[method] = {}
        for budget in budgets:
            inside = [p for p in points if p["kl"] <= budget]
            best = max(inside, key=lambda p: p["reward"]) if inside else None
            row[f"kl<={budget:g}"] = None if best is None else {k: best[k] for k in BUDGET_KEYS}
    return table


def compare(table: dict, comparisons, difference) -> dict:
    """``{"method-baseline": {column: difference(method's cell, baseline's cell)}}`` for the ``comparisons`` whose
    methods are both in ``table`` ({method: {column: cell or None}}); None where either cell is."""
    return {f"{method}-{baseline}": {
        column: None if a is None or b is None else difference(a, b)
        for (column, a), b in zip(table[method].items(), table[baseline].values())}
        for method, baseline in comparisons if method in table and baseline in table}


def budget_differences(table: dict, comparisons) -> dict:
    """`compare` on a `budget_table`: reward differences with their standard error (independent evaluations: the
    errors add in quadrature)."""
    return compare(table, comparisons, lambda a, b: {
        "difference": round(a["reward"] - b["reward"], 4),
        "sem": round((a["reward_sem"] ** 2 + b["reward_sem"] ** 2) ** 0.5, 4)})


def fixed_kl_tables(runs: dict, sft_reward: float, kls, comparisons) -> tuple[dict, dict]:
    """Per method, per KL of ``kls`` (``"kl=k"``): `envelope_at_kl` (``{"reward", "run"}``, rounded, or None); and
    the ``comparisons`` at each KL (one seed: the difference only; `paired_differences` gives it an uncertainty)."""
    methods = dict.fromkeys(r["method"] for r in runs.values())
    table = {m: {f"kl={k:g}": envelope_at_kl(runs, m, sft_reward, k) for k in kls} for m in methods}
    rounded = {m: {kl: None if e is None else {"reward": round(e["reward"], 4), "run": e["run"]}
                   for kl, e in row.items()} for m, row in table.items()}
    return rounded, compare(table, comparisons, lambda a, b: round(a["reward"] - b["reward"], 4))


def summary(sft_point: dict, runs: dict, kls, comparisons) -> dict:
    """One seed's comparison, as results.json keeps it: both views of the frontier and their differences."""
    budgets = budget_table(runs)
    fixed, fixed_differences = fixed_kl_tables(runs, sft_point["reward"], kls, comparisons)
    return {"frontier_best_reward_within_kl": budgets,
            "frontier_differences": budget_differences(budgets, comparisons), "fixed_kls": list(kls),
            "reward_at_fixed_kl": fixed, "fixed_kl_differences": fixed_differences}


def mean_and_sem(values) -> tuple[float, float | None]:
    """The mean of ``values`` (at least one) and its standard error, sample standard deviation / sqrt(n); None for
    one value, which says nothing about the spread."""
    n = len(values)
    return statistics.fmean(values), statistics.stdev(values) / math.sqrt(n) if n >= 2 else None


def reported_mean_and_sem(values) -> tuple[float, float]:
    """`mean_and_sem` rounded as the reports print it, with 0 for the standard error of one value; over samples
    (`recipe_kit.reward_kl`) and over prompts (`recipe_kit.best_of_n`)."""
    mean, sem = mean_and_sem(values)
    return round(mean, 4), round(0.0 if sem is None else sem, 4)


def _summary(values: dict) -> dict:
    """``values`` ({seed: float or None}) -> ``{"values", "mean", "sem", "n"}`` over the seeds that have a value
    (`mean_and_sem`); mean and sem None for n = 0."""
    defined = [v for v in values.values() if v is not None]
    mean, sem = mean_and_sem(defined) if defined else (None, None)
    return {"values": values, "mean": mean, "sem": sem, "n": len(defined)}


def _methods(per_seed_tables: dict) -> list:
    return list(dict.fromkeys(m for table in per_seed_tables.values() for m in table))


def seed_table(per_seed_tables: dict, kls) -> dict:
    """Per method and KL, over seeds: ``{method: {kl: {"values": {seed: v or None}, "mean", "sem", "n"}}}``, sem the
    sample standard deviation / sqrt(n), n the seeds where the method reached ``kl``."""
    return {method: {kl: _summary({seed: table.get(method, {}).get(kl) for seed, table in per_seed_tables.items()})
                     for kl in kls}
            for method in _methods(per_seed_tables)}


def paired_differences(per_seed_tables: dict, comparisons, kls) -> dict:
    """``method - baseline`` paired by seed, for each ``(method, baseline)`` in ``comparisons``.

    Returns:
        `dict`: ``{"method-baseline": {kl: {"values": {seed: difference}, "mean", "sem", "n", "interval",
            "half_width"}}}``, only seeds where both are defined; ``interval`` the 95% Student t interval
            (n - 1 df) as ``(low, high)`` and ``half_width`` its half-width, the smallest difference these seeds can
            resolve; both None when n < 2 (mean only).
    """
    out = {}
    for method, baseline in comparisons:
        row = {}
        for kl in kls:
            pairs = {seed: (table.get(method, {}).get(kl), table.get(baseline, {}).get(kl))
                     for seed, table in per_seed_tables.items()}
            cell = _summary({seed: a - b for seed, (a, b) in pairs.items() if a is not None and b is not None})
            half = None if cell["sem"] is None else t_975(cell["n"] - 1) * cell["sem"]
            cell["interval"] = None if half is None else (cell["mean"] - half, cell["mean"] + half)
            row[kl] = {**cell, "half_width": half}
        out[f"{method}-{baseline}"] = row
    return out


def markdown_header(first: str, columns) -> list[str]:
    return [f"| {first} | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]


def markdown_tables(summary: dict, labels: dict) -> list[str]:
    """One seed's Markdown tables, as lines: every run's final checkpoint (after the SFT policy's), the budget view
    and the fixed-KL comparison with their differences. ``summary``: `summary` plus ``"sft"`` (the SFT policy's point)
    and ``"runs"``; ``labels`` maps method names (and ``"sft"``) to display names."""
    def rows(table: dict, cell) -> list[str]:  # a label ("method" or "method - baseline"), then a cell per column
        return [f"| {' - '.join(labels.get(m, m) for m in name.split('-'))} | "
                + " | ".join("-" if v is None else cell(v) for v in row.values()) + " |" for name, row in table.items()]

    sft = summary["sft"]
    lines = [*markdown_header("run", ["method", "beta", "alpha", "reward", "KL", "steps"]),
             f"| sft | {labels['sft']} | - | - | {sft['reward']:.3f} +- {sft['reward_sem']:.3f} | 0 | - |"]
    for name, r in summary["runs"].items():
        alpha = "-" if r.get("unlikelihood_alpha") is None else f"{r['unlikelihood_alpha']:.2f}"
        lines.append(f"| {name} | {labels.get(r['method'], r['method'])} | {r['beta']:g} | {alpha} | "
                     f"{r['ground_truth_reward']:.3f} +- {r['ground_truth_reward_sem']:.3f} | {r['kl']:.2f} +- "
                     f"{r['kl_sem']:.2f} | {r['train_steps']} |")
    with_sem = "{0[reward]:.3f} +- {0[reward_sem]:.3f}".format
    lines += ["", "Frontier: the best checkpoint of a method (all its runs) whose KL is within each budget: reward +- "
              "standard error.", "", *markdown_header("method", [f"KL <= {b:g}" for b in KL_BUDGETS]),
              *rows(summary["frontier_best_reward_within_kl"], with_sem),
              *rows(summary["frontier_differences"], lambda d: f"{d['difference']:+.3f} +- {d['sem']:.3f}")]
    kls = list(next(iter(summary["reward_at_fixed_kl"].values()), {}))
    lines += ["", "Reward at fixed KL: each run's reward interpolated along its curve (SFT at KL 0, then its "
              "checkpoints) where it first reaches the KL; per method the best of its runs (betas), named. One seed: "
              "the differences have no uncertainty here; seeds.py repeats them over seeds.", "",
              *markdown_header("method", [f"KL {k.removeprefix('kl=')}" for k in kls]),
              *rows(summary["reward_at_fixed_kl"], lambda e: f"{e['reward']:.3f} ({e['run']})"),
              *rows(summary["fixed_kl_differences"], lambda d: f"{d:+.3f}")]
    return lines


def _signed(value: float) -> str:
    """``+0.012`` / ``-0.012``; a value that rounds to zero is ``+0.000``, never ``-0.000``."""
    return f"{value + 0.0 if round(value, 3) else 0.0:+.3f}"


def _cell(cell: dict, signed: bool = False) -> str:
    if cell["n"] == 0:
        return "-"
    text = _signed(cell["mean"]) if signed else f"{cell['mean']:.3f}"
    if cell["sem"] is None:
        return text + " (n=1, no interval)" if signed else text + " (n=1)"
    text += f" +- {cell['sem']:.3f}"
    if signed:
        low, high = cell["interval"]
        text += f" [{_signed(low)}, {_signed(high)}]"
    return text


def markdown_seed_tables(seeds: dict, differences: dict, kls, labels: dict | None = None) -> str:
    """Three Markdown tables (columns: the KL values): reward per method (mean +- s.e. over seeds, "(n=k)" where
    fewer seeds reached that KL), paired differences (mean +- s.e. [95% t interval]), and every seed's value.
    ``seeds`` comes from `seed_table`, ``differences`` from `paired_differences`, ``labels`` maps method names to
    display names."""
    labels = labels or {}

    def header(first):
        return markdown_header(first, [f"KL {kl:g}" for kl in kls])

    all_seeds = list(dict.fromkeys(s for row in seeds.values() for cell in row.values() for s in cell["values"]))
    lines = ["Reward at fixed KL: upper envelope over each method's betas, interpolated along each run's curve; "
             f"mean +- standard error over {len(all_seeds)} seeds.", "", *header("method")]
    for method, row in seeds.items():
        lines.append(f"| {labels.get(method, method)} | " + " | ".join(
            _cell(c) + (f" (n={c['n']})" if 1 < c["n"] < len(all_seeds) else "") for c in row.values()) + " |")
    lines += ["", "Paired by seed: difference, mean +- s.e. [95% t interval]; the interval's half-width is the "
              "smallest difference these seeds can resolve.", "", *header("comparison")]
    for name, row in differences.items():
        method, baseline = name.split("-", 1)
        lines.append(f"| {labels.get(method, method)} - {labels.get(baseline, baseline)} | "
                     + " | ".join(_cell(c, signed=True) for c in row.values()) + " |")
    lines += ["", "Per seed: reward at fixed KL.", "", *header("method, seed")]
    for method, row in seeds.items():
        for seed in all_seeds:
            lines.append(f"| {labels.get(method, method)}, seed {seed} | " + " | ".join(
                _fmt(c["values"].get(seed)) for c in row.values()) + " |")
    return "\n".join(lines) + "\n"


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"
