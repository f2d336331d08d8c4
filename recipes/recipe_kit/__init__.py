"""What the preference recipes (``recipes/hh``, ``recipes/tldr``, ``recipes/ultrafeedback``, ``recipes/sentiment``)
share and `dpo_ext` does not provide. Training, evaluation, loading and publishing are the package's
(`dpo_ext.cli.train.run_training`, `dpo_ext.ImplicitRewardScorer`, `dpo_ext.push_adapter`); this is only the glue
around them:

- `recipe_kit.arguments`: one `trl.TrlParser` over the recipe's own fields and the package's dataclasses;
- `recipe_kit.sft`: the SFT stage (`trl.SFTTrainer` on preferred responses or plain texts, or a small model trained
  from scratch by a plain torch loop), saved as a complete model folder;
- `recipe_kit.win_rate`: samples of the trained policy and of the SFT policy scored by a reward model;
- `recipe_kit.stages`: SFT then DPO, the order the HH and TL;DR recipes run them in;
- `recipe_kit.cached_stages`: numbered stages, each cached in its folder with the settings it was built with;
- `recipe_kit.pool`: one-thread worker processes, so that the numbers never depend on the worker count;
- `recipe_kit.instruction_set`: the CPU kernels pinned to AVX2, so that they do not depend on the CPU either;
- `recipe_kit.frontier`: methods compared at equal KL along their reward-KL curves, over seeds, and their tables;
- `recipe_kit.plots`: the reward-KL frontier and Best-of-N plots;
- `recipe_kit.reward_kl`: sampling a policy (sharded jobs on the pool) and its reward and KL, the frontier's points;
- `recipe_kit.best_of_n`: Best-of-N picks by the ground truth, by implicit rewards and by chance;
- `recipe_kit.seeds`: a recipe's comparison repeated over seeds (``seeds.py``);
- `recipe_kit.trl_trainers`: TRL's DPO, RLOO and GRPO trainers configured from the recipe's `PLDPOConfig`;
- `recipe_kit.tiny_models`: the test-size policy and reward model the ``configs/test.yaml`` runs use.

A recipe script puts ``recipes/`` on ``sys.path`` and imports from here; ``recipes/`` is not a package.
"""

import gc


def free_memory() -> None:
    """Give back the memory of models just deleted, before the next one loads (one process holds several in turn)."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
