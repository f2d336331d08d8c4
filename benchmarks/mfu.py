"""Model FLOPs utilisation (MFU) of a DPO training step, counted the same way for every trainer.

Formula (Chowdhery et al. 2022, PaLM, appendix B, with the reference model added): a token in a sequence of
length T costs 6N + 12 L H Q T FLOPs to train (forward + backward) and 2N + 4 L H Q T to run forward only, with N
the parameters that multiply activations (every weight matrix, the LM head included once, the input embedding table
left out: a lookup is no FLOPs), L layers, H query heads of dimension Q. A DPO step trains the policy and runs the
reference forward, so a token costs 8N + 16 L H Q T. T is the length of the sequence the token logically belongs to
(prompt + its completion), not the padded or packed row, and causality is not halved (PaLM's convention): tokens
are *model* FLOPs, the same for every method, and each method is charged only for the tokens it actually processes:

* TRL on the K-1 adjacent pairs of a list: 2(K-1) sequences prompt + completion (the prompt 2(K-1) times);
* PL-DPO with one row per completion: K sequences prompt + completion (the prompt K times);
* PL-DPO with prefix sharing: the prompt once (T = P), then every completion (T = P + C_k).

With LoRA the backward pass skips the gradients of frozen weights, so the hardware does less than 6N per trained
token: this MFU is the convention people compare, not the fraction of the tensor cores kept busy.

MFU = FLOPs per list x lists per second / the GPU's dense bf16 peak (`PEAK_BF16_TFLOPS`).
"""

# Dense (no 2:4 sparsity) bf16 tensor-core peaks from NVIDIA's datasheets: H100 SXM5 989.4 TFLOPS and H100 PCIe
# 756 (H100 datasheet), H100 NVL 835 (per GPU), H200 SXM 989 (H200 datasheet: same tensor cores as H100 SXM, GH200
# too), A100 312 (A100 datasheet, SXM and PCIe), L40S 362, L4 121. The first name contained in the device name wins,
# so the more specific names come first. A GPU not listed gets no MFU rather than a guessed peak.
PEAK_BF16_TFLOPS = (
    ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.4), ("H200", 989.4), ("A100", 312.0), ("L40S", 362.0),
    ("L4", 121.0),
)


def peak_tflops(device_name: str | None) -> float | None:
    """Dense bf16 peak of a GPU from its `torch.cuda.get_device_name()`, or None for a GPU not in the table / CPU."""
    if not device_name:
        return None
    for key, value in PEAK_BF16_TFLOPS:
        if key.lower() in device_name.lower():
            return value
    return None


def matmul_parameters(model) -> int:
    """N: parameters of the model's weight matrices, LM head counted once (even tied), input embeddings left out."""
    base = getattr(model, "get_base_model", lambda: model)()
    embedding = base.get_input_embeddings().weight
    head = base.get_output_embeddings().weight
    total = sum(p.numel() for p in base.parameters())  # parameters() yields a tied weight once
    return total - embedding.numel() + (head.numel() if head is embedding else 0)


def sequence_flops(n_params: int, layers: int, heads: int, head_dim: int, tokens: int, context: int,
                   train: bool = True) -> float:
    """FLOPs of ``tokens`` tokens that each sit in a sequence of length ``context`` (train: 6N + 12LHQT per token,
    forward only: 2N + 4LHQT)."""
    per_token = (6 * n_params + 12 * layers * heads * head_dim * context if train
                 else 2 * n_params + 4 * layers * heads * head_dim * context)
    return float(tokens * per_token)


def list_sequences(method: str, prompt: int, completions: list[int]) -> list[tuple[int, int]]:
    """(tokens, context) of every sequence ``method`` processes for one list: ``trl`` (adjacent pairs), ``k_rows``
    or ``prefix`` (see the module docstring)."""
    if method == "trl":
        pairs = list(zip(completions, completions[1:]))
        return [(prompt + c, prompt + c) for pair in pairs for c in pair]
    if method == "k_rows":
        return [(prompt + c, prompt + c) for c in completions]
    if method == "prefix":
        return [(prompt, prompt)] + [(c, prompt + c) for c in completions]
    raise ValueError(f"unknown method {method!r}")


def dpo_list_flops(method: str, prompt: int, completions: list[int], shape: dict, n_params: int) -> tuple[int, float]:
    """(tokens processed, model FLOPs) of one list: policy trained + reference forward on the same tokens."""
    sequences = list_sequences(method, prompt, completions)
    dims = (shape["layers"], shape["heads"], shape["head_dim"])
    flops = sum(sequence_flops(n_params, *dims, tokens, context, train=True)
                + sequence_flops(n_params, *dims, tokens, context, train=False) for tokens, context in sequences)
    return sum(tokens for tokens, _ in sequences), flops


def mfu(flops_per_list: float, lists_per_s: float, device_name: str | None) -> float | None:
    """Fraction of the device's dense bf16 peak, or None where the peak is unknown (CPU, a GPU not in the table)."""
    peak = peak_tflops(device_name)
    return None if peak is None else flops_per_list * lists_per_s / (peak * 1e12)
