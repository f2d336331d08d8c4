"""Comparing methods on the reward-KL plane: reward interpolated at fixed KL, the upper envelope over a method's
betas, and mean +- standard error over training seeds, differences paired by seed (see docs: STYLE.md, "Results").

Structures (plain dicts, as in the runs' ``eval_results.json``):
- a curve: ``[{"step", "reward", "kl", ...}, ...]``, the checkpoints in step order; the SFT policy (KL 0) precedes it;
- runs: ``{run_name: {"method": str, "beta": float, "checkpoints": curve, ...}}``, one training seed;
- a method table: ``{method: {kl: reward or None}}``; per-seed tables: ``{seed: method table}``.
Pure Python: no torch, so the report can be rebuilt anywhere.
"""

import math
import statistics

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


def mean_and_sem(values) -> tuple[float, float | None]:
    """The mean of ``values`` (at least one) and its standard error, sample standard deviation / sqrt(n); None for
    one value, which says nothing about the spread."""
    n = len(values)
    return statistics.fmean(values), statistics.stdev(values) / math.sqrt(n) if n >= 2 else None


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
        return [f"| {first} | " + " | ".join(f"KL {kl:g}" for kl in kls) + " |", "|---|" + "---|" * len(kls)]

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
