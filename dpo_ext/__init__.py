"""dpo_ext: Plackett-Luce DPO, implicit-reward scoring and LoRA reference sharing for TRL and PEFT.

Names are imported lazily so that ``import dpo_ext`` (and the ``dpo-ext`` command's fast paths) do not pay for
importing trl and transformers until a trainer or scorer is actually used.
"""

import importlib
import warnings

__version__ = "0.1.0"

_EXPORTS = {
    "plackett_luce_loss": "dpo_ext.losses",
    "dpo_loss": "dpo_ext.losses",
    "preferred_ft_loss": "dpo_ext.losses",
    "unlikelihood_loss": "dpo_ext.losses",
    "implicit_rewards": "dpo_ext.losses",
    "PLDPOConfig": "dpo_ext.training.config",
    "PLDPOTrainer": "dpo_ext.training.trainer",
    "PreferenceDataError": "dpo_ext.data.rows",
    "validate_rows": "dpo_ext.data.validation",
    "NonFiniteLossError": "dpo_ext.training.trainer",
    "ReferenceMismatchError": "dpo_ext.reference",
    "prepare_ranked_dataset": "dpo_ext.data.tokenize",
    "normalize_row": "dpo_ext.data.rows",
    "tokenize_ranked": "dpo_ext.data.tokenize",
    "ImplicitRewardScorer": "dpo_ext.scoring.scorer",
    "ScoreResult": "dpo_ext.scoring.results",
    "ScoredCandidate": "dpo_ext.scoring.results",
    "BestOfN": "dpo_ext.scoring.results",
    "evaluate_preferences": "dpo_ext.scoring.evaluation",
    "evaluate_rewardbench": "dpo_ext.rewardbench.evaluate",
    "push_adapter": "dpo_ext.hub.adapter_push",
    "check_hub_access": "dpo_ext.hub.publish",
    "HubAccessError": "dpo_ext.hub.publish",
    "HubUploadError": "dpo_ext.hub.publish",
    "stage_adapter_folder": "dpo_ext.hub.adapter_push",
    "build_model_card": "dpo_ext.hub.adapter_push",
    "render_model_card": "dpo_ext.hub.cards",
    "push_preference_dataset": "dpo_ext.hub.datasets",
    "HubBenchmark": "dpo_ext.hub.eval_results",
}

# Old name -> new name. `ReferenceError` shadowed the Python builtin of that name.
_DEPRECATED = {"ReferenceError": "ReferenceMismatchError"}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name):
    if name in _DEPRECATED:
        new = _DEPRECATED[name]
        warnings.warn(f"dpo_ext.{name} is deprecated (it shadows the Python builtin): use dpo_ext.{new}",
                      DeprecationWarning, stacklevel=2)
        name = new
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'dpo_ext' has no attribute {name!r}")


def __dir__():
    return __all__
