"""A recipe's comparison repeated over seeds: its ``run.py`` once per ``--run_seed`` (the first seed's stages that do
not depend on the seed linked into every later seed's folder), then the reward at fixed KL per method (upper envelope
over betas, `recipe_kit.frontier`) as mean +- standard error over seeds, the paired differences with their 95%
intervals, and the per-seed values, written as ``seeds.json`` and ``seeds.md``.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

from recipe_kit.frontier import markdown_seed_tables, method_table, paired_differences, seed_table
from recipe_kit.instruction_set import cpu_info


def run_seed(run_py: Path, seed: int, folder: Path, first: Path | None, recipe_argv: list[str],
             shared_stages, later_argv) -> dict:
    """Run ``run_py`` for ``seed`` in ``folder``; return its results.json. After the first seed (``first``: its
    folder) the ``shared_stages`` are links to the first seed's, and the arguments are ``later_argv(recipe_argv)``."""
    folder.mkdir(parents=True, exist_ok=True)
    argv = list(recipe_argv)
    if first is not None:
        for name in shared_stages:
            link = folder / name
            if not link.exists():
                link.symlink_to((first / name).resolve(), target_is_directory=True)
        argv = later_argv(argv)
    command = [sys.executable, str(run_py), *argv, "--run_seed", str(seed), "--output_dir", str(folder)]
    subprocess.run(command, check=True)
    return json.loads((folder / "results.json").read_text())


def tables(results_by_seed: dict, comparisons) -> dict:
    """The seeds' fixed-KL tables (`frontier.method_table`, the envelope over betas, at the runs' ``fixed_kls``) for
    the methods every seed ran, their summary and the paired differences of ``comparisons``."""
    kls = next(iter(results_by_seed.values()))["fixed_kls"]
    common = set.intersection(*({r["method"] for r in result["runs"].values()} for result in results_by_seed.values()))
    per_seed = {seed: method_table({name: r for name, r in result["runs"].items() if r["method"] in common},
                                   result["sft"]["reward"], kls) for seed, result in results_by_seed.items()}
    return {"kls": kls, "seeds": sorted(results_by_seed), "methods": seed_table(per_seed, kls),
            "differences": paired_differences(per_seed, comparisons, kls)}


def machine() -> str:
    """The CPU model (Linux), for the tables' caption."""
    import platform

    return cpu_info("model name") or platform.processor() or platform.machine()


def main(argv, *, run_py: Path, description: str, shared_stages, later_argv, comparisons, labels: dict) -> dict:
    """The seeds command of ``run_py`` (``--seeds``, ``--output_dir``, ``--first_seed_dir``, then after ``--`` the
    recipe's own arguments); see `run_seed` and `tables`. Returns seeds.json's content."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--seeds", type=int, nargs="+", required=True, help="run seeds (at least 2; 3 or more to "
                        "state an interval that means something)")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--first_seed_dir", help="a finished run.py folder to use as the first seed as it is (the "
                        "`make demo` folder for seed 0: its run_seed must be the first seed)")
    parser.add_argument("recipe_argv", nargs="*", help="after --: arguments for run.py")
    args = parser.parse_args(argv)
    if len(set(args.seeds)) < 2:
        parser.error("--seeds: give at least two different seeds")
    out = Path(args.output_dir)
    results, first = {}, None
    for seed in args.seeds:
        if first is None and args.first_seed_dir:
            first = Path(args.first_seed_dir)
            results[seed] = json.loads((first / "results.json").read_text())
            continue
        results[seed] = run_seed(run_py, seed, out / f"seed-{seed}", first, args.recipe_argv, shared_stages,
                                 later_argv)
        first = first or out / f"seed-{seed}"
    summary = tables(results, comparisons)
    (out / "seeds.json").write_text(json.dumps(summary, indent=2))
    text = (f"Seeds {', '.join(map(str, summary['seeds']))} on {machine()}.\n\n"
            + markdown_seed_tables(summary["methods"], summary["differences"], summary["kls"], labels))
    (out / "seeds.md").write_text(text)
    print(text)
    return summary
