"""Controlled sentiment generation (DPO paper, section 6.1), end to end.

Prompts are IMDb review prefixes; a policy must continue them positively; a sentiment classifier is the
ground-truth reward; methods are compared by their reward vs KL(pi || pi_ref) frontier and by Best-of-N.

    # offline, CPU, ~15 minutes (make demo)
    HF_HUB_OFFLINE=1 python recipes/sentiment/run.py --output_dir outputs/sentiment
    # test-sized, about a minute
    HF_HUB_OFFLINE=1 python recipes/sentiment/run.py --quick --output_dir /tmp/sentiment
    # paper scale, GPUs, needs the Hub
    accelerate launch --config_file recipes/accelerate/ddp.yaml recipes/sentiment/run.py \
        --config recipes/sentiment/configs/paper_gpt2_large.yaml --output_dir outputs/sentiment_gpt2_large

Settings: configs/default.yaml, then --config FILE.yaml (--quick: configs/quick.yaml), then the flags; see
recipe_config.py. `main` runs the stages below in order, one function each; every stage writes into its own
sub-folder of --output_dir and marks it done (stage_cache.py), so a re-run skips finished stages (delete a
sub-folder to redo it and, by hand, what depends on it).
"""

import json
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling modules; recipes/ is not a package

import recipe_config  # noqa: E402
from stage_cache import NUM_STAGES, all_settings, stage, stage_settings  # noqa: E402

logger = logging.getLogger("sentiment")


def log(message: str) -> None:
    logger.info(message)


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


def set_up_torch(args) -> None:
    import torch

    if args.training.use_cpu:
        keep_freed_memory()
        threads = choose_threads(args.run.num_threads)
        torch.set_num_threads(threads)
        log(f"torch uses {threads} CPU thread(s)")


def main(args) -> dict:
    """Run every stage (skipping cached ones) and write the report. ``args``: `recipe_config.RecipeArguments`."""
    out = Path(args.training.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    set_up_torch(args)
    if args.training.push_to_hub:
        import publish

        publish.check_access(args)  # fail before hours of training, not after
    everything = all_settings(args)

    def settings(upto):
        return stage_settings(everything, upto)

    parts = data_stage(out, args, settings("data"))
    tokenizer = tokenizer_stage(out, args, parts, settings("tokenizer"))
    sft_dir = sft_stage(out, args, tokenizer, parts, settings("sft"))
    reward = reward_stage(out, args, parts, settings("reward"))
    prefs = preference_stage(out, args, sft_dir, tokenizer, reward, parts, settings("preferences"))
    sft_point = sft_eval_stage(out, args, sft_dir, tokenizer, reward, prefs, settings("sft_eval"))
    runs = train_stage(out, args, sft_dir, tokenizer, reward, prefs, settings("train"))
    bon = best_of_n_stage(out, args, sft_dir, tokenizer, reward, prefs, runs, settings("best_of_n"))
    from accelerate import PartialState

    if not PartialState().is_main_process:
        return {}
    return report_stage(out, args, sft_point, runs, reward, prefs, bon)


def data_stage(out: Path, args, settings: dict) -> dict:
    """Stage 1: the reviews, split into SFT, classifier and prompt reviews."""
    import imdb_data

    return stage(1, "data", out / "data", lambda d: imdb_data.build(d, args.data, args.training.seed),
                 imdb_data.load, settings=settings)


def tokenizer_stage(out: Path, args, parts: dict, settings: dict):
    """Stage 2: a BPE trained on the SFT reviews (tiny model), or the Hub model's own tokenizer."""
    import bpe_tokenizer

    def build(d):
        if args.model.model_name_or_path is None:
            bpe_tokenizer.build(d, [r["text"] for r in parts["sft"]], args.recipe_model.tokenizer_vocab_size)
        else:
            bpe_tokenizer.load(args.model.model_name_or_path).save_pretrained(d)

    return stage(2, "tokenizer", out / "tokenizer", build, bpe_tokenizer.load, settings=settings)


def sft_stage(out: Path, args, tokenizer, parts: dict, settings: dict) -> Path:
    """Stage 3: the SFT policy (every method's reference). Returns its folder."""
    import sft_policy

    def build(d):
        texts = [r["text"] for r in parts["sft"]]
        if args.model.model_name_or_path is None:
            sft_policy.train_tiny(d, args, tokenizer, texts, log)
        else:
            sft_policy.train_hub_model(d, args, tokenizer, texts, log)

    # A Hub model is fine-tuned with SFTTrainer on every process; the tiny one by the main process alone.
    return stage(3, "SFT policy", out / "sft", build, lambda d: d,
                 all_processes=args.model.model_name_or_path is not None, settings=settings)


def reward_stage(out: Path, args, parts: dict, settings: dict):
    """Stage 4: the ground-truth reward, a callable ``reward(texts) -> list[float]``."""
    import sentiment_reward

    def build(d):
        if args.recipe_model.reward_model_name is None:
            sentiment_reward.build(d, parts["classifier"], args.training.seed, log)

    return stage(4, "ground-truth reward", out / "reward", build,
                 lambda d: sentiment_reward.load(d, args.recipe_model.reward_model_name), settings=settings)


def preference_stage(out: Path, args, sft_dir: Path, tokenizer, reward, parts: dict, settings: dict) -> dict:
    """Stage 5: prompts, K SFT samples per training prompt, ranked by the reward (ranked and pairwise rows)."""
    import preference_data
    import sft_policy

    def build(d):
        policy = sft_policy.load(sft_dir, args.training.use_cpu)
        preference_data.build(d, policy, tokenizer, reward, parts["prompts"], args.data, args.training.seed, log)

    return stage(5, "preference data", out / "preferences", build, preference_data.load, settings=settings)


def sft_eval_stage(out: Path, args, sft_dir: Path, tokenizer, reward, prefs: dict, settings: dict) -> dict:
    """Stage 6, first point: the SFT policy's reward (its KL to itself is 0)."""
    import evaluation
    import sft_policy

    def build(d):
        point = evaluation.evaluate_policy(
            sft_policy.load(sft_dir, args.training.use_cpu), tokenizer, reward, prefs["prompts"]["eval"],
            args.run.eval_samples_per_prompt, args.data.max_new_tokens, seed=args.training.seed + 1,
            has_adapter=False)
        (d / "eval_results.json").write_text(json.dumps(point, indent=2))

    return stage(6, "SFT evaluation", out / "sft_eval", build, lambda d: read_json(d / "eval_results.json"),
                 settings=settings)


def train_stage(out: Path, args, sft_dir: Path, tokenizer, reward, prefs: dict, settings: dict) -> dict:
    """Stage 6: one adapter per run. Every process trains (the trainers distribute); the main process writes the
    folders. Returns each run's eval_results.json by run name."""
    import train_methods

    runs = {}
    for run in train_methods.plan_runs(args):
        runs[run["name"]] = stage(
            6, f"train {run['name']}", out / "adapters" / run["name"],
            lambda d, run=run: train_methods.train_run(run, d, sft_dir, tokenizer, prefs, reward,
                                                       prefs["prompts"]["eval"], args, log),
            lambda d: read_json(d / "eval_results.json"), all_processes=True, settings=settings,
        )
    return runs


def best_of_n_stage(out: Path, args, sft_dir: Path, tokenizer, reward, prefs: dict, runs: dict, settings: dict):
    """Stage 7: Best-of-N from SFT samples, picked by the implicit reward of the trained (PL-)DPO adapters."""
    import best_of_n

    scorers = {name: (str(out / "adapters" / name), r["beta"]) for name, r in runs.items()
               if r["method"] in ("dpo", "pl_dpo") and r["beta"] == args.training.beta}
    return stage(7, "Best-of-N", out / "best_of_n",
                 lambda d: best_of_n.build(d, sft_dir, tokenizer, reward, prefs["prompts"]["best_of_n"], scorers,
                                           args.data, args.training.seed, log, args.training.use_cpu),
                 best_of_n.load, settings=settings)


def report_stage(out: Path, args, sft_point: dict, runs: dict, reward, prefs: dict, bon: dict) -> dict:
    """Stage 8 (main process): tables, plots, README; model cards and (opt-in) publishing."""
    import imdb_data
    import publish
    import report

    summary = report.summarize(sft_point, runs, reward.metrics, prefs["stats"], bon)
    report.write(out, summary, imdb_data.LICENSE_NOTE, "python " + " ".join(sys.argv))
    log(f"[8/{NUM_STAGES}] report: {out / 'results.md'}, {out / 'frontier.png'}, {out / 'best_of_n.png'}")
    publish.write_cards(out, runs, args.training.hub_model_id, log)
    if args.training.push_to_hub:
        publish.push_all(out, runs, args, log)
    return summary


def read_json(path: Path):
    return json.loads(path.read_text())


if __name__ == "__main__":
    logging.basicConfig(format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S", level=logging.INFO)
    try:
        arguments = recipe_config.parse_args()
    except ValueError as error:
        sys.exit(f"run.py: error: {error}")
    try:
        main(arguments)
    except PermissionError as error:  # dpo_ext.HubAccessError: no token, read-only token, offline mode
        sys.exit(f"run.py: error: {error}")
