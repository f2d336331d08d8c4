"""`dpo-ext iterate`: on-policy rounds (`dpo_ext.rounds`) from the command line.

Flags and ``--config`` YAML keys as ``dpo-ext train`` (`trl.TrlParser` over `IterateArguments`, `PLDPOConfig` and
`trl.ModelConfig`): the model and its LoRA come from ``--model_name_or_path`` and ``--use_peft --lora_r ...`` (or
``--start_adapter``), the loss and the training of each round from the `PLDPOConfig` flags (``--loss_type
lipo_lambda``, ``--max_steps``...), and the rounds from `IterateArguments`:

    dpo-ext iterate --config run.yaml --rounds 3

Run it again on the same ``--output_dir`` after a kill: it goes on where it stopped, with the same result.
"""

import logging
import sys
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

HELP = "on-policy rounds: sample K per prompt, label with a judge, train with any loss, evaluate, repeat"


@dataclass
class IterateArguments:
    prompts: str | None = field(default=None, metadata={
        "help": "JSONL/JSON/Parquet/CSV file with a 'prompt' per row (text or chat messages): what each round samples "
                "from."})
    eval_prompts: str | None = field(default=None, metadata={
        "help": "File of prompts the policy is sampled on after each round, scored by the evaluation judge."})
    rounds: int = field(default=3, metadata={"help": "Number of rounds."})
    k: int = field(default=4, metadata={"help": "Completions sampled per prompt each round (>= 2)."})
    judge: str | None = field(default=None, metadata={
        "help": "rm:PATH (a reward model), implicit:ADAPTER (an adapter's implicit reward), py:module:function, or "
                "self (the implicit reward of the policy each round starts from; needs --start_adapter)."})
    eval_judge: str | None = field(default=None, metadata={"help": "Judge of the evaluation (default: --judge)."})
    round_reference: str = field(default="initial", metadata={
        "help": "initial: the round-1 starting policy (the base) for every round; previous: the policy each round "
                "starts from.", "choices": ["initial", "previous"]})
    start_adapter: str | None = field(default=None, metadata={
        "help": "A saved adapter round 1 starts from (instead of a fresh LoRA from --use_peft)."})
    eval_k: int = field(default=4, metadata={"help": "Samples per evaluation prompt."})
    normalize: str = field(default="none", metadata={
        "help": "Map each row's judge scores before training: none, minmax (row's best 1, worst 0) or sigmoid (a "
                "reward model's logit); only lipo_lambda's gains depend on it.",
        "choices": ["none", "minmax", "sigmoid"]})
    sampling_seed: int = field(default=0, metadata={"help": "Round r samples with sampling_seed + r."})
    max_new_tokens: int = field(default=64, metadata={"help": "Longest completion sampled, in tokens."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling (1.0: off)."})
    top_k: int = field(default=0, metadata={"help": "Top-k sampling (0: off)."})


def make_parser():
    from dpo_ext.cli.parsing import trainer_parser

    return trainer_parser(IterateArguments, prog="dpo-ext iterate",
                          description="On-policy rounds: sample K completions per prompt from the policy, label them "
                                      "with a judge, train on them with any loss_type, evaluate, and repeat.")


def register(subparsers) -> None:
    """Lists the command in ``dpo-ext --help``; `dpo_ext.cli.main` hands its arguments to `main` (TrlParser)."""
    subparsers.add_parser("iterate", help=HELP, add_help=False)


def read_prompts(source: str) -> list:
    """The ``prompt`` of every row of ``source``; a row without one is named by its file line."""
    from dpo_ext.cli.common import check_prompts, read_rows

    return check_prompts(read_rows(source))


def main(argv=None) -> int:
    from dpo_ext.cli.train import load_policy, lora_config
    from dpo_ext.modeling.tokenizers import load_tokenizer
    from dpo_ext.rounds import RoundSettings, run_rounds

    argv = list(sys.argv[1:] if argv is None else argv)
    iterate_args, training_args, model_args = make_parser().parse_args_and_config(argv)
    if not iterate_args.prompts:
        raise ValueError("--prompts is required: a file with a 'prompt' per row")
    settings = RoundSettings(
        rounds=iterate_args.rounds, k=iterate_args.k, judge=iterate_args.judge or "",
        reference=iterate_args.round_reference, seed=iterate_args.sampling_seed, eval_k=iterate_args.eval_k,
        eval_judge=iterate_args.eval_judge, normalize=iterate_args.normalize,
        generation={"max_new_tokens": iterate_args.max_new_tokens, "temperature": iterate_args.temperature,
                    "top_p": iterate_args.top_p, "top_k": iterate_args.top_k})
    settings.check()  # before anything loads
    prompts = read_prompts(iterate_args.prompts)
    eval_prompts = read_prompts(iterate_args.eval_prompts) if iterate_args.eval_prompts else None
    if iterate_args.start_adapter is None and not model_args.use_peft:
        raise ValueError("round 1 trains a LoRA adapter: add --use_peft (with --lora_r ...) or pass --start_adapter")
    peft_config = lora_config(model_args) if iterate_args.start_adapter is None else None
    tokenizer = load_tokenizer(model_args.model_name_or_path, "--model_name_or_path", model_args.model_revision)
    summaries = run_rounds(lambda: load_policy(model_args, training_args), tokenizer, prompts, training_args,
                           settings, peft_config=peft_config, start_adapter=iterate_args.start_adapter,
                           eval_prompts=eval_prompts)
    for summary in summaries:
        shown = {key: summary[key] for key in ("round", "train_loss", "eval_judge_mean", "eval_judge_sem")
                 if key in summary}
        print(" ".join(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"
                       for key, value in shown.items()))
    print(f"adapters: {training_args.output_dir}/round-<r>/adapter")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(main())
