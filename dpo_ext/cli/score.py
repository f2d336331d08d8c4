"""`dpo-ext score`, `dpo-ext rerank` and `dpo-ext eval`: a DPO-trained adapter used as a reward model.

torch, transformers and datasets are imported inside the handlers so that `dpo-ext --help` stays fast.
"""

import argparse
import json
import re
import sys
from pathlib import Path

from dpo_ext.data.jsonl import iter_jsonl
from dpo_ext.data.rows import PreferenceDataError, check_completion, check_prompt, is_blank, is_messages
from dpo_ext.hub.ids import looks_like_hub_id, offline
from dpo_ext.setup_checks import unwritable_folder



def register(subparsers) -> None:
    score = subparsers.add_parser(
        "score", help="implicit rewards of completions (JSONL in, JSONL with rewards out)",
        description="Score completions with the implicit reward beta * log pi(y|x) / pi_ref(y|x) of a DPO-trained "
                    "adapter. Rows: {prompt, completion}, {prompt, completions: [...]} or {prompt, chosen, "
                    "rejected}; prompts and completions are text or chat messages. Each output row is the input row "
                    "plus reward(s), policy_logps, ref_logps and num_tokens.")
    _add_model_arguments(score)
    _add_input_arguments(score)
    score.add_argument("--output", "-o", required=True, type=Path, help="JSONL file to write")
    score.set_defaults(handler=_score)

    rerank = subparsers.add_parser(
        "rerank", help="Best-of-N: sample N completions per prompt (or rerank given ones), keep the best",
        description="For each row's prompt, sample --n completions from the adapter (or rerank the row's own "
                    "'candidates' list when it has one) and keep the completion with the highest implicit reward. "
                    "Output rows: prompt, best, best_reward, candidates, rewards.")
    _add_model_arguments(rerank)
    _add_input_arguments(rerank)
    rerank.add_argument("--output", "-o", required=True, type=Path, help="JSONL file to write")
    rerank.add_argument("--n", type=int, default=4, help="samples per prompt (default: 4)")
    rerank.add_argument("--max-new-tokens", type=int, default=64, help="tokens per sample (default: 64)")
    rerank.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default: 1.0)")
    rerank.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling threshold (default: 1.0, off)")
    rerank.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    rerank.set_defaults(handler=_rerank)

    evaluate = subparsers.add_parser(
        "eval", help="preference accuracy of the implicit reward on pairwise or ranked data",
        description="How often the implicit reward agrees with preference data: accuracy (chosen strictly above "
                    "rejected, as RewardBench counts), and for ranked rows top-1 accuracy, pairwise accuracy and "
                    "Kendall's tau. Rows: {prompt, chosen, rejected}, or {prompt, completions, ranks|scores}.")
    _add_model_arguments(evaluate)
    _add_input_arguments(evaluate)
    evaluate.add_argument("--output", "-o", type=Path, help="also write the metrics to this JSON file")
    evaluate.set_defaults(handler=_eval)


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="directory or Hub repo id of a PEFT adapter (a full model needs --ref-model "
                                      "or --reference-free)")
    group = parser.add_argument_group("reference and reward")
    group.add_argument("--base-model", help="base model to load the adapter onto (default: from adapter_config.json)")
    group.add_argument("--ref-model", help="an explicit reference model (default: the base with adapters disabled)")
    group.add_argument("--ref-adapter", default="auto",
                       help="reference adapter: 'auto' (a saved ref/ adapter, TRL's frozen copy, if present), "
                            "'none' (always the base model), or a subfolder/directory name (default: auto)")
    group.add_argument("--reference-free", action="store_true", help="reward = beta * log pi (no reference)")
    group.add_argument("--beta", type=float, default=0.1, help="the DPO beta of training (default: 0.1)")
    group.add_argument("--normalize", choices=("sum", "mean"), default="sum",
                       help="sum of token log-ratios (the DPO reward), or their mean per token (default: sum)")
    speed = parser.add_argument_group("speed")
    speed.add_argument("--max-length", type=int, help="truncate prompt + completion to this many tokens")
    speed.add_argument("--max-batch-tokens", type=int,
                       help="tokens per forward (default: 1024 on CPU, 8192 on GPU)")
    speed.add_argument("--no-prefix-sharing", action="store_true", help="score every prompt + completion row "
                                                                         "separately (slower; for debugging)")
    speed.add_argument("--device", help="cpu, cuda, cuda:1... (default: cuda when available)")


def _add_input_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", "-i", required=True, help="JSONL/JSON/Parquet file, or a Hub dataset id")
    parser.add_argument("--split", default="train", help="dataset split, for Hub datasets (default: train)")


# -- input ---------------------------------------------------------------------------------------------------------

class Rows:
    """Input rows and how to name one in an error message (file line, or dataset row)."""

    def __init__(self, source: str, rows: list, lines: list | None = None):
        self.source, self.rows, self.lines = source, rows, lines

    def where(self, index: int) -> str:
        if self.lines is not None:
            return f"{self.source}, line {self.lines[index]}"
        return f"{self.source}, row {index}"

    def describe(self, error) -> str:
        """A `PreferenceDataError` about row ``error.row`` of these rows, named by file line (or row) and field."""
        field = f", field '{error.field}'" if error.field else ""
        return f"{self.where(error.row)}{field}: {error.problem}"


def read_rows(source: str, split: str = "train") -> Rows:
    """Rows of a JSONL / JSON / Parquet / CSV file, or of a Hub dataset split."""
    path = Path(source)
    if path.is_file() and path.suffix in (".jsonl", ".json", ""):
        return _read_json(path)
    if path.is_file() or path.is_dir():
        import datasets

        kind = {".parquet": "parquet", ".csv": "csv"}.get(path.suffix)
        if path.is_file() and kind is None:
            raise ValueError(f"{source}: unsupported file type '{path.suffix}' (use .jsonl, .json, .parquet or .csv)")
        dataset = (datasets.load_dataset(kind, data_files=str(path), split="train") if kind
                   else datasets.load_from_disk(str(path)))
        if isinstance(dataset, datasets.DatasetDict):
            dataset = dataset[split]
        return Rows(source, list(dataset))
    if not looks_like_hub_id(source):
        raise FileNotFoundError(f"{source}: no such file, and not a Hub dataset id")
    import datasets

    try:
        return Rows(f"{source}[{split}]", list(datasets.load_dataset(source, split=split)))
    except Exception as error:  # noqa: BLE001 - offline, missing repo or split: say which and why
        raise ValueError(f"could not load the Hub dataset {source!r} (split {split!r}): {error}") from error


def _read_json(path: Path) -> Rows:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json" and text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON ({error}); give a JSON array of row objects, or JSON Lines "
                             "(one object per line)") from None
        for index, row in enumerate(rows):
            if not isinstance(row, dict):
                raise ValueError(f"{path}, row {index}: expected a JSON object (one preference row), got "
                                 f"{type(row).__name__}")
        if not rows:
            raise ValueError(f"{path}: no rows")
        return Rows(str(path), rows)
    rows, lines = [], []
    for number, row in iter_jsonl(path, text.splitlines()):
        rows.append(row)
        lines.append(number)
    if not rows:
        raise ValueError(f"{path}: no rows")
    return Rows(str(path), rows, lines)


def _prompt_problem(row: dict) -> str | None:
    """What is wrong with a row's prompt by the trainer's rules (`dpo_ext.data.rows.check_prompt`), or `None`."""
    try:
        check_prompt(row.get("prompt"))
    except PreferenceDataError as error:
        return error.problem
    return None


def completions_of(row: dict, where: str) -> tuple[str, list]:
    """(format, completions) of a score row: ``completion``, ``completions`` or ``chosen``/``rejected``."""

    def fail(field, problem):
        raise ValueError(f"{where}, field '{field}': {problem}")

    problem = _prompt_problem(row)
    if problem is not None:
        fail("prompt", problem)
    if row.get("completions") is not None:
        kind, fields = "completions", [f"completions[{k}]" for k in range(len(row["completions"]))]
        values = row["completions"]
        if not isinstance(values, list) or not values:
            fail("completions", "must be a non-empty list")
    elif row.get("completion") is not None:
        kind, fields, values = "completion", ["completion"], [row["completion"]]
    elif row.get("chosen") is not None or row.get("rejected") is not None:
        kind, fields = "pair", ["chosen", "rejected"]
        values = [row.get("chosen"), row.get("rejected")]
    else:
        raise ValueError(f"{where}: no 'completion', 'completions' or 'chosen'/'rejected' field "
                         f"(fields present: {', '.join(sorted(row)) or 'none'})")
    for field, value in zip(fields, values):
        if value is None:
            fail(field, "missing")
        if not isinstance(value, str) and not is_messages(value):
            fail(field, "must be a string or a list of chat messages")
        if is_blank(value):
            fail(field, "empty completion")
    return kind, list(values)


# -- model ---------------------------------------------------------------------------------------------------------

def load_scorer(args: argparse.Namespace):
    from dpo_ext.scoring.scorer import ImplicitRewardScorer
    from dpo_ext.scoring.loading import adapter_config

    if not Path(args.model).exists() and (offline() or not looks_like_hub_id(args.model)):
        raise FileNotFoundError(f"{args.model}: no such directory" +
                                (" (HF_HUB_OFFLINE is set, so the Hub is not searched)" if offline() else ""))
    if adapter_config(args.model) is None and not args.ref_model and not args.reference_free:
        raise ValueError(f"{args.model} is not a PEFT adapter (it has no adapter_config.json), so it carries no "
                         "reference model: pass --ref-model (the model it was trained from) or --reference-free")
    ref_adapter = None if args.ref_adapter.lower() == "none" else args.ref_adapter
    return ImplicitRewardScorer.from_pretrained(
        args.model, base_model=args.base_model, ref_model=args.ref_model, ref_adapter=ref_adapter,
        reference_free=args.reference_free, device=args.device, beta=args.beta, max_length=args.max_length,
        max_batch_tokens=args.max_batch_tokens, prefix_sharing=not args.no_prefix_sharing,
    )


def check_output(path: Path | None) -> None:
    """Refuse an output file that cannot be written before the model loads, not after all the scoring work."""
    if path is None:
        return
    if path.is_dir():
        raise ValueError(f"--output {path} is a directory: give a file path, such as {path / 'out.jsonl'}")
    problem = unwritable_folder(path.parent)
    if problem:
        raise ValueError(f"--output {path}: its folder cannot be written ({problem}); choose another file")


def _write_jsonl(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def _located(rows: Rows, error: Exception, fields=None) -> ValueError:
    """A row error (its ``row`` counts the input's rows): name the input's line or row instead, and the row's own
    field (``fields(row, field)`` maps the scorer's ``completions[k]`` to it when given); other errors name the
    input."""
    if isinstance(error, PreferenceDataError) and error.row is not None:
        field = fields(error.row, error.field) if fields and error.field else error.field
        return ValueError(rows.describe(PreferenceDataError(error.problem, error.row, field)))
    return ValueError(f"{rows.source}: {error}")


def _scored_field(kind: str, field: str) -> str:
    """The input row's field for the scorer's ``completions[k]`` of a row of ``kind`` (see `completions_of`)."""
    match = re.fullmatch(r"completions\[(\d+)\]", field)
    if match is None or kind == "completions":
        return field
    k = int(match.group(1))
    return "completion" if kind == "completion" else ("chosen", "rejected")[k] if k < 2 else field


# -- handlers ------------------------------------------------------------------------------------------------------

def _score(args: argparse.Namespace) -> int:
    check_output(args.output)
    rows = read_rows(args.input, args.split)
    parsed = [completions_of(row, rows.where(i)) for i, row in enumerate(rows.rows)]
    scorer = load_scorer(args)
    try:
        result = scorer.score([row["prompt"] for row in rows.rows], [c for _, c in parsed],
                              normalize=args.normalize, progress=True)
    except ValueError as error:
        raise _located(rows, error, lambda i, field: _scored_field(parsed[i][0], field)) from error
    out = []
    for b, (row, (kind, completions)) in enumerate(zip(rows.rows, parsed)):
        k = len(completions)
        rewards = result.rewards[b, :k].tolist()
        extra = {"policy_logps": result.policy_logps[b, :k].tolist(),
                 "ref_logps": None if result.ref_logps is None else result.ref_logps[b, :k].tolist(),
                 "num_tokens": result.num_tokens[b, :k].tolist()}
        if kind == "completion":
            extra = {"reward": rewards[0], **{key: v if v is None else v[0] for key, v in extra.items()}}
        elif kind == "pair":
            extra = {"chosen_reward": rewards[0], "rejected_reward": rewards[1], **extra}
        else:
            extra = {"rewards": rewards, **extra}
        out.append({**row, **extra})
    _write_jsonl(args.output, out)
    print(f"Scored {result.rewards.isfinite().sum()} completions of {len(out)} rows -> {args.output}",
          file=sys.stderr)
    return 0


def _rerank(args: argparse.Namespace) -> int:
    if args.n < 1:
        raise ValueError(f"--n must be at least 1, got {args.n}")
    check_output(args.output)
    rows = read_rows(args.input, args.split)
    for i, row in enumerate(rows.rows):  # before the model loads: bad input fails fast
        try:
            _check_candidates(row, i)
        except PreferenceDataError as error:
            raise _located(rows, error) from None
    scorer = load_scorer(args)
    from tqdm.auto import tqdm
    from transformers import set_seed

    set_seed(args.seed)
    generation = {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "top_p": args.top_p}
    out = []
    for i, row in enumerate(tqdm(rows.rows, desc="Best-of-N", unit="prompt")):
        given = row.get(_candidates_field(row))
        try:
            if given is not None:
                ranked = sorted(scorer.rerank(row["prompt"], given, normalize=args.normalize), key=lambda c: c.index)
            else:
                ranked = scorer.best_of_n([row["prompt"]], args.n, generation_config=generation,
                                          normalize=args.normalize)[0].candidates
        except PreferenceDataError as error:  # the scorer saw one prompt: name this row and its candidate field
            field = re.sub(r"^completions(?=\[)", _candidates_field(row), error.field or "prompt")
            raise _located(rows, PreferenceDataError(error.problem, i, field)) from error
        except ValueError as error:
            raise ValueError(f"{rows.where(i)}: {error}") from error
        best = max(ranked, key=lambda c: c.reward)
        out.append({"prompt": row["prompt"], "best": best.completion, "best_reward": best.reward,
                    "candidates": [c.completion for c in ranked], "rewards": [c.reward for c in ranked]})
    _write_jsonl(args.output, out)
    print(f"Best-of-N for {len(out)} prompts -> {args.output}", file=sys.stderr)
    return 0


def _candidates_field(row: dict) -> str:
    """The field of a rerank row's given candidates: ``candidates``, else ``completions``."""
    return "completions" if row.get("candidates") is None and row.get("completions") is not None else "candidates"


def _check_candidates(row: dict, index: int) -> None:
    """A rerank row by the row rules: a prompt, and given candidates (when any) a non-empty list of completions."""
    conversational = check_prompt(row.get("prompt"), index)
    name = _candidates_field(row)
    candidates = row.get(name)
    if candidates is None:
        return
    if not isinstance(candidates, list) or not candidates:
        raise PreferenceDataError(f"'{name}' must be a non-empty list of completions (or leave it out to sample "
                                  "--n completions)", index, name)
    for k, candidate in enumerate(candidates):
        check_completion(candidate, index, f"{name}[{k}]", conversational)


def _eval(args: argparse.Namespace) -> int:
    from dpo_ext.data.rows import normalize_row
    from dpo_ext.scoring.scorer import evaluate_preferences

    check_output(args.output)
    rows = read_rows(args.input, args.split)
    for i, row in enumerate(rows.rows):  # before the model loads: bad input fails fast
        try:
            normalize_row(row, i)
        except PreferenceDataError as error:
            raise _located(rows, error) from error
    scorer = load_scorer(args)
    try:
        metrics = evaluate_preferences(scorer, rows.rows, normalize=args.normalize, progress=True)
    except ValueError as error:
        raise _located(rows, error) from error
    text = json.dumps({"input": rows.source, "model": args.model, **metrics}, indent=2)
    print(text)
    if args.output is not None:
        args.output.write_text(text + "\n", encoding="utf-8")
    return 0
