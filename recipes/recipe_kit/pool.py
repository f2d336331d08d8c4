"""Reproducible use of the CPU cores: the same numbers whatever else the machine is doing.

torch's CPU kernels split reductions by thread count, so one model trained on 1 thread and on 2 threads drifts
apart (measured: 1e-6 in the weights after 5 steps, then different samples and different results). So every process
that computes runs torch on exactly one thread, and the cores are used by running independent jobs (training
runs, sampling shards, scorers) in a pool of worker processes. A job's result depends only on its inputs and its
seed, never on which worker runs it or how many run at once: ``workers`` changes the wall time, not the numbers.
"""

import logging
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

RECIPES_DIR = str(Path(__file__).resolve().parents[1])  # recipe_kit's parent: recipes/ is not a package
LOG_FORMAT = "%(asctime)s %(name)s: %(message)s"


def one_thread() -> None:
    """Pin this process's numerical libraries to one thread. Environment variables first, for libraries that read
    them when they load; then torch itself, which may already be loaded."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = "1"
    import torch

    torch.set_num_threads(1)


def keep_freed_memory() -> None:
    """Ask glibc to keep freed memory instead of returning every large block to the OS. The tiny models allocate
    logits-sized temporaries (tens of MB) at every step; with glibc's defaults each one is a fresh mmap whose pages
    fault in again: measured 27% of a training step's CPU time spent in the kernel, ~0% with this."""
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    libc.mallopt(m_mmap_threshold, 1 << 30)
    libc.mallopt(m_trim_threshold, (1 << 31) - 1)


def set_up_cpu_process() -> None:
    keep_freed_memory()
    one_thread()


def cores() -> int:
    """The cores this process may run on. Used whatever the load: one-thread jobs share a busy core gracefully
    (unlike a multi-threaded op, whose threads wait for each other at every step)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _die_with_parent() -> None:
    """Linux: when the main process is killed, its workers are stopped too rather than finishing jobs for nobody."""
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _start_worker(level: int, recipe_dir: str) -> None:
    _die_with_parent()
    sys.path[:0] = [recipe_dir, RECIPES_DIR]  # the recipe's modules, whose functions jobs name, and recipe_kit
    set_up_cpu_process()
    from recipe_kit.instruction_set import check_pinned_capability

    # The pin comes with os.environ; check it took here too (the main process alone warns about an unpinned CPU).
    # Not pinned here: a pool started by an unpinned process must compute what that process computes.
    check_pinned_capability(warn=False)
    logging.basicConfig(format=LOG_FORMAT, datefmt="%H:%M:%S", level=level)


def recipe_pool(use_cpu: bool, workers: int, recipe_dir, log) -> "JobPool":
    """The pool of a recipe run. On CPU, this process is set up as every worker is (one torch thread, the log naming
    the kernels torch runs) and the pool has ``workers`` workers; on a GPU or under a multi-process launch, one
    (every job in this process), since the trainers distribute the work themselves."""
    from accelerate import PartialState

    from recipe_kit.instruction_set import check_pinned_capability

    if not use_cpu:
        return JobPool(1, recipe_dir)
    set_up_cpu_process()  # one torch thread: the numbers must not depend on the thread count
    log(f"torch CPU kernels: {check_pinned_capability()}")
    return JobPool(1 if PartialState().num_processes > 1 else workers, recipe_dir)


class JobPool:
    """Run ``function(*arguments)`` jobs on ``workers`` processes (0: one per core) and return the results in job
    order. With one worker the jobs run here, one after the other: the same results, without process start-up.

    Jobs must be module-level functions of the recipe with picklable arguments: paths, settings and plain data
    (token ids, rows). Models are loaded inside the job, from the stage folders.
    """

    def __init__(self, workers: int = 0, recipe_dir: str | Path | None = None):
        self.workers = workers if workers > 0 else cores()
        # the folder of the recipe's modules (not a package): workers import the jobs' functions from there
        self.recipe_dir = str(recipe_dir or Path(sys.argv[0]).resolve().parent)
        self._executor = None

    def run(self, jobs: list[tuple]) -> list:
        """``jobs``: ``(function, *arguments)`` tuples. Longer jobs first is the caller's business (order = start
        order)."""
        if self.workers == 1 or len(jobs) <= 1:
            return [function(*arguments) for function, *arguments in jobs]
        if self._executor is None:
            import multiprocessing

            # spawn, not fork: the parent has loaded torch, and its thread pools do not survive a fork.
            self._executor = ProcessPoolExecutor(
                max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker, initargs=(logging.getLogger().getEffectiveLevel(), self.recipe_dir))
        futures = [self._executor.submit(function, *arguments) for function, *arguments in jobs]
        try:
            return [future.result() for future in futures]
        except BaseException:
            for future in futures:  # a failed job fails the stage: do not start the jobs still queued
                future.cancel()
            raise

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown()
            self._executor = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
