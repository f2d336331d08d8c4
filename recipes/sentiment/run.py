"""Controlled sentiment generation (DPO paper, section 6.1), end to end.

Prompts are IMDb review prefixes; a policy must continue them positively; a sentiment classifier is the
ground-truth reward; methods are compared by their reward vs KL(pi || pi_ref) frontier and by Best-of-N.

    # offline, CPU, about 10 minutes on 2 cores (make demo)
    HF_HUB_OFFLINE=1 python recipes/sentiment/run.py --output_dir outputs/sentiment
    # test-sized, about a minute
    HF_HUB_OFFLINE=1 python recipes/sentiment/run.py --quick --output_dir /tmp/sentiment
    # paper scale, GPUs, needs the Hub
    accelerate launch --config_file recipes/accelerate/ddp.yaml recipes/sentiment/run.py \
        --config recipes/sentiment/configs/paper_gpt2_large.yaml --output_dir outputs/sentiment_gpt2_large

Settings: configs/default.yaml, then --config FILE.yaml (--quick: configs/quick.yaml), then the flags; see
recipe_config.py. `main` runs the stages below in order, one function each; every stage writes into its own
sub-folder of --output_dir and marks it done (`recipe_config.stage`), so a re-run skips finished stages (delete a
sub-folder to redo it and, by hand, what depends on it).
"""

import json
import logging
import sys
from functools import partial
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # sibling modules, and recipe_kit in recipes/ (not a package)

from recipe_kit.instruction_set import pin_instruction_set  # noqa: E402

pin_instruction_set()  # first, before torch or numpy load: AVX2 kernels, so the same numbers on any AVX2 CPU

import recipe_config  # noqa: E402
from recipe_config import METHODS, NUM_STAGES, logger, stage, stage_settings  # noqa: E402
from recipe_kit import pool as parallel  # noqa: E402
from recipe_kit import reward_kl  # noqa: E402

log = logger.info
EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"  # distinct from EOS so that padding after an early EOS can be told apart from the EOS itself
# The settings the Hub model's SFT takes from the trainer config; the rest (optimizer, warm-up...) are DPO's, not SFT's.
HUB_SFT_SETTINGS = ("seed", "gradient_accumulation_steps", "bf16", "activation_checkpointing", "use_cpu")


def main(args) -> dict:
    """Run every stage (skipping cached ones) and write the report. ``args``: `recipe_config.RecipeArguments`."""
    out = Path(args.training.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if args.training.push_to_hub:
        from recipe_kit.publish import check_access

        check_access(args.training.hub_model_id, args.run.hub_dry_run)  # fail before hours of training, not after
    settings = partial(stage_settings, args)  # as parsed: run_seed is a setting of its own

    with parallel.recipe_pool(args.training.use_cpu, args.run.workers, HERE, log) as pool:
        parts = data_stage(out, args, settings("data"))
        tokenizer = tokenizer_stage(out, args, parts, settings("tokenizer"))
        sft_dir = sft_stage(out, args, tokenizer, parts, settings("sft"))
        reward = reward_stage(out, args, parts, settings("reward"))
        prefs = preference_stage(out, args, pool, sft_dir, tokenizer, reward, parts, settings("preferences"))
        args = with_run_seed(args)  # everything from here on: the run seed
        sft_point, runs = train_stage(out, args, pool, settings("sft_eval"), settings("train"))
        bon = None
        if args.data.best_of_n_max > 0:
            bon = best_of_n_stage(out, args, pool, sft_dir, tokenizer, reward, prefs, runs, settings("best_of_n"))
    from accelerate import PartialState

    if not PartialState().is_main_process:
        return {}
    return report_stage(out, args, sft_point, runs, reward, prefs, bon)


def with_run_seed(args):
    """``args`` with ``run_seed`` (when set) as the trainer's seed, which the stages after the preference data read:
    training, evaluation samples, rounds, Best-of-N."""
    from dataclasses import replace

    if args.run.run_seed is None:
        return args
    return args._replace(training=replace(args.training, seed=args.run.run_seed))


def data_stage(out: Path, args, settings: dict) -> dict:
    """Stage 1: the reviews, split into SFT, classifier and prompt reviews."""
    import imdb_data

    return stage(1, "data", out / "data", lambda d: imdb_data.build(d, args.data, args.training.seed),
                 imdb_data.load, settings=settings)


def tokenizer_stage(out: Path, args, parts: dict, settings: dict):
    """Stage 2: a byte-level BPE trained on the SFT reviews (tiny model, `recipe_kit.bpe`), or the Hub model's own
    tokenizer. No post-processor adds special tokens: a prompt is a review prefix of at least two tokens, so the model
    never has to predict a review's first token, and ``tokenizer(prompt + completion)`` is the plain concatenation
    TRL expects."""
    from recipe_kit.bpe import train_byte_level_bpe

    def build(d):
        if args.model.model_name_or_path is None:
            tokenizer = train_byte_level_bpe([r["text"] for r in parts["sft"]], args.recipe_model.tokenizer_vocab_size,
                                             [EOS_TOKEN, PAD_TOKEN], EOS_TOKEN, PAD_TOKEN)
            tokenizer.model_max_length = 1024
        else:
            tokenizer = reward_kl.load_tokenizer(args.model.model_name_or_path)
        tokenizer.save_pretrained(d)

    return stage(2, "tokenizer", out / "tokenizer", build, reward_kl.load_tokenizer, settings=settings)


def sft_stage(out: Path, args, tokenizer, parts: dict, settings: dict) -> Path:
    """Stage 3: the SFT policy (every method's reference), saved with its tokenizer. Returns its folder.

    Offline, a tiny GPT-2 built from a config and trained from scratch (`recipe_kit.sft.train_small_causal_lm`) on
    the first ``context_length`` tokens of each SFT review; prompts are review beginnings, so that is the distribution
    that matters. Paper scale: a Hub model (``gpt2-large``) fine-tuned on the reviews with `trl.SFTTrainer`
    (`recipe_kit.sft.fine_tune`), every weight trained, with its own tokenizer.
    """
    from recipe_kit.sft import fine_tune, sft_config, train_small_causal_lm

    run, context, texts = args.run, args.recipe_model.context_length, [r["text"] for r in parts["sft"]]

    def build(d):
        if args.model.model_name_or_path is None:
            from dpo_ext.testing import tiny_model

            model = tiny_model(tokenizer, seed=args.training.seed, n_layer=args.recipe_model.tiny_n_layer,
                               n_embd=args.recipe_model.tiny_n_embd, n_head=args.recipe_model.tiny_n_head,
                               n_positions=context, dropout=0.0)
            train_small_causal_lm(model, tokenizer, texts, d, max_length=context, batch_size=run.sft_batch_size,
                                  epochs=run.sft_epochs, learning_rate=run.sft_learning_rate, seed=args.training.seed,
                                  disable_tqdm=args.training.disable_tqdm)
        else:
            config = sft_config(args.training, d / "trainer", shared=HUB_SFT_SETTINGS, report_to="none",
                                num_train_epochs=run.sft_epochs, learning_rate=run.sft_learning_rate,
                                per_device_train_batch_size=run.sft_batch_size, max_length=context)
            fine_tune(args.model, config, [{"text": text} for text in texts], d)

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


def preference_stage(out: Path, args, pool, sft_dir: Path, tokenizer, reward, parts: dict, settings: dict) -> dict:
    """Stage 5: prompts, K SFT samples per training prompt, ranked by the reward (ranked and pairwise rows)."""
    import preference_data

    def sample(prompts, num_samples, seed):
        return reward_kl.sample_in_shards(pool, sft_dir, prompts, num_samples, args.data.max_new_tokens, seed,
                                          args.training.use_cpu)

    return stage(5, "preference data", out / "preferences",
                 lambda d: preference_data.build(d, sample, tokenizer, reward, parts["prompts"], args.data,
                                                 args.training.seed, with_run_seed(args).training.seed, log),
                 preference_data.load, settings=settings)


def train_stage(out: Path, args, pool, sft_eval_settings: dict, settings: dict) -> tuple[dict, dict]:
    """Stage 6: the SFT policy's own point (reward at KL 0) and one adapter per run, as parallel jobs, the costliest
    first. Returns the SFT point and each run's eval_results.json by run name."""
    import train_methods

    planned = train_methods.plan_runs(args)  # the order of the tables
    costliest_first = sorted(planned, key=lambda run: METHODS[run["method"]].cost, reverse=True)
    results = pool.run([(train_methods.train_job, out, args, run, settings) for run in costliest_first]
                       + [(train_methods.sft_eval_job, out, args, sft_eval_settings)])
    by_name = dict(zip((run["name"] for run in costliest_first), results))
    return results[-1], {run["name"]: by_name[run["name"]] for run in planned}


def best_of_n_stage(out: Path, args, pool, sft_dir: Path, tokenizer, reward, prefs: dict, runs: dict,
                    settings: dict):
    """Stage 7: Best-of-N among N_max SFT samples per held-out prompt (`recipe_kit.best_of_n`), picked by the
    classifier and by the implicit reward of the trained (PL-)DPO adapters at ``beta``. Sampling shards and
    scorers are jobs on ``pool``."""
    import torch
    from recipe_kit import best_of_n

    def build(d):
        prompts, n_max = prefs["prompts"]["best_of_n"], args.data.best_of_n_max
        samples = reward_kl.sample_in_shards(pool, sft_dir, prompts, n_max, args.data.max_new_tokens,
                                             args.training.seed + 2, args.training.use_cpu)  # (P, N_max)
        texts = reward_kl.reward_texts(tokenizer, prompts, samples)
        truth = torch.tensor(reward(texts)).reshape(len(prompts), n_max)
        scorers = {name: (out / "adapters" / name, r["beta"]) for name, r in runs.items()
                   if r["method"] in ("dpo", "pl_dpo") and r["beta"] == args.training.beta}
        result = best_of_n.build(pool, truth, prompts, samples, sft_dir, scorers, args.training.use_cpu, log)
        (d / "best_of_n.json").write_text(json.dumps(result, indent=2))

    return stage(7, "Best-of-N", out / "best_of_n", build, lambda d: json.loads((d / "best_of_n.json").read_text()),
                 settings=settings)


def report_stage(out: Path, args, sft_point: dict, runs: dict, reward, prefs: dict, bon: dict) -> dict:
    """Stage 8 (main process): tables, plots, README; model cards and (opt-in) publishing."""
    import imdb_data
    import publish
    import report

    summary = report.summarize(sft_point, runs, reward.metrics, prefs["stats"], bon, args.training.beta,
                                args.run.fixed_kls)
    report.write(out, summary, imdb_data.LICENSE_NOTE, "python " + " ".join(sys.argv))
    log(f"[8/{NUM_STAGES}] report: {out / 'results.md'}, {out / 'frontier.png'}, {out / 'best_of_n.png'}")
    publish.write_cards(out, runs, args.training.hub_model_id, log)
    if args.training.push_to_hub:
        publish.push_all(out, runs, args, log)
    return summary


if __name__ == "__main__":
    logging.basicConfig(format=parallel.LOG_FORMAT, datefmt="%H:%M:%S", level=logging.INFO)
    try:
        arguments = recipe_config.parse_args()
    except ValueError as error:
        sys.exit(f"run.py: error: {error}")
    try:
        main(arguments)
    except PermissionError as error:  # dpo_ext.HubAccessError: no token, read-only token, offline mode
        sys.exit(f"run.py: error: {error}")
