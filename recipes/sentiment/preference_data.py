"""Stage 5: prompts and synthetic preference data.

Prompts are review beginnings of ``prompt_min_tokens``..``prompt_max_tokens`` tokens cut at a word boundary (the
next token starts with a space), so that ``prompt + completion`` re-tokenizes with the prompt's own tokens. The prompt
reviews are split, in order, into eval prompts, Best-of-N prompts and preference prompts.

For every preference prompt the SFT policy samples K completions; the ground-truth reward scores ``prompt +
completion``. Written rows:
- ranked   ``{"prompt", "completions": [K strings], "scores": [K floats]}`` (higher is better), for Plackett-Luce;
- pairwise ``{"prompt", "chosen", "rejected"}``: best vs worst of the K (default; one pair per prompt, so DPO sees
  the same prompts and steps as Plackett-Luce), or every adjacent pair of the ranking (``pairs=adjacent``).
"""

import json
import random
from pathlib import Path

from recipe_kit.reward_kl import reward_texts

from dpo_ext.data.files import read_rows
from dpo_ext.data.jsonl import write_jsonl


def make_prompts(tokenizer, texts, min_tokens, max_tokens, seed):
    """One prompt per text: draw a length in [min, max], then move it to the nearest word boundary in range."""
    rng = random.Random(seed)
    prompts = []
    # Only the first max_tokens + 1 tokens matter (the +1 tells whether the next token starts a word).
    encoded = tokenizer(texts, add_special_tokens=False, truncation=True, max_length=max_tokens + 1)
    for ids in encoded["input_ids"]:
        target = rng.randint(min_tokens, max_tokens)
        tokens = tokenizer.convert_ids_to_tokens(ids[: max_tokens + 1])
        lengths = sorted(range(min_tokens, max_tokens + 1), key=lambda n: (abs(n - target), n))
        # "Ġ" is how byte-level BPE writes a leading space: the prompt then ends at a word boundary.
        boundary = [n for n in lengths if n < len(tokens) and tokens[n].startswith("Ġ")]
        prompts.append(ids[: boundary[0] if boundary else min(target, len(ids))])
    return prompts


def split_prompts(tokenizer, prompt_reviews, data_args, seed):
    """Prompt token ids per split; the reviews come ordered eval, Best-of-N, train (`imdb_data.split_reviews`)."""
    ids = make_prompts(tokenizer, [r["text"] for r in prompt_reviews], data_args.prompt_min_tokens,
                       data_args.prompt_max_tokens, seed)
    sizes = {"eval": data_args.eval_prompts, "best_of_n": data_args.best_of_n_prompts,
             "train": data_args.preference_prompts}
    splits, start = {}, 0
    for name, size in sizes.items():
        splits[name], start = ids[start : start + size], start + size
    return splits


def decode(tokenizer, ids):
    """Token ids -> text, keeping a generated EOS: the trainers append EOS only to completions that lack one, so a
    completion that really ended stays distinguishable from one cut at ``max_new_tokens``."""
    return tokenizer.decode(ids)


def pairwise_rows(prompt, completions, scores, mode):
    """``mode`` "best_worst": the best vs the worst completion; otherwise every adjacent pair of the ranking."""
    order = sorted(range(len(scores)), key=lambda k: -scores[k])  # best first
    pairs = [(order[0], order[-1])] if mode == "best_worst" else list(zip(order[:-1], order[1:]))
    return [{"prompt": prompt, "chosen": completions[a], "rejected": completions[b]} for a, b in pairs]


def build(out_dir: Path, sample, tokenizer, reward, prompt_reviews, data_args, seed, sample_seed, log):
    """``sample(prompts, num_samples, seed)``: (P, num_samples) completions of the SFT policy, as token lists. The
    prompts are cut with ``seed`` (the same for every ``run_seed``), the completions sampled with ``sample_seed``."""
    splits = split_prompts(tokenizer, prompt_reviews, data_args, seed)
    (out_dir / "prompts.json").write_text(json.dumps(splits))
    train, k = splits["train"], data_args.num_completions
    samples = sample(train, k, sample_seed)  # (P, K) token lists
    flat_scores = reward(reward_texts(tokenizer, train, samples))
    ranked, pairwise = [], []
    for i, (prompt_ids, row) in enumerate(zip(train, samples)):
        prompt, completions = decode(tokenizer, prompt_ids), [decode(tokenizer, c) for c in row]
        if any(not c.strip() for c in completions):  # a blank completion is no preference data
            continue
        scores = [round(s, 6) for s in flat_scores[i * k : (i + 1) * k]]
        ranked.append({"prompt": prompt, "completions": completions, "scores": scores})
        pairwise.extend(pairwise_rows(prompt, completions, scores, data_args.pairs))
    write_jsonl(out_dir / "ranked.jsonl", ranked)
    write_jsonl(out_dir / "pairwise.jsonl", pairwise)
    gaps = [max(r["scores"]) - min(r["scores"]) for r in ranked]
    stats = {"train_prompts": len(train), "eval_prompts": len(splits["eval"]),
             "best_of_n_prompts": len(splits["best_of_n"]), "completions_per_prompt": k, "pairs": data_args.pairs,
             "pairwise_rows": len(pairwise), "dropped_prompts_with_blank_completion": len(train) - len(ranked),
             "sft_sample_mean_reward": round(sum(flat_scores) / len(flat_scores), 4),
             "mean_best_minus_worst": round(sum(gaps) / len(gaps), 4)}
    (out_dir / "stats.json").write_text(json.dumps(stats, indent=2))
    log(f"preferences: {len(ranked)} ranked rows (K={k}), {len(pairwise)} pairs ({data_args.pairs}); SFT samples' "
        f"mean reward {stats['sft_sample_mean_reward']:.3f}, mean best-worst gap {stats['mean_best_minus_worst']:.3f}")
    return load(out_dir)


def load(out_dir: Path) -> dict:
    return {"prompts": json.loads((out_dir / "prompts.json").read_text()),
            "ranked": read_rows(out_dir / "ranked.jsonl").rows, "pairwise": read_rows(out_dir / "pairwise.jsonl").rows,
            "stats": json.loads((out_dir / "stats.json").read_text())}
