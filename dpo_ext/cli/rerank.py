"""`dpo-ext rerank`: Best-of-N with the implicit reward, over sampled completions or a row's own candidates."""

import argparse
import sys

from dpo_ext.cli.common import (
    Rows,
    add_input_arguments,
    add_model_arguments,
    check_output,
    read_rows,
    scorer_from_arguments,
    write_jsonl,
)
from dpo_ext.data.rows import COMPLETIONS, PROMPT, PreferenceDataError, check_prompt, check_scored

CANDIDATES = "candidates"


def register(subparsers) -> None:
    rerank = subparsers.add_parser(
        "rerank", help="Best-of-N: sample N completions per prompt (or rerank given ones), keep the best",
        description="For each row's prompt, sample --n completions from the adapter (or rerank the row's own "
                    "'candidates' list when it has one) and keep the completion with the highest implicit reward. "
                    "Output rows: prompt, best, best_reward, candidates, rewards.")
    add_model_arguments(rerank)
    add_input_arguments(rerank, "JSONL file to write")
    rerank.add_argument("--n", type=int, default=4, help="samples per prompt (default: 4)")
    rerank.add_argument("--max-new-tokens", type=int, default=64, help="tokens per sample (default: 64)")
    rerank.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default: 1.0)")
    rerank.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling threshold (default: 1.0, off)")
    rerank.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    rerank.set_defaults(handler=_rerank)


def _candidates_field(row: dict) -> str:
    """The field of a rerank row's given candidates: ``candidates``, else ``completions``."""
    return COMPLETIONS if row.get(CANDIDATES) is None and row.get(COMPLETIONS) is not None else CANDIDATES


def _check(rows: Rows) -> None:
    """Every row by the row rules before the model loads: a prompt and, when given, candidates to score with it."""
    for i, row in enumerate(rows.rows):
        field = _candidates_field(row)
        try:
            if row.get(field) is None:
                check_prompt(row.get(PROMPT), i)
            else:
                check_scored(row.get(PROMPT), row[field], i, field)
        except PreferenceDataError as error:
            raise rows.error(error) from None


def _rerank(args: argparse.Namespace) -> int:
    if args.n < 1:
        raise ValueError(f"--n must be at least 1, got {args.n}")
    from dpo_ext.sampling import generation_config, shard_seed

    generation = {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "top_p": args.top_p}
    generation_config(None, generation)  # settings that cannot sample, refused before the model loads
    check_output(args.output, args.input)
    rows = read_rows(args.input, args.split)
    _check(rows)
    scorer = scorer_from_arguments(args)
    from tqdm.auto import tqdm

    out = []
    for i, row in enumerate(tqdm(rows.rows, desc="Best-of-N", unit="prompt")):
        field = _candidates_field(row)
        try:
            if row.get(field) is not None:
                scored = scorer.rerank(row[PROMPT], row[field], normalize=args.normalize)
                ranked = sorted(scored, key=lambda c: c.index)
            else:
                # each row alone, on its own seed (as a shard of `dpo_ext.sampling` would be)
                ranked = scorer.best_of_n([row[PROMPT]], args.n, generation_config=generation,
                                          seed=shard_seed(args.seed, i), normalize=args.normalize)[0].candidates
        except PreferenceDataError as error:  # the scorer saw one prompt: name this row and its candidate field
            names = [f"{field}[{k}]" for k in range(len(row.get(field) or []))]
            raise rows.error(error.located(row=i), names) from error
        except ValueError as error:
            raise ValueError(f"{rows.where(i)}: {error}") from error
        best = max(ranked, key=lambda c: c.reward)
        out.append({"prompt": row[PROMPT], "best": best.completion, "best_reward": best.reward,
                    "candidates": [c.completion for c in ranked], "rewards": [c.reward for c in ranked]})
    write_jsonl(args.output, out)
    print(f"Best-of-N for {len(out)} prompts -> {args.output}", file=sys.stderr)
    return 0
