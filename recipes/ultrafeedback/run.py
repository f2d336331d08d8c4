"""UltraFeedback: Plackett-Luce DPO on each prompt's whole ranking against the two pairwise baselines built from the
same rows (one binarized pair per prompt; every untied pair), on the same prompts, for the same number of steps,
evaluated on the same held-out ranked rows.

    python recipes/ultrafeedback/run.py --config recipes/ultrafeedback/configs/lora.yaml --method all
    accelerate launch --config_file recipes/accelerate/ddp.yaml recipes/ultrafeedback/run.py \\
        --config recipes/ultrafeedback/configs/lora.yaml --method pl_dpo

Each method writes ``<output_dir>/<method>/`` (adapter, ``eval_results.json``, ``run_info.json``); ``--method all``
runs the three and ``--method compare`` (also the end of ``all``) writes ``comparison.md`` and ``comparison.json``.
Rows: `ultrafeedback_data`. Training, evaluation and publishing: `dpo_ext.cli.train.run_training`. See README.md.
"""

import hashlib
import json
import logging
import math
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # ultrafeedback_data, and recipe_kit in recipes/

import ultrafeedback_data as uf  # noqa: E402
from recipe_kit.arguments import RecipeArguments, first, local_file, parse_args  # noqa: E402
from recipe_kit.stages import train_dpo  # noqa: E402

logger = logging.getLogger("ultrafeedback")

METHODS = ("pl_dpo", "binarized", "all_pairs")
RUN_INFO = "run_info.json"
# Columns of the comparison: eval_results.json key -> heading
COLUMNS = {"eval_rewards/accuracies": "preference accuracy", "eval_rewards/top1_accuracy": "top-1 accuracy",
           "eval_rewards/kendall_tau": "Kendall tau", "win_rate": "win rate", "reward_policy": "reward (policy)",
           "reward_sft": "reward (start)"}


@dataclass
class UltraFeedbackArguments(RecipeArguments):
    stage: str = field(default="dpo", metadata={
        "help": "dpo only: the model is already instruction-tuned, so there is no SFT stage."})
    method: str = field(default="all", metadata={
        "help": "pl_dpo (whole rankings), binarized (best vs a random worse one), all_pairs (every untied pair), all "
                "(the three, then compare), or compare (tabulate the finished runs).",
        "choices": [*METHODS, "all", "compare"]})
    rating: str = field(default="overall", metadata={
        "help": "Score ranking the completions: overall (GPT-4's overall_score, what ultrafeedback_binarized ranks "
                "by), fine_grained (mean of the four aspect ratings), or one aspect.", "choices": list(uf.RATINGS)})
    test_fraction: float = field(default=0.05, metadata={"help": "Share of prompts held out (by a hash of the text)."})
    chat_format: bool = field(default=True, metadata={
        "help": "Give prompts and completions as chat messages, rendered by the tokenizer's chat template (an "
                "instruct model); false: plain text."})

    def __post_init__(self):
        if self.stage != "dpo":
            raise ValueError("UltraFeedback has no SFT stage (the model is already instruction-tuned): use --stage dpo")
        super().__post_init__()


def as_chat(row: dict) -> dict:
    """A text row as chat messages: the prompt a user turn, each completion an assistant turn."""
    def reply(text):
        return [{"role": "assistant", "content": text}]

    out = {"prompt": [{"role": "user", "content": row["prompt"]}]}
    for key in ("chosen", "rejected"):
        if key in row:
            out[key] = reply(row[key])
    if "completions" in row:
        out["completions"], out["scores"] = [reply(c) for c in row["completions"]], row["scores"]
    return out


def method_rows(train: list[dict], seed: int) -> dict[str, list[dict]]:
    """Each method's training rows, from the same ranked rows (so from the same prompts)."""
    return {"pl_dpo": train, "binarized": uf.binarized_pairs(train, seed), "all_pairs": uf.all_pairs(train)}


def shared_steps(training, num_prompts: int) -> int:
    """Optimizer steps every method takes: ``max_steps`` when set, else the epochs of the ranked rows (one row per
    prompt) at the run's batch size."""
    if training.max_steps > 0:
        return training.max_steps
    batch = training.per_device_train_batch_size * training.gradient_accumulation_steps * training.world_size
    return max(1, math.ceil(training.num_train_epochs * math.ceil(num_prompts / batch)))


def prompts_digest(rows: list[dict]) -> str:
    """SHA-256 of the rows' distinct prompts, sorted: equal for two sets of rows exactly when they have the same
    prompts (text or chat rows)."""
    prompts = {json.dumps(row["prompt"], sort_keys=True) for row in rows}
    return hashlib.sha256("\n".join(sorted(prompts)).encode()).hexdigest()


def train_method(run, method: str, rows: list[dict], test: list[dict], steps: int) -> dict:
    """Train and evaluate one method into ``<output_dir>/<method>`` (published as ``<hub_model_id>-<method>``), and
    record what it trained and was evaluated on in ``run_info.json``."""
    out = Path(run.training.output_dir) / method
    training = replace(run.training, output_dir=str(out), max_steps=steps,
                       hub_model_id=run.training.hub_model_id and f"{run.training.hub_model_id}-{method}")
    script = replace(run.script, hub_dry_run=run.script.hub_dry_run and str(Path(run.script.hub_dry_run) / method))
    if run.recipe.chat_format:
        rows, test = [as_chat(r) for r in rows], [as_chat(r) for r in test]
    card = {"datasets": [] if run.recipe.data_files else [uf.DATASET],
            "eval_dataset": local_file(run.recipe.data_files, "train") or uf.DATASET,
            "eval_split": f"held-out prompts ({run.recipe.test_fraction:g} of them, by hash)"}
    results = train_dpo(run, rows, test, card, training=training, script=script)
    if training.process_index == 0:
        info = {"method": method, "train_rows": len(rows), "max_steps": steps, "train_prompts_sha256":
                prompts_digest(rows), "eval_rows": len(test), "eval_prompts_sha256": prompts_digest(test)}
        (out / RUN_INFO).write_text(json.dumps(info, indent=2) + "\n")
    return results


def compare(output_dir) -> dict:
    """``comparison.json`` and ``comparison.md`` in ``output_dir`` from the finished methods' folders."""
    output_dir, table = Path(output_dir), {}
    for method in METHODS:
        folder = output_dir / method
        if (folder / RUN_INFO).is_file() and (folder / "eval_results.json").is_file():
            table[method] = {**json.loads((folder / RUN_INFO).read_text()),
                             **json.loads((folder / "eval_results.json").read_text())}
    if not table:
        raise FileNotFoundError(f"{output_dir}: no finished method ({', '.join(METHODS)}) to compare")
    (output_dir / "comparison.json").write_text(json.dumps(table, indent=2) + "\n")
    columns = {key: name for key, name in COLUMNS.items() if any(key in row for row in table.values())}
    lines = ["| method | train rows | steps | " + " | ".join(columns.values()) + " |",
             "|---|---:|---:|" + "---:|" * len(columns)]
    for method, row in table.items():
        cells = [f"{row[key]:.4f}" if key in row else "" for key in columns]
        lines.append(f"| {method} | {row['train_rows']} | {row['max_steps']} | " + " | ".join(cells) + " |")
    same = len({row["eval_prompts_sha256"] for row in table.values()}) == 1
    note = (f"Evaluated on the same {next(iter(table.values()))['eval_rows']} held-out ranked rows." if same else
            "WARNING: the methods were evaluated on different held-out prompts; rerun them on the same data.")
    (output_dir / "comparison.md").write_text("\n".join(lines) + "\n\n" + note + "\n")
    return table


def parse(argv=None):
    """The run's `recipe_kit.arguments.Run` from ``argv`` (default: the command line)."""
    return parse_args(UltraFeedbackArguments, argv, prog="recipes/ultrafeedback/run.py")


def main(argv=None) -> dict:
    run = parse(argv)
    recipe = run.recipe
    if recipe.method == "compare":
        return compare(run.training.output_dir)
    rows, counts = uf.load_rows(data_files=local_file(recipe.data_files, "train"), rating=recipe.rating)
    logger.warning("UltraFeedback: %s", counts)
    train, test = uf.split_by_prompt(rows, recipe.test_fraction)
    train, test = first(train, recipe.max_train_rows), first(test, recipe.max_eval_rows)
    steps = shared_steps(run.training, len(train))
    sets = method_rows(train, run.training.seed)
    methods = METHODS if recipe.method == "all" else (recipe.method,)
    results = {method: train_method(run, method, sets[method], test, steps) for method in methods}
    if recipe.method == "all" and run.training.process_index == 0:
        compare(run.training.output_dir)
    return results


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
