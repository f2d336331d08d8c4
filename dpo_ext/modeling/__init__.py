"""THE code that runs a causal LM for completion log-probs, and what it needs to know about the model.

Modules: `models` (what a model is under its wrappers, what its forward accepts, which adapter is active),
`support` (whether a model can run prefix-shared rows exactly: one check for trainer and scorer), `forward` (the one
forward pass: LM head only where log-probs are needed, plain rows, the prefix-sharing attention mask), `batches`
(log-probs of a collated training batch: plain or packed rows), `prompt_cache` (scoring: each prompt run once, its
KV cache reused by its completions; transformers' cache internals behind one guard).
"""
