"""Pin every numerical library to its AVX2 kernels, so a recipe prints the same numbers on any x86-64 CPU with AVX2.

torch, MKL, OpenBLAS and numpy each pick their kernels for the CPU they run on, and the AVX-512 kernels round
differently from the AVX2 ones (other vector widths, other exp/log approximations). Measured on an AVX-512 Xeon
(Sapphire Rapids), torch 2.13 + MKL 2024.2 + oneDNN 3.12, numpy 2.4 / scipy 1.17 (OpenBLAS 0.3.30-31), one thread,
each setting in its own process, tiny GPT-2 forward + backward + 3 AdamW steps and TF-IDF + logistic regression:

- ``ATEN_CPU_CAPABILITY=avx2``: torch's own kernels (log_softmax, softmax, the attention and optimizer loops). The
  gradients and weights change with it; ``torch.backends.cpu.get_cpu_capability()`` reports it.
- ``MKL_CBWR=AVX2``: MKL does every matmul (``nn.Linear``, LoRA) and torch's contiguous exp/log/tanh/sqrt (MKL VML);
  both change under AVX-512. This is MKL's reproducibility mode: Intel documents the same results on every Intel CPU
  with AVX2 at a fixed thread count, with cache sizes fixed too (which a plain AVX2 cap does not promise). Measured:
  the same bits as ``MKL_ENABLE_INSTRUCTIONS=AVX2`` (what an AVX2 CPU picks); ``AVX2,STRICT`` gives other bits.
- ``MKL_ENABLE_INSTRUCTIONS=AVX2``: no change on top of ``MKL_CBWR`` here; kept for MKL functions outside CNR.
- ``ONEDNN_MAX_CPU_ISA=AVX2``: no change measured; the recipes' float32 ops never call oneDNN (``ONEDNN_VERBOSE``
  prints nothing), but torch sends convolutions and bf16 matmuls there.
- ``OPENBLAS_CORETYPE=Haswell``: numpy's and scipy's OpenBLAS (SkylakeX kernels here) solve the logistic regression;
  its ``coef_`` changes. Haswell is what OpenBLAS picks on Intel AVX2 CPUs (on AMD Zen it picks Zen: pinned too).
- ``NPY_DISABLE_CPU_FEATURES``: numpy's own ufunc loops. No change in the TF-IDF values or ``coef_`` measured, but
  numpy's float64 exp/log/log1p/power give other bits under AVX-512 on random inputs, and TF-IDF takes logs. The
  names cover numpy >= 2.4 (x86-64-v4 groups) and older numpy (AVX512F ...; checked with 2.2); each version ignores
  the other's names with an ImportWarning, hidden by default.

Environment variables only work before the libraries load: OpenBLAS and numpy read theirs when numpy is imported
(``import torch`` imports numpy), torch and MKL theirs at their first operation. So `pin_instruction_set` runs at the
top of a script, and `check_pinned_capability` confirms, once torch has loaded, that the pin took.
Spawned worker processes inherit ``os.environ``, so they are pinned too. End to end, ``run.py --quick`` pinned and
with the variables an AVX2-only CPU would have wrote the same results.json and SFT weights; unpinned, other ones.

Cost on this AVX-512 CPU (``benchmarks/instruction_set.py``): a LoRA DPO step of the tiny GPT-2 1.27x, a sampling
call 1.08x, nearly all of it MKL's AVX2 matmuls. On an AVX2 CPU these are the kernels it runs anyway.

Not covered (no such machine here): non-Intel CPUs. Intel documents that ``MKL_CBWR=AVX2`` falls back to MKL's
automatic choice on them (and ``MKL_ENABLE_INSTRUCTIONS`` is ignored), so MKL's results on AMD may differ.
"""

import os
import platform
import sys
import warnings

AVX2_PIN = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_CBWR": "AVX2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "OPENBLAS_CORETYPE": "Haswell",
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR "
                                "AVX512F AVX512CD AVX512_KNL AVX512_KNM AVX512_SKX AVX512_CLX AVX512_CNL",
}
# Libraries that fix their kernels when they load (numpy: OpenBLAS and its ufunc loops) or at their first op (torch).
_TOO_LATE_AFTER = ("torch", "numpy")


def cpu_info(field: str) -> str | None:
    """The first ``field`` line of /proc/cpuinfo (``"flags"``, ``"model name"``...), or None where it cannot tell (not
    Linux, no such line)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith(field)), None)
    except OSError:
        return None


def cpu_has_avx2() -> bool:
    """Whether this is an x86-64 CPU with AVX2 and FMA, the two torch's AVX2 kernels need (read from /proc/cpuinfo,
    before torch or numpy load). False where it cannot tell (not Linux)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    return {"avx2", "fma"} <= set((cpu_info("flags") or "").split())


def pin_instruction_set() -> bool:
    """Set `AVX2_PIN` in ``os.environ``. Call it before anything imports torch or numpy.

    Does nothing (returns False) on a CPU without AVX2, where the AVX2 kernels cannot run (torch would take
    ``ATEN_CPU_CAPABILITY=avx2`` on trust and crash on an illegal instruction); `check_pinned_capability` then warns.

    Raises:
        RuntimeError: torch or numpy is already imported and a variable would change: those libraries have already
            chosen some of their kernels, so the process would be half pinned and match no machine.
    """
    if not cpu_has_avx2():
        return False
    changes = {name: value for name, value in AVX2_PIN.items() if os.environ.get(name) != value}
    loaded = [name for name in _TOO_LATE_AFTER if name in sys.modules]
    if changes and loaded:
        raise RuntimeError(
            f"pin_instruction_set() ran after {' and '.join(loaded)} had been imported: too late to choose kernels. "
            "Call it at the top of the script, before any import that loads torch or numpy, or set these variables "
            "before starting Python: " + " ".join(f"{name}='{value}'" for name, value in changes.items()))
    os.environ.update(changes)
    return True


def check_pinned_capability(warn: bool = True) -> str:
    """Once torch has loaded: the CPU capability torch's kernels run at (``"AVX2"`` when pinned).

    Args:
        warn (`bool`): warn when the kernels are not the AVX2 ones (a CPU without AVX2, a non-x86 CPU, or a run
            without the pin): its numbers will differ from the pinned runs'. Worker processes pass False, so the
            main process alone warns.

    Raises:
        RuntimeError: ``ATEN_CPU_CAPABILITY=avx2`` is set but torch runs other kernels: torch chose them before the
            variable was set.
    """
    import torch

    capability = torch.backends.cpu.get_cpu_capability()
    if capability == "AVX2":
        return capability
    if os.environ.get("ATEN_CPU_CAPABILITY") == AVX2_PIN["ATEN_CPU_CAPABILITY"]:
        raise RuntimeError(f"ATEN_CPU_CAPABILITY=avx2 is set but torch runs its {capability} kernels: torch ran an "
                           "operation before the variable was set. Call pin_instruction_set() before importing torch.")
    if warn:
        warnings.warn(f"torch runs its {capability} CPU kernels, not the AVX2 ones the recipes pin: this run's numbers "
                      "will differ (first in the last bits, then in samples and results) from those of an x86-64 CPU "
                      "with AVX2. To reproduce those, run on an x86-64 CPU with AVX2 and FMA, on Linux (where "
                      "pin_instruction_set() applies); other CPUs cannot.",
                      RuntimeWarning, stacklevel=2)
    return capability
