"""Controlled sentiment generation (DPO paper, section 6.1), end to end.

Prompts are IMDb review prefixes; a policy must continue them positively; a sentiment classifier is the
ground-truth reward; methods are compared by their reward vs KL(pi || pi_ref) frontier and by Best-of-N.

    # offline, CPU, ~15 minutes (make demo)
    HF_HUB_OFFLINE=1 python recipes/sentiment/run.py --output_dir outputs/sentiment
    # test-sized, about a minute
    HF_HUB_OFFLINE=1 python recipes/sentiment/run.py --quick --output_dir /tmp/sentiment
    # paper scale, GPUs, needs the Hub
    accelerate launch --config_file recipes/accelerate/ddp.yaml recipes/sentiment/run.py \
        --config recipes/sentiment/configs/paper_gpt2_large.yaml

Every stage writes into its own sub-folder of --output_dir and marks it done; a re-run skips finished stages
(delete a sub-folder to redo it and, by hand, what depends on it).
"""

import json
import logging
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling modules; recipes/ is not a package

import recipe_config  # noqa: E402

logger = logging.getLogger("sentiment")
NUM_STAGES = 8
# Settings each stage reads, in stage order; a stage depends on its own and every earlier stage's. Training and
# Best-of-N depend on everything but NOT_SETTINGS. Recorded in each stage's marker to flag stale caches.
STAGE_SETTINGS = {
    "data": ("dataset_name", "sft_reviews", "classifier_reviews", "preference_prompts", "eval_prompts",
             "best_of_n_prompts", "seed"),
    "tokenizer": ("model_name_or_path", "tokenizer_vocab_size"),
    "sft": ("tiny_n_layer", "tiny_n_embd", "tiny_n_head", "context_length", "sft_epochs", "sft_learning_rate",
            "sft_batch_size"),
    "reward": ("reward_model_name",),
    "preferences": ("prompt_min_tokens", "prompt_max_tokens", "num_completions", "max_new_tokens", "pairs"),
    "sft_eval": ("eval_samples_per_prompt",),
    "train": (),
    "best_of_n": ("best_of_n_max", "beta"),
}
# Not checked: where outputs go, speed-only knobs, and what selects runs (beta, alpha and method are in run names).
NOT_SETTINGS = ("output_dir", "num_threads", "logging_steps", "bf16", "use_cpu", "gradient_checkpointing", "methods",
                "sweep", "sweep_betas", "sweep_unlikelihood_alphas", "beta", "unlikelihood_alpha", "rl_method")


def log(message: str) -> None:
    logger.info(message)


def stage(index: int, name: str, out_dir: Path, build, load, all_processes: bool = False, settings: dict = None):
    """Run ``build(out_dir)`` unless ``out_dir`` is marked done; either way return ``load(out_dir)``.

    Under a multi-process launch only the main process builds and the others wait for it, unless
    ``all_processes`` (training: every process takes part, the main process writes the files and the marker).
    The marker records ``settings``; a cached stage built with other settings is used anyway, with a warning.
    """
    from accelerate import PartialState

    state = PartialState()
    marker = out_dir / ".done"
    settings = settings or {}
    if marker.is_file():
        log(f"[{index}/{NUM_STAGES}] {name}: cached in {out_dir}")
        recorded = json.loads(marker.read_text()).get("settings", {})
        changed = sorted(k for k in settings if k in recorded and recorded[k] != settings[k])
        if changed:
            logger.warning("%s was built with other settings (%s); delete %s to rebuild it with the current ones",
                           out_dir, ", ".join(f"{k}: {recorded[k]!r} -> {settings[k]!r}" for k in changed), out_dir)
        return load(out_dir)
    start = time.time()
    if all_processes:
        log(f"[{index}/{NUM_STAGES}] {name}: running")
        out_dir.mkdir(parents=True, exist_ok=True)
        build(out_dir)
        state.wait_for_everyone()
    else:
        with state.main_process_first():
            if state.is_main_process:
                log(f"[{index}/{NUM_STAGES}] {name}: running")
                out_dir.mkdir(parents=True, exist_ok=True)
                build(out_dir)
    if state.is_main_process:
        seconds = time.time() - start
        marker.write_text(json.dumps({"seconds": round(seconds, 1), "settings": settings}, default=str))
        log(f"[{index}/{NUM_STAGES}] {name}: done in {seconds:.1f}s")
    state.wait_for_everyone()
    return load(out_dir)


def choose_threads(requested: int) -> int:
    """``requested``, or the cores that other processes are not using. Measured on a shared 2-core machine: with
    its cores busy, 2 threads made each op wait for a descheduled thread and ran 5x (training) to 35x (sampling)
    slower than 1 thread."""
    if requested > 0:
        return requested
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    busy = int(os.getloadavg()[0] + 0.5) if hasattr(os, "getloadavg") else 0
    return max(1, cores - busy)


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


def main(model_args, lora_args, data_args, training_args, hub_args) -> dict:
    import torch

    out = Path(training_args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if training_args.use_cpu:
        keep_freed_memory()
        threads = choose_threads(training_args.num_threads)
        torch.set_num_threads(threads)
        log(f"torch uses {threads} CPU thread(s)")
    import bpe_tokenizer
    import imdb_data
    import preference_data
    import sentiment_reward
    import sft_policy

    if hub_args.push_to_hub:
        import publish

        publish.check_access(hub_args)  # fail before hours of training, not after

    everything = {k: v for a in (model_args, lora_args, data_args, training_args) for k, v in asdict(a).items()}

    def settings(upto: str) -> dict:
        """The settings a stage depends on: its own and every earlier stage's (see STAGE_SETTINGS)."""
        names = list(STAGE_SETTINGS)
        keys = [k for name in names[: names.index(upto) + 1] for k in STAGE_SETTINGS[name]]
        if upto in ("train", "best_of_n"):
            keys += [k for k in everything if k not in NOT_SETTINGS and k not in keys]
        return {k: everything[k] for k in keys}

    parts = stage(1, "data", out / "data", lambda d: imdb_data.build(d, data_args, training_args.seed),
                  imdb_data.load, settings=settings("data"))

    def build_tokenizer(d):
        if model_args.model_name_or_path is None:
            bpe_tokenizer.build(d, [r["text"] for r in parts["sft"]], model_args.tokenizer_vocab_size)
        else:
            bpe_tokenizer.load(model_args.model_name_or_path).save_pretrained(d)

    tokenizer = stage(2, "tokenizer", out / "tokenizer", build_tokenizer, bpe_tokenizer.load, settings=settings("tokenizer"))

    def build_sft(d):
        texts = [r["text"] for r in parts["sft"]]
        if model_args.model_name_or_path is None:
            sft_policy.train_tiny(d, model_args, training_args, tokenizer, texts, log)
        else:
            sft_policy.train_hub_model(d, model_args, training_args, tokenizer, texts, log)

    sft_dir = out / "sft"
    # A Hub model is fine-tuned with SFTTrainer on every process; the tiny one by the main process alone.
    stage(3, "SFT policy", sft_dir, build_sft, lambda d: d, all_processes=model_args.model_name_or_path is not None,
          settings=settings("sft"))

    def build_reward(d):
        if model_args.reward_model_name is None:
            sentiment_reward.build(d, parts["classifier"], training_args.seed, log)

    reward = stage(4, "ground-truth reward", out / "reward", build_reward,
                   lambda d: sentiment_reward.load(d, model_args), settings=settings("reward"))

    prefs = stage(
        5, "preference data", out / "preferences",
        lambda d: preference_data.build(d, sft_policy.load(sft_dir, training_args.use_cpu), tokenizer, reward,
                                        parts["prompts"], data_args, training_args.seed, log),
        preference_data.load, settings=settings("preferences"),
    )

    # Stage 6: methods. Every process trains (the trainers distribute); the main process writes the folders.
    import train_methods

    args = (model_args, lora_args, data_args, training_args)
    eval_prompts = prefs["prompts"]["eval"]
    sft_point = stage(6, "SFT evaluation", out / "sft_eval", lambda d: evaluate_sft(d, sft_dir, tokenizer, reward,
                      eval_prompts, data_args, training_args), lambda d: read_json(d / "eval_results.json"),
                      settings=settings("sft_eval"))
    runs = {}
    for run in train_methods.plan_runs(training_args):
        run_dir = out / "adapters" / run["name"]
        runs[run["name"]] = stage(
            6, f"train {run['name']}", run_dir,
            lambda d, run=run: train_methods.train_run(run, d, sft_dir, tokenizer, prefs, reward, eval_prompts,
                                                       args, log),
            lambda d: read_json(d / "eval_results.json"), all_processes=True, settings=settings("train"),
        )

    # Stage 7: Best-of-N from SFT samples, picked by the implicit reward of the trained (PL-)DPO adapters.
    import best_of_n

    scorers = {name: (str(out / "adapters" / name), r["beta"]) for name, r in runs.items()
               if r["method"] in ("dpo", "pl_dpo") and r["beta"] == training_args.beta}
    bon = stage(7, "Best-of-N", out / "best_of_n",
                lambda d: best_of_n.build(d, sft_dir, tokenizer, reward, prefs["prompts"]["best_of_n"], scorers,
                                          data_args, training_args.seed, log, training_args.use_cpu), best_of_n.load,
                settings=settings("best_of_n"))

    # Stage 8: tables, plots, README; model cards and (opt-in) publishing.
    from accelerate import PartialState

    if not PartialState().is_main_process:
        return {}
    import report

    summary = report.summarize(sft_point, runs, reward.metrics, prefs["stats"], bon)
    report.write(out, summary, imdb_data.LICENSE_NOTE, "python " + " ".join(sys.argv))
    log(f"[8/{NUM_STAGES}] report: {out / 'results.md'}, {out / 'frontier.png'}, {out / 'best_of_n.png'}")
    import publish

    publish.write_cards(out, runs, hub_args, log)
    if hub_args.push_to_hub:
        publish.push_all(out, runs, hub_args, log)
    return summary


def evaluate_sft(out_dir, sft_dir, tokenizer, reward, prompts, data_args, training_args):
    import evaluation
    import sft_policy

    point = evaluation.evaluate_policy(sft_policy.load(sft_dir, training_args.use_cpu), tokenizer, reward, prompts,
                                       training_args.eval_samples_per_prompt, data_args.max_new_tokens,
                                       seed=training_args.seed + 1, has_adapter=False)
    (out_dir / "eval_results.json").write_text(json.dumps(point, indent=2))


def read_json(path: Path):
    return json.loads(path.read_text())


if __name__ == "__main__":
    logging.basicConfig(format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S", level=logging.INFO)
    try:
        arguments = recipe_config.parse_args()
    except ValueError as error:
        sys.exit(f"run.py: error: {error}")
    try:
        main(*arguments)
    except PermissionError as error:  # dpo_ext.hub.HubAccessError: no token, read-only token, offline mode
        sys.exit(f"run.py: error: {error}")
