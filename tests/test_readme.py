"""The README's Python examples run as pasted, one by one: each block alone, in a fresh interpreter (so no block
leans on names another defined), offline, in order and in one folder (files an earlier block wrote, such as the
trained adapter, are there, as they would be for a reader following along)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_examples_run_each_alone(tmp_path):
    blocks = python_blocks(README.read_text())
    assert blocks, "the README has no Python examples"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "TQDM_DISABLE": "1"}
    for number, block in enumerate(blocks, start=1):
        script = tmp_path / f"readme_block_{number}.py"
        script.write_text(block)
        result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True,
                                text=True, timeout=600)
        if result.returncode != 0:
            pytest.fail(f"README Python block {number} (starting {block.splitlines()[0]!r}) fails when run alone:\n"
                        f"{result.stderr[-4000:]}")
        if 'main(["train"' in block:  # `dpo-ext train` in Python: exit 0 and a preference accuracy, printed
            code, accuracy = result.stdout.split()[-2:]
            assert code == "0" and 0.0 <= float(accuracy) <= 1.0, result.stdout[-2000:]

