"""Deprecated: renamed `dpo_ext.hub.eval_results`.

The Hub's `.eval_results` files; `benchmarks/` holds the performance scripts.
Importing this old path warns and gives that module.
"""

from dpo_ext.deprecation import moved_module

moved_module(__name__, "dpo_ext.hub.eval_results")
