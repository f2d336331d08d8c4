"""Deprecated: renamed `dpo_ext.training.checkpoint_files`.

Its checkpoint file-system helpers; the Trainer mixin is `dpo_ext.training.checkpointing`.
Importing this old path warns and gives that module.
"""

from dpo_ext.deprecation import moved_module

moved_module(__name__, "dpo_ext.training.checkpoint_files")
