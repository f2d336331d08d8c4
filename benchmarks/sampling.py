"""Benchmark: `dpo_ext.sampling.sample_completions`, in both layouts, against a plain batched ``generate`` loop
(tokens per second).

    python benchmarks/sampling.py     # toy GPT-2 on CPU: 64 prompts, K=8, 32 new tokens, mixed and one prompt length

The plain loop is what one writes without the package: prompts left-padded into batches of ``--batch-prompts``,
``num_return_sequences=K``, on the global random stream. The sampler runs seeded shards of 1024 sequences, 256 per
``generate`` call, with prompts sorted by length, either never mixing two lengths in a call (``by_length``, no
padding) or left-padding them (``padded``). Prompts of mixed lengths (uniform on 8-24 tokens) and of one length (16)
are timed in one run. Every method counts the completion tokens it returns (up to and including EOS); each is timed
``--repeats`` times, alternating, and the best run is kept (so all see the same load on a shared machine). Not a
timed test.
"""

import argparse
import time

import torch


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-prompts", type=int, default=32, help="prompts per generate call of the plain loop")
    parser.add_argument("--repeats", type=int, default=3)
    return parser.parse_args(argv)


def toy_model(vocab: int = 1000):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=vocab, n_positions=128, n_embd=128, n_layer=4, n_head=4, bos_token_id=1,
                        eos_token_id=1, pad_token_id=0)
    return GPT2LMHeadModel(config).eval()


class IdTokenizer:
    """Token ids in, ids out: the benchmark needs no text."""

    eos_token_id, pad_token_id, chat_template = 1, 0, None

    def decode(self, ids, skip_special_tokens=True):
        return ""


@torch.no_grad()
def plain_loop(model, prompts, k, max_new_tokens, batch_prompts) -> int:
    from dpo_ext.sampling import until_eos

    tokens = 0
    for start in range(0, len(prompts), batch_prompts):
        batch = prompts[start : start + batch_prompts]
        width = max(len(p) for p in batch)
        ids = torch.tensor([[0] * (width - len(p)) + p for p in batch])  # left padding
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch])
        out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, top_k=0, top_p=1.0,
                             temperature=1.0, max_new_tokens=max_new_tokens, num_return_sequences=k,
                             eos_token_id=1, pad_token_id=0)
        tokens += sum(len(until_eos(row, {1})) for row in out[:, width:].tolist())
    return tokens


def prompt_sets(n: int):
    """{name: prompts}: ``n`` prompts of random token ids, of mixed lengths (uniform on 8-24 tokens) and of one length
    (16 tokens, as in the sentiment recipe)."""
    generator = torch.Generator().manual_seed(1)
    mixed = [torch.randint(2, 1000, (int(torch.randint(8, 25, (1,), generator=generator)),),
                           generator=generator).tolist() for _ in range(n)]
    one = [torch.randint(2, 1000, (16,), generator=generator).tolist() for _ in range(n)]
    return {"mixed lengths (8-24 tokens, uniform)": mixed, "one length (16 tokens)": one}


METHODS = ("plain generate loop", "sampler, layout='by_length'", "sampler, layout='padded'")


def run(method, model, prompts, args) -> int:
    """Completion tokens (up to and including EOS) that ``method`` returns for ``prompts``."""
    from dpo_ext.sampling import sample_completions

    if method == "plain generate loop":
        return plain_loop(model, prompts, args.k, args.max_new_tokens, args.batch_prompts)
    layout = method.split("'")[1]
    samples = sample_completions(model, IdTokenizer(), prompts, args.k, {"max_new_tokens": args.max_new_tokens},
                                 seed=0, layout=layout)
    return sum(len(c) for s in samples for c in s.completion_ids)


def main(argv=None):
    args = parse_args(argv)
    model = toy_model()
    print(f"{args.prompts} prompts x K={args.k}, {args.max_new_tokens} new tokens, plain loop {args.batch_prompts} "
          f"prompts per call, sampler 256 sequences per call; torch threads {torch.get_num_threads()}, CPU "
          f"capability {torch.backends.cpu.get_cpu_capability()}; best of {args.repeats}")
    for set_name, prompts in prompt_sets(args.prompts).items():
        best, counts = {m: float("inf") for m in METHODS}, {}
        for _ in range(args.repeats):
            for method in METHODS:  # alternating, so every method sees the same load on a shared machine
                start = time.perf_counter()
                counts[method] = run(method, model, prompts, args)
                best[method] = min(best[method], time.perf_counter() - start)
        rates = {m: counts[m] / best[m] for m in METHODS}
        print(f"\n{set_name}\n| method | tokens | best s | tokens/s | ratio to plain loop |\n|---|---|---|---|---|")
        for m in METHODS:
            print(f"| {m} | {counts[m]} | {best[m]:.2f} | {rates[m]:.0f} | {rates[m] / rates[METHODS[0]]:.2f} |")


if __name__ == "__main__":
    main()
