"""Shared pieces of the benchmark scripts: a tiny offline model and tokenizer, synthetic ranked lists with exact token
counts, child processes for peak-memory measurements, and table / JSON output.

Every configuration runs in its own child process (``python <script> --child '<json>'``), because the RSS high-water
mark (``ru_maxrss``) only ever goes up: a child measures one configuration and prints one ``RESULT {json}`` line.
"""

import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"
RESULT_PREFIX = "RESULT "

# -- model and data -------------------------------------------------------------------------------------------------


def word_tokenizer(vocab_size: int):
    """A word-level tokenizer over ``w0 .. w{V-1}``: one word is exactly one token, so token counts are exact."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<eos>", "<unk>"]
    vocab = {token: i for i, token in enumerate(specials + [f"w{i}" for i in range(vocab_size - len(specials))])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>")


def build_model(spec: dict, seed: int = 0):
    """(model, tokenizer): a GPT-2 built from a config (``spec["model"] is None``) or loaded from a local/Hub id."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    if spec.get("model"):
        tokenizer = AutoTokenizer.from_pretrained(spec["model"])
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        dtype = torch.bfloat16 if spec.get("bf16") else torch.float32
        return AutoModelForCausalLM.from_pretrained(spec["model"], dtype=dtype), tokenizer
    tokenizer = word_tokenizer(spec["vocab_size"])
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=spec["n_positions"], n_embd=spec["n_embd"],
                        n_layer=spec["n_layer"], n_head=spec["n_head"], bos_token_id=tokenizer.eos_token_id,
                        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return GPT2LMHeadModel(config), tokenizer


def ranked_rows(n_lists: int, k: int, prompt_tokens: int, completion_tokens: int, vocab_size: int, seed: int = 0):
    """Ranked lists of random words: the prompt has ``prompt_tokens`` words, each completion ``completion_tokens - 1``
    words plus the EOS the trainers append (exact counts with `word_tokenizer`, approximate with a real tokenizer)."""
    rng = random.Random(seed)

    def words(n):
        return " ".join(f"w{rng.randrange(vocab_size - 3)}" for _ in range(n))

    return [{"prompt": words(prompt_tokens) + " ", "completions": [words(completion_tokens - 1) for _ in range(k)],
             "ranks": list(range(k))} for _ in range(n_lists)]


def adjacent_pairs(rows: list[dict]) -> list[dict]:
    """Each best-first list of K completions as its K-1 adjacent pairs (1>2, 2>3, ...), TRL's pairwise format."""
    return [{"prompt": r["prompt"], "chosen": r["completions"][j], "rejected": r["completions"][j + 1]}
            for r in rows for j in range(len(r["completions"]) - 1)]


def lora_config():
    from peft import LoraConfig

    return LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")


# -- measuring ------------------------------------------------------------------------------------------------------


def on_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


class PeakMemory:
    """Peak memory above a baseline: CUDA allocated bytes on a GPU, else the process's RSS high-water mark."""

    def __init__(self):
        import torch

        self.cuda = torch.cuda.is_available()
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.baseline = torch.cuda.memory_allocated()
        else:
            self.baseline = _maxrss_bytes()

    def peak_mib(self) -> float:
        import torch

        if self.cuda:
            torch.cuda.synchronize()
            return (torch.cuda.max_memory_allocated() - self.baseline) / 2**20
        return (_maxrss_bytes() - self.baseline) / 2**20


def _maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def step_timer(warmup: int):
    """A `TrainerCallback` recording wall-clock and process CPU time at the end of every optimizer step.

    ``.seconds_per_step()`` gives (wall, cpu): medians over the steps after the first ``warmup`` ones, each from the
    end of the step before (data loading, forward, backward and optimizer all included). The median resists the
    noise of a shared machine; CPU time resists it better still when torch runs one thread (with more, idle
    threads spinning at barriers count as CPU time).
    """
    import torch
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.ends = []

        def on_step_end(self, args, state, control, **kwargs):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.ends.append((time.perf_counter(), time.process_time()))

        def seconds_per_step(self) -> tuple[float, float]:
            steps = list(zip(self.ends[warmup - 1 :], self.ends[warmup:]))
            return tuple(statistics.median(b[i] - a[i] for a, b in steps) for i in (0, 1))

    return StepTimer()


# -- child processes, tables, JSON ----------------------------------------------------------------------------------


# For memory children only: glibc serves large blocks from mmap and unmaps them when freed, so RSS follows the live
# tensors. With its default (a threshold that grows up to 32 MiB) freed activations stay in the heap and RSS keeps
# the high-water mark of fragmentation instead (measured: 660 instead of 150 MiB for one checkpointed GPT-2-small
# step). It slows allocation, so timing children run with the default.
MEMORY_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536"}


def run_child(script: str, config: dict, env: dict | None = None, timeout: float = 900) -> dict:
    """Run ``script --child <config>`` in a fresh interpreter and return the dict it printed (or the error)."""
    env = {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"), "TOKENIZERS_PARALLELISM": "false",
           **(env or {})}
    proc = subprocess.run([sys.executable, script, "--child", json.dumps(config)], capture_output=True, text=True,
                          env=env, timeout=timeout)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return {**config, **json.loads(line[len(RESULT_PREFIX):])}
    return {**config, "error": (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]}


def child_result(result: dict) -> None:
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def quiet() -> None:
    """Silence the per-step logging and progress bars of a benchmark child."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def machine() -> dict:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "platform": platform.platform()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    try:
        import transformers
        import trl

        info.update(transformers=transformers.__version__, trl=trl.__version__)
    except ImportError:
        pass
    return info


def print_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> None:
    """Print rows as a Markdown table; ``columns`` are (key, header, format spec)."""
    def cell(row, key, spec):
        value = row.get(key)
        if value is None:
            return "-"
        return format(value, spec) if spec and not isinstance(value, str) else str(value)

    print("| " + " | ".join(h for _, h, _ in columns) + " |")
    print("|" + "|".join("---" for _ in columns) + "|")
    for row in rows:
        print("| " + " | ".join(cell(row, k, s) for k, _, s in columns) + " |")


def write_results(name: str, payload: dict) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path
