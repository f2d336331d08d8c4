"""`dpo-ext sample`: K completions per prompt from a model or adapter (`dpo_ext.sampling`), one JSON line per prompt.

Prompts are checked with the row rules before the model loads, and generation settings (``--config gen.yaml``, then
the flags) before anything loads, so bad input fails fast and names the file line and field.
"""

import argparse
import sys
from pathlib import Path

from dpo_ext.cli.common import check_output, check_prompts, read_rows, write_jsonl
from dpo_ext.data.rows import PROMPT

# flag -> GenerationConfig field; a flag that is given overrides the YAML file
_FLAGS = {"max_new_tokens": "max_new_tokens", "temperature": "temperature", "top_p": "top_p", "top_k": "top_k"}


def register(subparsers) -> None:
    sample = subparsers.add_parser(
        "sample", help="sample K completions per prompt (JSONL of prompts in, JSONL of completions out)",
        description="Sample --k completions for each row's 'prompt' (text or chat messages) from a causal LM or a "
                    "PEFT adapter (on its base model). Output: one JSON line per prompt, {prompt, completions, ...the "
                    "row's other fields}; `dpo-ext label` adds scores. The samples depend on the seed and "
                    "--batch-size, never on the machine's worker count (see dpo_ext.sampling).")
    sample.add_argument("model", help="folder or Hub id of a causal LM, or of a PEFT adapter (loaded onto its base)")
    sample.add_argument("--input", "-i", required=True, help="JSONL/JSON/Parquet/CSV file with a 'prompt' field")
    sample.add_argument("--output", "-o", required=True, type=Path, help="JSONL file to write")
    sample.add_argument("--k", type=int, default=8, help="completions per prompt (default: 8; training needs >= 2)")
    sample.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    sample.add_argument("--config", type=Path, help="YAML file of generation settings (any GenerationConfig field); "
                                                    "the flags below override it")
    sample.add_argument("--max-new-tokens", type=int, help="tokens per completion (default: 64)")
    sample.add_argument("--temperature", type=float, help="sampling temperature (default: 1.0)")
    sample.add_argument("--top-p", type=float, help="nucleus sampling threshold (default: 1.0, off)")
    sample.add_argument("--top-k", type=int, help="sample from the k most likely tokens (default: 0, off)")
    sample.add_argument("--batch-size", type=int, default=256,
                        help="sequences (prompts x K) per generate call (default: 256). Part of what the samples "
                             "are, like the seed: keep it to reproduce a file")
    sample.add_argument("--layout", choices=("padded", "by_length"), default="padded",
                        help="how prompts of different lengths share a generate call: padded (left-padded, fastest) "
                             "or by_length (never padded; reproduces files sampled before padded was the default); "
                             "part of the result, like the seed (default: padded)")
    sample.add_argument("--base-model", help="base model of an adapter (default: from adapter_config.json)")
    sample.add_argument("--backend", choices=("auto", "transformers", "vllm"), default="auto",
                        help="auto: vLLM when it is installed and a GPU is present, else transformers generate")
    sample.add_argument("--device", help="cpu, cuda, cuda:1... (default: cuda when available)")
    sample.set_defaults(handler=_sample)


def read_generation_yaml(path: Path) -> dict:
    """Generation settings from a YAML mapping, every key a `GenerationConfig` field; errors name file and line."""
    import yaml
    from transformers import GenerationConfig

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ValueError(f"--config {path}: cannot be read ({error.strerror})") from None
    try:
        node = yaml.compose(text)
        values = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ValueError(f"{path}{where}: not valid YAML ({problem}); write one 'field: value' per line") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}, line 1: expected a mapping of generation settings (field: value), got "
                         f"{type(values).__name__}")
    known = GenerationConfig().to_dict()
    for key_node, _ in node.value:
        if key_node.value not in known:
            raise ValueError(f"{path}, line {key_node.start_mark.line + 1}, field {key_node.value!r}: not a "
                             "GenerationConfig field (see transformers' GenerationConfig for the names)")
    return values


def _load(args):
    """(model, tokenizer) through the scorer's loader (`dpo_ext.scoring.loading.load_scorer`: safetensors only,
    adapters onto their base): the policy to sample from is the scorer's policy."""
    from dpo_ext.scoring.scorer import ImplicitRewardScorer

    scorer = ImplicitRewardScorer.from_pretrained(args.model, base_model=args.base_model, ref_adapter=None,
                                                  reference_free=True, device=args.device)
    return scorer.model, scorer.tokenizer


def _sample(args: argparse.Namespace) -> int:
    if args.k < 1:
        raise ValueError(f"--k must be at least 1 (completions per prompt), got {args.k}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    generation = read_generation_yaml(args.config) if args.config is not None else {}
    generation.update({field: getattr(args, flag) for flag, field in _FLAGS.items() if getattr(args, flag) is not None})
    from dpo_ext.sampling import generation_config

    generation_config(None, generation)  # settings that cannot sample, refused before the model loads
    check_output(args.output)
    rows = read_rows(args.input)
    prompts = check_prompts(rows)
    if args.k == 1:
        print("dpo-ext sample: note: --k 1 gives one completion per prompt (Best-of-1); training on ranked rows "
              "needs K >= 2", file=sys.stderr)
    from tqdm.auto import tqdm

    from dpo_ext.sampling import sample_completions, vllm_available

    use_vllm = args.backend == "vllm" or (args.backend == "auto" and vllm_available())
    model, tokenizer, lora = _load_vllm(args) if use_vllm else (*_load(args), None)
    with tqdm(total=len(prompts), desc="Sampling", unit="prompt") as bar:
        samples = sample_completions(model, tokenizer, prompts, args.k, generation, seed=args.seed,
                                     backend="vllm" if use_vllm else "transformers", batch_sequences=args.batch_size,
                                     layout=args.layout, lora_request=lora, progress=bar.update)
    out = [{PROMPT: row[PROMPT], "completions": s.texts, **{k: v for k, v in row.items() if k != PROMPT}}
           for row, s in zip(rows.rows, samples)]
    write_jsonl(args.output, out)
    print(f"Sampled {args.k} completions for each of {len(out)} prompts -> {args.output}", file=sys.stderr)
    return 0


def _load_vllm(args):
    """(vllm.LLM, tokenizer, LoRARequest or None). Not run here: see `dpo_ext.sampling.vllm_backend`."""
    from transformers import AutoTokenizer

    from dpo_ext.sampling.vllm_backend import load_vllm
    from dpo_ext.scoring.loading import adapter_config

    config = adapter_config(args.model)
    base = None if config is None else (args.base_model or config.base_model_name_or_path)
    llm, lora = load_vllm(args.model, base_model=base, seed=args.seed)
    tokenizer = AutoTokenizer.from_pretrained(args.model if config is None or Path(args.model, "tokenizer_config.json")
                                              .is_file() else base)
    return llm, tokenizer, lora
