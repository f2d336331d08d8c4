"""Deprecated: renamed `dpo_ext.hub.adapter_push`.

`push_adapter` and what it builds: an adapter's card and staged folder.
Importing this old path warns and gives that module.
"""

from dpo_ext.deprecation import moved_module

moved_module(__name__, "dpo_ext.hub.adapter_push")
