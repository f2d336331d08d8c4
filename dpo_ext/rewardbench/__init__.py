"""RewardBench 1 and 2 for DPO models, model-free half: the benchmarks' published rows turned into scoring inputs
(`rows_to_inputs`), and per-completion rewards aggregated into the benchmarks' scores exactly as their reference code
does (`aggregate`). `dpo_ext.rewardbench.v1` is RewardBench 1 (``allenai/reward-bench``),
`dpo_ext.rewardbench.v2` RewardBench 2 (``allenai/reward-bench-2``); each module's docstring states its rules
and where they come from.
"""
