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

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from recipe_kit import seeds  # noqa: E402
from report import COMPARISONS, LABELS  # noqa: E402

COMPARED = ("dpo", "all_pairs", "pl_dpo", "lipo", "rounds", "rounds_self")
SHARED_STAGES = ("data", "tokenizer", "sft", "reward")  # built once, with the recipe's seed


def later_seed_argv(argv: list[str]) -> list[str]:
    """run.py's arguments for the seeds after the first: no Best-of-N, and the `COMPARED` methods unless given."""
    return argv + ["--best_of_n_max", "0"] + ([] if "--methods" in argv else ["--methods", *COMPARED])


def main(argv=None) -> dict:
    return seeds.main(argv, run_py=HERE / "run.py", description=__doc__.split("\n\n")[0],
                      shared_stages=SHARED_STAGES, later_argv=later_seed_argv, comparisons=COMPARISONS, labels=LABELS)


if __name__ == "__main__":
    main()
