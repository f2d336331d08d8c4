"""`evaluate` metric modules shipped with dpo_ext, loadable offline from their directory:

>>> import evaluate
>>> from dpo_ext.metrics import metric_path
>>> accuracy = evaluate.load(metric_path("preference_accuracy"))  # no Hub access needed

- ``preference_accuracy``: fraction of pairs whose chosen reward is strictly above the rejected one (RewardBench).
- ``ranking_agreement``: top-1 accuracy, pairwise accuracy and Kendall's tau of rewards against K-way rankings.
"""

from pathlib import Path

METRICS_DIR = Path(__file__).resolve().parent
METRIC_NAMES = ("preference_accuracy", "ranking_agreement")


def metric_path(name: str) -> str:
    """Directory of a shipped metric module, for ``evaluate.load``."""
    if name not in METRIC_NAMES:
        raise ValueError(f"unknown metric {name!r}; shipped metrics: {', '.join(METRIC_NAMES)}")
    return str(METRICS_DIR / name)


def load(name: str, **kwargs):
    """``evaluate.load`` of a shipped metric (works with ``HF_HUB_OFFLINE=1``)."""
    import evaluate

    return evaluate.load(metric_path(name), **kwargs)
