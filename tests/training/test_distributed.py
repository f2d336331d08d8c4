"""PLDPOTrainer with LoRA reference sharing on 2 CPU processes (torchrun, gloo), under DDP and under FSDP2 (torch's
``fully_shard``, as accelerate applies it; see tests/scripts/train_engines.py for how it runs on CPU), against one
process with the same global batch: same losses, same precomputed reference log-probs, same saved adapter."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures import make_model, ranked_rows
from safetensors.torch import load_file

TESTS = Path(__file__).resolve().parents[1]  # tests/: fixtures.py and scripts/
SCRIPT = TESTS / "scripts" / "train_engines.py"
RUNS = ("precomputed", "live")


def launch(out: Path, engine: str) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    launcher = [] if engine == "single" else ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    result = subprocess.run([sys.executable, *launcher, str(SCRIPT), str(out), str(TESTS), engine],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads((out / "summary.json").read_text())


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    out = tmp_path_factory.mktemp("single")
    return out, launch(out, "single")


@pytest.mark.parametrize("engine", ["ddp", "fsdp2"])
def test_two_processes_train_exactly_like_one(engine, single, tmp_path):
    single_out, one = single
    two = launch(tmp_path, engine)
    for run in RUNS:
        assert one[run]["world_size"] == 1 and two[run]["world_size"] == 2
        assert two[run]["reference"] == "disabled_adapters"
        # FSDP2 really sharded the model (its parameters are DTensors); DDP keeps whole copies
        assert (two[run]["sharded_parameters"] > 0) == (engine == "fsdp2")
        assert one[run]["losses"][0] == pytest.approx(math.log(6), abs=1e-4)  # fresh adapter, K = 3
        assert two[run]["losses"] == pytest.approx(one[run]["losses"], abs=1e-5)
        adapter_one = load_file(single_out / run / "adapter" / "adapter_model.safetensors")
        adapter_two = load_file(tmp_path / run / "adapter" / "adapter_model.safetensors")
        assert sorted(adapter_two) == sorted(adapter_one)
        for name, weight in adapter_one.items():
            assert weight.shape == adapter_two[name].shape
            assert (weight - adapter_two[name]).abs().max() < 1e-5, name
        assert any(w.abs().max() > 0 for n, w in adapter_one.items() if "lora_B" in n)  # training moved it
    # The precomputed column: every row, in dataset order, as one process computes it, split over two here
    ref_one, ref_two = one["precomputed"]["ref_logps"], two["precomputed"]["ref_logps"]
    assert len(ref_one) == len(ref_two) == 8
    for row_one, row_two in zip(ref_one, ref_two):
        assert row_two == pytest.approx(row_one, abs=1e-6)
    # Precomputing is exact: the live reference trains identically
    assert two["precomputed"]["losses"] == pytest.approx(two["live"]["losses"], abs=1e-6)


def test_train_command_under_two_processes(tmp_path, tokenizer):
    """`dpo-ext train` as a module under a 2-process launch (what `accelerate launch -m dpo_ext.cli.train` runs)."""
    make_model(tokenizer).save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    for name, rows in (("train", ranked_rows(16, k=3)), ("test", ranked_rows(6, k=3, seed=1))):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
         "dpo_ext.cli.train", "--model_name_or_path", str(tmp_path / "base"), "--dataset_name",
         str(tmp_path / "train.jsonl"), "--eval_dataset_name", str(tmp_path / "test.jsonl"), "--use_peft",
         "--lora_r", "4", "--lora_target_modules", "c_attn", "--per_device_train_batch_size", "4", "--max_steps",
         "4", "--use_cpu", "--report_to", "none", "--save_strategy", "no", "--output_dir", str(tmp_path / "out")],
        env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    results = json.loads((tmp_path / "out" / "eval_results.json").read_text())
    assert results["epoch"] == pytest.approx(2.0)  # 16 rows, 4 per process on 2 processes: 2 steps per epoch
    assert 0.0 <= results["eval_rewards/accuracies"] <= 1.0
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()
