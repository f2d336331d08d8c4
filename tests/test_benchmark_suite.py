"""The GPU benchmark suite (issue 23): real-size architectures from configs, HH-length lists, the FLOPs / MFU
arithmetic worked by hand, and `bash benchmarks/gpu_suite.sh --smoke` end to end on the CPU."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from archs import ARCHS, arch_config, build_arch, shape_summary  # noqa: E402
from hh_lengths import hh_ranked_rows, row_lengths  # noqa: E402
from mfu import dpo_list_flops, matmul_parameters, mfu, peak_tflops  # noqa: E402


@pytest.mark.parametrize("name, billions, tied, kv_heads", [
    ("llama-3.2-1b", 1.236, True, 8), ("qwen2.5-0.5b", 0.494, True, 2), ("pythia-2.8b", 2.775, False, None)])
def test_full_size_architectures_have_the_published_parameter_counts(name, billions, tied, kv_heads):
    """Built on the meta device (no memory): 1.24B (Llama 3.2 1B), 0.49B (Qwen2.5 0.5B card), 2.78B (Pythia)."""
    config = arch_config(name)
    with torch.device("meta"):
        model = getattr(transformers, ARCHS[name][1])(config)
    assert sum(p.numel() for p in model.parameters()) / 1e9 == pytest.approx(billions, abs=0.001)
    assert config.tie_word_embeddings is tied
    assert getattr(config, "num_key_value_heads", None) == kv_heads
    if name == "llama-3.2-1b":
        assert (config.vocab_size, config.num_hidden_layers, config.hidden_size) == (128256, 16, 2048)
        assert shape_summary(config)["heads"] == 32 and shape_summary(config)["head_dim"] == 64


@pytest.mark.parametrize("name", list(ARCHS))
def test_smoke_size_keeps_the_family_and_its_features(name):
    full, smoke = arch_config(name), build_arch(name, smoke=True)
    assert smoke.config.model_type == full.model_type
    assert smoke.config.tie_word_embeddings == full.tie_word_embeddings
    assert sum(p.numel() for p in smoke.parameters()) < 300_000
    assert smoke(input_ids=torch.tensor([[3, 4, 5]])).logits.shape == (1, 3, 512)


def test_hh_lengths_have_the_derived_means_and_count_words_as_tokens():
    """Means 651 / 4 = 163 prompt and 308 / 4 = 77 completion tokens (clipping at 8 and 1024 moves them a little)."""
    rows = hh_ranked_rows(1500, 4, vocab_size=512, seed=0)
    lengths = [row_lengths(r) for r in rows]
    prompts = [p for p, _ in lengths]
    completions = [c for _, cs in lengths for c in cs]
    assert sum(prompts) / len(prompts) == pytest.approx(163, rel=0.08)
    assert sum(completions) / len(completions) == pytest.approx(77, rel=0.08)
    assert min(prompts) >= 8 and max(prompts) <= 1024 and all(len(r["completions"]) == 4 for r in rows)


def test_flops_per_list_by_hand():
    """N=10, L=1, H=1, Q=2: a token in a sequence of length T costs (6N + 12*2*T) + (2N + 4*2*T) = 80 + 32T.
    Prefix sharing, prompt 3, completions [1, 2]: 3*(80+96) + 1*(80+128) + 2*(80+160) = 1216 over 6 tokens.
    TRL on the one pair: rows of 4 and 5 tokens: 4*(80+128) + 5*(80+160) = 2032 over 9 tokens."""
    shape = {"layers": 1, "heads": 1, "head_dim": 2}
    assert dpo_list_flops("prefix", 3, [1, 2], shape, 10) == (6, 1216.0)
    assert dpo_list_flops("trl", 3, [1, 2], shape, 10) == (9, 2032.0)
    assert dpo_list_flops("k_rows", 3, [1, 2], shape, 10) == (9, 2032.0)  # K=2: the pair is the list


def test_mfu_uses_the_dense_bf16_peak_of_the_device():
    assert peak_tflops("NVIDIA H100 80GB HBM3") == 989.4
    assert peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert peak_tflops("NVIDIA H200") == 989.4
    assert peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert peak_tflops("NVIDIA L40S") == 362.0 and peak_tflops(None) is None and peak_tflops("Tesla T4") is None
    assert mfu(989.4e12, 0.5, "NVIDIA H100 80GB HBM3") == pytest.approx(0.5)
    assert mfu(1e12, 1.0, None) is None


def test_matmul_parameters_count_the_lm_head_once_and_skip_the_input_embeddings():
    tied, untied = build_arch("llama-3.2-1b", smoke=True), build_arch("pythia-2.8b", smoke=True)
    assert matmul_parameters(tied) == sum(p.numel() for p in tied.parameters())  # the tied table is the head
    embed = untied.get_input_embeddings().weight.numel()
    assert matmul_parameters(untied) == sum(p.numel() for p in untied.parameters()) - embed


def test_gpu_suite_smoke_runs_every_configuration_on_cpu(tmp_path):
    """The one command, at toy size: 3 architectures x K in {4, 8} x {TRL, PL-DPO prefix sharing}, scoring, and the
    four loss heads per architecture and K."""
    proc = subprocess.run(["bash", str(BENCHMARKS / "gpu_suite.sh"), "--smoke", "--output-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHON": sys.executable})
    assert proc.returncode == 0, proc.stderr[-3000:]
    payload = json.loads((tmp_path / "gpu_suite_smoke.json").read_text())
    training = payload["training"]
    assert {(r["arch"], r["k"]) for r in training} == {(a, k) for a in ARCHS for k in (4, 8)}
    assert len(training) == 12 and all(r["lists_per_s"] > 0 for r in training)
    for arch in ARCHS:
        for k in (4, 8):
            trl, ours = [r for r in training if r["arch"] == arch and r["k"] == k]
            assert ours["tokens_per_list"] < trl["tokens_per_list"]  # the prompt once, not 2(K-1) times
            assert ours["speedup_vs_trl"] == pytest.approx(ours["lists_per_s"] / trl["lists_per_s"])
    assert all(r["mfu"] is None for r in training)  # CPU: no peak, no MFU
    naive, scorer = payload["scoring"]
    assert (naive["method"], scorer["method"], scorer["n"]) == ("naive", "scorer", 16)
    heads = payload["lm_head"]
    assert len(heads) == 3 * 2 * 4 and all(r["peak_mib"] >= 0 for r in heads)
    for r in heads:
        if r["head"] == "trl":  # the CPU kernel scores every position of 2(K-1) padded rows of prompt + completion
            assert r["positions"] == 2 * (r["k"] - 1) * (1024 + 3072 // r["k"] - 1)
        else:
            assert r["positions"] == 3072
    table = (tmp_path / "gpu_suite_smoke.md").read_text()
    assert "SMOKE RUN" in table and table.count("| llama-3.2-1b |") == 6 + 8
