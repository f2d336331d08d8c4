"""The listwise comparison over seeds: one SFT policy, one reward, and for each seed new preference samples, new
training runs, new rounds and new evaluation samples (`run.py --run_seed`). Writes the reward at fixed KL per method
(upper envelope over betas) as mean +- standard error over seeds, the paired differences with their 95% intervals,
and the per-seed values.

    # after `make demo` (its folder is seed 0, reused as it is), two more seeds: about 25 minutes on 2 cores
    HF_HUB_OFFLINE=1 python recipes/sentiment/seeds.py --seeds 0 1 2 --first_seed_dir outputs/sentiment \
        --output_dir outputs/sentiment_seeds
    # test size
    HF_HUB_OFFLINE=1 python recipes/sentiment/seeds.py --seeds 0 1 --output_dir /tmp/seeds -- --quick

Any argument after ``--`` goes to run.py for every seed (the same settings, e.g. ``--quick`` or ``--config FILE``).
Seed s runs in ``<output_dir>/seed-<s>``; the data, tokenizer, SFT and reward stages are the first seed's (linked).
Best-of-N is left out of the seeds after the first, and the methods are the comparison's (``COMPARED``) unless
``--methods`` is passed after ``--``.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from recipe_kit.frontier import markdown_seed_tables, method_table, paired_differences, seed_table  # noqa: E402
from report import COMPARISONS, LABELS  # noqa: E402

COMPARED = ("dpo", "all_pairs", "pl_dpo", "lipo", "rounds", "rounds_self")
SHARED_STAGES = ("data", "tokenizer", "sft", "reward")  # built once, with the recipe's seed


def run_seed(seed: int, folder: Path, first: Path | None, recipe_argv: list[str]) -> dict:
    """Run the recipe for ``seed`` in ``folder`` (the shared stages linked from ``first``); return its results.json."""
    folder.mkdir(parents=True, exist_ok=True)
    if first is not None:
        for name in SHARED_STAGES:
            link = folder / name
            if not link.exists():
                link.symlink_to((first / name).resolve(), target_is_directory=True)
    argv = list(recipe_argv)
    if first is not None:
        argv += ["--best_of_n_max", "0"]
        if "--methods" not in argv:
            argv += ["--methods", *COMPARED]
    command = [sys.executable, str(HERE / "run.py"), *argv, "--run_seed", str(seed), "--output_dir", str(folder)]
    subprocess.run(command, check=True)
    return json.loads((folder / "results.json").read_text())


def tables(results_by_seed: dict) -> dict:
    """The seeds' fixed-KL tables (`frontier.method_table`, the envelope over betas, at the runs' ``fixed_kls``) for
    the methods every seed ran, their summary and the paired differences of `report.COMPARISONS`."""
    kls = next(iter(results_by_seed.values()))["fixed_kls"]
    common = set.intersection(*({r["method"] for r in result["runs"].values()} for result in results_by_seed.values()))
    per_seed = {seed: method_table({name: r for name, r in result["runs"].items() if r["method"] in common},
                                   result["sft"]["reward"], kls) for seed, result in results_by_seed.items()}
    return {"kls": kls, "seeds": sorted(results_by_seed), "methods": seed_table(per_seed, kls),
            "differences": paired_differences(per_seed, COMPARISONS, kls)}


def machine() -> str:
    """The CPU model (Linux), for the tables' caption."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        import platform

        return platform.processor() or platform.machine()


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
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
        results[seed] = run_seed(seed, out / f"seed-{seed}", first, args.recipe_argv)
        first = first or out / f"seed-{seed}"
    summary = tables(results)
    (out / "seeds.json").write_text(json.dumps(summary, indent=2))
    text = (f"Seeds {', '.join(map(str, summary['seeds']))} on {machine()}.\n\n"
            + markdown_seed_tables(summary["methods"], summary["differences"], summary["kls"], LABELS))
    (out / "seeds.md").write_text(text)
    print(text)
    return summary


if __name__ == "__main__":
    main()
