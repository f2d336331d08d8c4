"""`load_judge`: a judge from its spec string, the one place where the kinds of judge are told apart.

Specs are ``KIND:VALUE``; nothing is guessed from the value (a folder could hold a reward model or an adapter):

- ``rm:PATH_OR_HUB_ID``: a sequence-classification reward model with one output;
- ``implicit:ADAPTER``: the implicit reward of a saved adapter (its folder or Hub id), at its recorded beta;
- ``py:module:function``: ``function`` of ``module``, importable from the working directory or ``sys.path``
  (``PYTHONPATH``), called as ``function(prompts, completions) -> list[list[float]]`` (see `FunctionJudge`).
"""

import importlib
import os
import sys
from pathlib import Path

from dpo_ext.judges.base import FunctionJudge, ImplicitRewardJudge, Judge
from dpo_ext.judges.reward_model import RewardModelJudge
from dpo_ext.locations import require_source

JUDGE_KINDS = {
    "rm": "rm:PATH_OR_HUB_ID (a sequence-classification reward model with one output)",
    "implicit": "implicit:ADAPTER (the implicit reward of a DPO-trained adapter)",
    "py": "py:module:function (a Python function fn(prompts, completions) -> list of score lists)",
}


def _spec_error(spec, problem: str) -> ValueError:
    kinds = "; ".join(JUDGE_KINDS.values())
    return ValueError(f"judge {spec!r}: {problem}; a judge is one of: {kinds}")


def load_judge(spec: str, *, device=None, batch_size: int = 8, dtype=None) -> Judge:
    """The judge a spec names (see the module docstring for the syntax).

    Args:
        spec (`str`): ``rm:...``, ``implicit:...`` or ``py:module:function``.
        device (*optional*): where a model judge runs (default: CUDA when available).
        batch_size (`int`, defaults to 8): texts per forward of a reward model.
        dtype (`torch.dtype`, *optional*): a reward model's weights dtype.

    Raises:
        `ValueError`: an unknown kind, a function that cannot be imported, a model that is not of its kind.
        `FileNotFoundError`: a model folder that does not exist.
    """
    kind, value, function = _parsed(spec)
    if kind == "py":
        return FunctionJudge(function, name=spec)
    if kind == "rm":
        return RewardModelJudge.from_pretrained(value, batch_size=batch_size, device=device, dtype=dtype, name=spec)
    return ImplicitRewardJudge.from_pretrained(value, name=spec, device=device)


def check_judge_spec(spec: str) -> None:
    """Refuse a spec `load_judge` would refuse, without loading any model: an unknown kind, a function that cannot
    be imported, a model folder that does not exist. For a run that loads its judge later (on-policy rounds)."""
    _parsed(spec)


def _parsed(spec: str):
    """``(kind, value, function)`` of a spec (``function``: a ``py:`` spec's imported function, else `None`),
    checked as far as can be done without loading a model."""
    kind, sep, value = spec.partition(":") if isinstance(spec, str) else ("", "", "")
    if not sep or kind not in JUDGE_KINDS:
        is_folder = isinstance(spec, str) and Path(spec).exists()
        hint = f" (a folder: write rm:{spec} or implicit:{spec})" if is_folder else ""
        raise _spec_error(spec, f"unknown kind {kind!r}{hint}" if sep else f"no KIND: prefix{hint}")
    if not value:
        raise _spec_error(spec, f"nothing after {kind}:")
    if kind == "py":
        return kind, value, _import_function(spec, value)
    require_source(value, prefix=f"judge {spec!r}: ")
    return kind, value, None


def _import_function(spec: str, value: str):
    """``module:function`` imported; the working directory is added to the end of ``sys.path`` when missing (the
    ``dpo-ext`` script's own folder is on it instead), so a module beside the user's data is found."""
    module_name, sep, function_name = value.rpartition(":")
    if not sep or not module_name or not function_name:
        raise _spec_error(spec, "expected py:module:function (a module importable from the working directory, and "
                                "a function in it)")
    if os.getcwd() not in sys.path and "" not in sys.path:  # `dpo-ext` runs as a script: cwd is not on sys.path
        sys.path.append(os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # noqa: BLE001 - missing module, or its own import failing: say which, in one line
        problem = " ".join(f"{type(error).__name__}: {error}".split())
        raise ValueError(f"judge {spec!r}: cannot import module {module_name!r} ({problem}); it must be importable "
                         "from the working directory or sys.path (set PYTHONPATH)") from None
    function = getattr(module, function_name, None)
    if not callable(function):
        what = "has no attribute" if function is None else "has a non-callable"
        raise ValueError(f"judge {spec!r}: module {module_name!r} ({getattr(module, '__file__', '?')}) {what} "
                         f"{function_name!r}; name a function fn(prompts, completions) -> list of score lists")
    return function
