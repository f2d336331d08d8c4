"""Stage 8: the results table (Markdown + JSON), the reward-KL frontier plot, the Best-of-N plot and the output
folder's README. Always rebuilt from the cached stage outputs (cheap)."""

import json
from pathlib import Path

from recipe_config import ALL_METHODS, METHODS
from recipe_kit import best_of_n, frontier, plots

LABELS = {"sft": "SFT (reference)", **{name: method.label for name, method in METHODS.items()}}
STYLES = {name: method.style for name, method in METHODS.items()}
# Pairs of methods compared at equal KL in the report: (method, baseline). The listwise question first: does the
# whole ranking beat the best pair and every pair? Then: do on-policy rounds beat one offline pass, and does a policy
# judging itself keep the gain?
COMPARISONS = (("pl_dpo", "dpo"), ("lipo", "dpo"), ("lipo", "all_pairs"), ("pl_dpo", "all_pairs"),
               ("all_pairs", "dpo"), ("rounds", "pl_dpo"), ("rounds_self", "rounds"))
SAMPLE_METHODS = ("dpo", "pl_dpo")  # runs (at the Best-of-N beta) whose completions the report shows next to SFT's


def samples(sft_point: dict, runs: dict, beta: float) -> list[dict]:
    """The same eval prompts answered by SFT and by the final `SAMPLE_METHODS` adapters at ``beta``: one entry per
    prompt, ``{policy name: {"text", "reward"}}``."""
    sources = {"sft": sft_point["examples"]}
    sources.update({name: run["examples"] for name, run in runs.items()
                    if run["method"] in SAMPLE_METHODS and run["beta"] == beta})
    count = min(len(v) for v in sources.values())
    return [{name: examples[i] for name, examples in sources.items()} for i in range(count)]


def summarize(sft_point, runs: dict, reward_metrics, pref_stats, bon, beta: float, kls) -> dict:
    """results.json: the SFT policy's point, the data, every run, the comparison (`recipe_kit.frontier.summary`),
    Best-of-N and the samples."""
    return {"sft": {k: v for k, v in sft_point.items() if k != "examples"}, "reward_model": reward_metrics,
            "preference_data": pref_stats,
            "runs": {name: {k: v for k, v in r.items() if k != "examples"} for name, r in runs.items()},
            **frontier.summary(sft_point, runs, kls, COMPARISONS), "best_of_n": bon,
            "samples": samples(sft_point, runs, beta)}


def markdown(summary: dict) -> str:
    sft, rm = summary["sft"], summary["reward_model"]
    lines = [
        "# Controlled sentiment generation: results",
        "",
        f"Ground-truth reward: p(positive) from {rm.get('kind')}"
        + (f", held-out accuracy {rm['held_out_accuracy']:.3f} (48-word prefixes "
           f"{rm['held_out_accuracy_48_word_prefixes']:.3f})" if "held_out_accuracy" in rm else "") + ".",
        f"Reward and KL: {sft['num_samples']} samples on held-out prompts; KL(pi || pi_ref) is the sequence-level "
        "sample estimate. Mean +- standard error.",
        "",
        *frontier.markdown_tables(summary, LABELS),
    ]
    if summary.get("best_of_n"):
        lines += ["", *best_of_n.markdown_table(summary["best_of_n"])]
    if summary.get("samples"):
        lines += ["", "Samples: the first completion of each policy (final adapters) for the same held-out prompts, "
                  "with its ground-truth reward.", "",
                  *frontier.markdown_header("prompt", ["policy", "reward", "review so far"])]
        for i, entry in enumerate(summary["samples"], 1):
            for policy, example in entry.items():
                text = example["text"].replace("|", "/").replace("\n", " ")
                lines.append(f"| {i} | {policy} | {example['reward']:.3f} | {text} |")
    return "\n".join(lines) + "\n"


def write(out: Path, summary: dict, license_note: str, command: str) -> None:
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    table = markdown(summary)
    (out / "results.md").write_text(table)
    plots.frontier_plot(out / "frontier.png", summary["sft"], summary["runs"], labels=LABELS, styles=STYLES,
                        order=ALL_METHODS, ylabel="ground-truth reward, p(positive)",
                        title="IMDb sentiment: reward vs KL, one point per checkpoint (+- s.e.)")
    if summary.get("best_of_n"):
        plots.best_of_n_plot(out / "best_of_n.png", summary["best_of_n"], styles=STYLES)
    (out / "README.md").write_text("\n".join([
        "# Controlled sentiment generation (DPO paper, section 6.1)", "", f"Produced by: `{command}`", "",
        "- `results.md`, `results.json`: the tables below; `frontier.png`: reward vs KL, one point per checkpoint; "
        "`best_of_n.png`: Best-of-N pickers.",
        "- `adapters/<run>/`: one ready-to-publish LoRA adapter per run (weights, config, tokenizer, "
        "`training_config.json`, `eval_results.json`); its base model is `sft/`.",
        "- `data/`, `tokenizer/`, `sft/`, `reward/`, `preferences/`, `best_of_n/`: cached stages; delete one to "
        "rebuild it (and what depends on it).", "",
        f"Data: {license_note}", "",
        table.split("\n", 2)[2],  # the tables, under this README's own title
    ]))
