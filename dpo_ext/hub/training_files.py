"""Deprecated: renamed `dpo_ext.hub.adapter_files`.

Merged with `dpo_ext.hub.adapter_folder`: reading and checking an adapter folder's files.
Importing this old path warns and gives that module.
"""

from dpo_ext.deprecation import moved_module

moved_module(__name__, "dpo_ext.hub.adapter_files")
