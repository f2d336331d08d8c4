"""The finished stages' outputs, loaded from their folders. Parallel jobs (`recipe_kit.pool.JobPool`) start from these
rather than from objects handed over by the main process: nothing but paths and settings crosses a process boundary.
"""

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass
class StageOutputs:
    sft_dir: Path
    tokenizer: object
    reward: object  # reward(texts) -> list[float]
    prefs: dict  # preference_data.load


def load(out: Path, args) -> StageOutputs:
    import bpe_tokenizer
    import preference_data
    import sentiment_reward

    return StageOutputs(
        sft_dir=out / "sft",
        tokenizer=bpe_tokenizer.load(out / "tokenizer"),
        reward=sentiment_reward.load(out / "reward", args.recipe_model.reward_model_name),
        prefs=preference_data.load(out / "preferences"),
    )


def read_json(path: Path):
    return json.loads(Path(path).read_text())
