"""PLDPOTrainer under a real 2-process launch (torchrun, gloo on CPU), like any Trainer."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]  # tests/: fixtures.py and scripts/


def test_two_process_training(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(TESTS / "scripts" / "train_ddp.py"), str(tmp_path), str(TESTS)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["reference"] == "disabled_adapters"
    assert len(summary["losses"]) == 3
    assert summary["losses"][0] == pytest.approx(math.log(6), abs=1e-4)  # fresh adapter, K = 3
    assert (tmp_path / "adapter" / "adapter_model.safetensors").exists()
