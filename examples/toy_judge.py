"""The toy judge of examples/iterate.yaml (``--judge py:examples.toy_judge:good``): a function of a batch of rows.

A judge called as ``good(prompts, completions)`` gets B prompts and B lists of completions and returns B lists of
scores, higher = better (docs/sampling.md). This one prefers completions with the word "good", then longer ones; a
real run names a reward model instead (``rm:PATH``) or an adapter's implicit reward (``implicit:ADAPTER``).
"""


def good(prompts, completions):
    return [[completion.split().count("good") + len(completion) / 100 for completion in row] for row in completions]
