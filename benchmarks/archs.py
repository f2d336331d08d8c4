"""Real-size model shapes built from configs with random weights (nothing is downloaded), and a toy size of each.

Throughput, memory and FLOPs depend on the shapes, not on the trained weights, so a model built from the published
config measures what the real checkpoint would. Each architecture has a ``full`` size (the published config.json
values, cited below) and a ``smoke`` size: same model class and same features (grouped-query attention, tied or untied
embeddings, partial rotary, parallel residual) at toy dimensions, so the CPU tests run the GPU suite's code paths.
"""

# meta-llama/Llama-3.2-1B config.json (values as published on the Hub, also quoted in the oumi recipe table
# "configs/recipes/llama3_2" and in thunder_model_blocks hf_llama/llama_config.py): 128,256 vocabulary, 16 layers,
# hidden 2048, MLP 8192, 32 query heads / 8 KV heads (head dim 64), tied embeddings, rope_theta 500,000 with llama3
# rope scaling (factor 32, original context 8192).
LLAMA_3_2_1B = dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                    num_attention_heads=32, num_key_value_heads=8, head_dim=64, tie_word_embeddings=True,
                    max_position_embeddings=131072, rms_norm_eps=1e-5, rope_theta=500000.0,
                    rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                  "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})
# Qwen/Qwen2.5-0.5B config.json (as published on the Hub; the Qwen2.5-0.5B model card lists 24 layers, 14 Q / 2 KV
# heads, tied embeddings, 0.49B parameters): 151,936 vocabulary, hidden 896, MLP 4864, QKV bias, rope_theta 1e6.
QWEN2_5_0_5B = dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                    num_attention_heads=14, num_key_value_heads=2, tie_word_embeddings=True,
                    max_position_embeddings=32768, rms_norm_eps=1e-6, rope_theta=1000000.0, use_sliding_window=False)
# EleutherAI/pythia-2.8b config.json (Biderman et al. 2023, "Pythia", Table 1: 32 layers, model dim 2560, 32 heads):
# GPT-NeoX with a 50,304 vocabulary, MLP 10240, rotary on 25% of each head, parallel residual, untied embeddings.
PYTHIA_2_8B = dict(vocab_size=50304, hidden_size=2560, intermediate_size=10240, num_hidden_layers=32,
                   num_attention_heads=32, rotary_pct=0.25, rotary_emb_base=10000, max_position_embeddings=2048,
                   use_parallel_residual=True, tie_word_embeddings=False, layer_norm_eps=1e-5)

ARCHS = {
    "llama-3.2-1b": ("LlamaConfig", "LlamaForCausalLM", LLAMA_3_2_1B,
                     dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=1024)),
    "qwen2.5-0.5b": ("Qwen2Config", "Qwen2ForCausalLM", QWEN2_5_0_5B,
                     dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024)),
    "pythia-2.8b": ("GPTNeoXConfig", "GPTNeoXForCausalLM", PYTHIA_2_8B,
                    dict(vocab_size=512, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=1024)),
}


def arch_config(name: str, smoke: bool = False, pad_token_id: int = 0, eos_token_id: int = 1):
    """The transformers config of architecture ``name`` (a key of `ARCHS`), at full or smoke size."""
    import transformers

    if name not in ARCHS:
        raise ValueError(f"unknown --arch {name!r}; choose from {', '.join(ARCHS)}")
    config_class, _, full, small = ARCHS[name]
    values = {**full, **small} if smoke else dict(full)
    if smoke:
        values.pop("rope_scaling", None)  # llama3 scaling is about long contexts; toy models keep plain rope
    return getattr(transformers, config_class)(**values, pad_token_id=pad_token_id, bos_token_id=eos_token_id,
                                               eos_token_id=eos_token_id)


def build_arch(name: str, smoke: bool = False, dtype: str = "float32", seed: int = 0, attention: str = "sdpa"):
    """A randomly initialised model of architecture ``name`` in ``dtype`` (weights as the optimiser would see them)."""
    import torch
    import transformers

    torch.manual_seed(seed)
    config = arch_config(name, smoke)
    config._attn_implementation = attention
    model_class = getattr(transformers, ARCHS[name][1])
    return model_class(config).to(getattr(torch, dtype))


def shape_summary(config) -> dict:
    """The numbers the FLOPs formula needs: layers, query heads, head dim, and parameter counts."""
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return {"layers": config.num_hidden_layers, "heads": heads, "head_dim": head_dim,
            "hidden": config.hidden_size, "vocab": config.vocab_size}
