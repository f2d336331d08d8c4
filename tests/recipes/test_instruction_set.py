"""recipes/recipe_kit/instruction_set.py: the AVX2 pin gives, on this machine, the bits an AVX2-only machine gives.

An AVX2-only machine is emulated by capping each library at AVX2 the way its own dispatch would on such a CPU
(torch's AVX2 capability, MKL's AVX2 instructions, OpenBLAS's Haswell kernels, numpy without its AVX-512 loops),
without the pin. Each configuration runs in its own process: the variables only work before torch and numpy load.
"""

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
sys.path.insert(0, str(RECIPES))

from recipe_kit.instruction_set import AVX2_PIN, check_pinned_capability, cpu_has_avx2, pin_instruction_set  # noqa: E402

pytestmark = pytest.mark.skipif(not cpu_has_avx2(), reason="the pin applies to x86-64 CPUs with AVX2 (Linux)")

AVX2_MACHINE = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2",
                "OPENBLAS_CORETYPE": "Haswell", "NPY_DISABLE_CPU_FEATURES": AVX2_PIN["NPY_DISABLE_CPU_FEATURES"]}

# A tiny GPT-2 trained for 3 AdamW steps, and a TF-IDF + logistic regression fit: hashes of the final weights, the
# last loss and the classifier's coefficients (the bits), and the capability torch ran at.
PROBE = """
import sys
sys.path.insert(0, {recipes!r})
if {pin}:
    from recipe_kit.instruction_set import pin_instruction_set
    assert pin_instruction_set()
import hashlib, json, random
import torch
from transformers import GPT2Config, GPT2LMHeadModel
torch.set_num_threads(1)
torch.manual_seed(0)
model = GPT2LMHeadModel(GPT2Config(vocab_size=2000, n_positions=32, n_embd=128, n_layer=2, n_head=4))
ids = torch.randint(0, 2000, (16, 24), generator=torch.Generator().manual_seed(1))
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
for _ in range(3):
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
weights = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in model.parameters())).hexdigest()

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
rng = random.Random(0)
labels = [i % 2 for i in range(400)]
texts = [" ".join(f"w{{rng.randrange(100 * y, 100 * y + 200)}}" for _ in range(rng.randint(5, 30))) for y in labels]
classifier = LogisticRegression(max_iter=1000).fit(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
                                                   .fit_transform(texts), labels)
print(json.dumps({{"capability": torch.backends.cpu.get_cpu_capability(), "weights": weights, "loss": loss.item(),
                  "coef": hashlib.sha256(classifier.coef_.tobytes()).hexdigest()}}))
"""


def run_probe(pin: bool, variables: dict) -> dict:
    env = {name: value for name, value in os.environ.items() if name not in AVX2_PIN and name != "MKL_CBWR"}
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    env.update(variables)
    result = subprocess.run([sys.executable, "-c", PROBE.format(recipes=str(RECIPES), pin=pin)], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_pinned_run_gives_the_bits_of_an_avx2_machine_and_the_default_run_does_not():
    """(i) pinned == emulated AVX2-only machine, bit for bit (weights, loss, coefficients); (ii) on an AVX-512 CPU the
    unpinned default differs (measured: torch's log_softmax, MKL's matmuls and VML, OpenBLAS each change bits), so
    (i) is not vacuous."""
    with ThreadPoolExecutor(3) as pool:
        pinned, avx2_machine, default = pool.map(lambda args: run_probe(*args),
                                                 [(True, {}), (False, AVX2_MACHINE), (False, {})])
    assert pinned["capability"] == avx2_machine["capability"] == "AVX2"
    assert pinned == avx2_machine
    if default["capability"] != "AVX512":
        pytest.skip(f"this CPU's own kernels are {default['capability']}: the default run is the AVX2 one")
    assert default["weights"] != pinned["weights"] and default["coef"] != pinned["coef"]


def test_worker_processes_inherit_the_pin():
    """A pinned main process starts its `JobPool` workers with the pin: they run torch's AVX2 kernels."""
    code = f"""
import sys
sys.path[:0] = [{str(RECIPES / "sentiment")!r}, {str(RECIPES)!r}]
from recipe_kit.instruction_set import pin_instruction_set
pin_instruction_set()
from recipe_kit import pool as parallel; import torch
with parallel.JobPool(2, recipe_dir={str(RECIPES / "sentiment")!r}) as pool:
    print(pool.run([(torch.backends.cpu.get_cpu_capability,)] * 2))
"""
    env = {name: value for name, value in os.environ.items() if name not in AVX2_PIN and name != "MKL_CBWR"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "['AVX2', 'AVX2']"


def test_pinning_after_torch_loaded_is_refused_unless_nothing_changes(monkeypatch):
    """This process has imported torch: a pin that would change a variable raises; one already in place (inherited
    from a pinned parent) is accepted."""
    import torch

    for name, value in AVX2_PIN.items():
        monkeypatch.setenv(name, value)
    assert pin_instruction_set() is True
    monkeypatch.delenv("OPENBLAS_CORETYPE")
    with pytest.raises(RuntimeError, match="after torch and numpy had been imported.*OPENBLAS_CORETYPE='Haswell'"):
        pin_instruction_set()
    if torch.backends.cpu.get_cpu_capability() != "AVX2":  # torch chose its kernels before the variable was set
        with pytest.raises(RuntimeError, match="ATEN_CPU_CAPABILITY=avx2 is set but torch runs its"):
            check_pinned_capability()
    monkeypatch.delenv("ATEN_CPU_CAPABILITY")
    if torch.backends.cpu.get_cpu_capability() != "AVX2":
        with pytest.warns(RuntimeWarning, match="run on an x86-64 CPU with AVX2 and FMA"):
            check_pinned_capability()
