"""Benchmark: `dpo_ext.sampling.sample_completions` against a plain batched ``generate`` loop (tokens per second).

    python benchmarks/sampling.py            # toy GPT-2 on CPU: 64 prompts of 8-24 tokens, K=8, 32 new tokens

The plain loop is what one writes without the package: prompts left-padded into batches of ``--batch-prompts``,
``num_return_sequences=K``, on the global random stream. The sampler groups prompts by length (no padding) in
seeded shards. Both count the completion tokens they return (up to and including EOS); each is timed ``--repeats``
times, alternating, and the best run is kept (so both see the same load on a shared machine). Not a timed test.
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


def main(argv=None):
    from dpo_ext.sampling import sample_completions

    args = parse_args(argv)
    model = toy_model()
    generator = torch.Generator().manual_seed(1)
    prompts = [torch.randint(2, 1000, (int(torch.randint(8, 25, (1,), generator=generator)),),
                             generator=generator).tolist() for _ in range(args.prompts)]
    best = {"plain generate loop": float("inf"), "dpo_ext sampler": float("inf")}
    counts = {}
    for _ in range(args.repeats):
        for name in best:
            start = time.perf_counter()
            if name == "plain generate loop":
                counts[name] = plain_loop(model, prompts, args.k, args.max_new_tokens, args.batch_prompts)
            else:
                samples = sample_completions(model, IdTokenizer(), prompts, args.k,
                                             {"max_new_tokens": args.max_new_tokens}, seed=0)
                counts[name] = sum(len(c) for s in samples for c in s.completion_ids)
            best[name] = min(best[name], time.perf_counter() - start)
    print(f"{args.prompts} prompts x K={args.k}, {args.max_new_tokens} new tokens, torch threads "
          f"{torch.get_num_threads()}, CPU capability {torch.backends.cpu.get_cpu_capability()}")
    print("| method | tokens | best s | tokens/s |\n|---|---|---|---|")
    rates = {}
    for name, seconds in best.items():
        rates[name] = counts[name] / seconds
        print(f"| {name} | {counts[name]} | {seconds:.2f} | {rates[name]:.0f} |")
    print(f"ratio sampler / plain loop: {rates['dpo_ext sampler'] / rates['plain generate loop']:.2f}")


if __name__ == "__main__":
    main()
