"""Judges: what gives every completion of a prompt a score (higher = better), for `dpo_ext.labeling.label_rows` and
``dpo-ext label``.

A judge is called with B prompts and B lists of completions (text, or chat messages for chat prompts) and returns B
lists of numbers, one per completion. Three kinds, chosen by a spec string in one place (`load_judge`):

- ``rm:PATH_OR_HUB_ID``: a sequence-classification reward model with one output (`RewardModelJudge`);
- ``implicit:ADAPTER``: the implicit reward of a DPO-trained adapter, self-rewarding as in DICE (`ImplicitRewardJudge`);
- ``py:module:function``: a Python function (`FunctionJudge`).

What a judge returns is checked by `dpo_ext.labeling`, not here: one rule for every kind.
"""

from dpo_ext.judges.base import FunctionJudge, ImplicitRewardJudge, Judge
from dpo_ext.judges.reward_model import RewardModelJudge, reward_text
from dpo_ext.judges.spec import JUDGE_KINDS, check_judge_spec, load_judge

__all__ = ["JUDGE_KINDS", "FunctionJudge", "ImplicitRewardJudge", "Judge", "RewardModelJudge", "check_judge_spec",
           "load_judge", "reward_text"]
