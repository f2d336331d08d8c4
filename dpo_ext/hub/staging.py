"""Deprecated: renamed `dpo_ext.hub.staged_folder`.

The folder one commit uploads (not to be confused with a checkpoint's staging folder).
Importing this old path warns and gives that module.
"""

from dpo_ext.deprecation import moved_module

moved_module(__name__, "dpo_ext.hub.staged_folder")
