"""A tiny causal LM and tokenizer built locally, for tests, docs and offline demos (no download).

The tokenizer is word-level over a small movie-review vocabulary; the model is a 2-layer GPT-2 built from a config.
"""

import torch

TOY_WORDS = ("the movie was good bad great awful fine plot actors film story boring fun loved hated it and a "
             "very not really quite scene ending music best worst i we they saw liked").split()


def tiny_tokenizer():
    """A word-level `PreTrainedTokenizerFast` over `TOY_WORDS` with `<pad>`, `<eos>` and `<unk>` tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.train_from_iterator([" ".join(TOY_WORDS)],
                            trainers.WordLevelTrainer(special_tokens=["<pad>", "<eos>", "<unk>"]))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>")


def tiny_model(tokenizer, seed: int = 0, n_layer: int = 2, n_embd: int = 32, n_positions: int = 64, n_head: int = 2,
               dropout: float | None = None):
    """A randomly initialised GPT-2 sized for `tokenizer` (seeded, so two calls give the same weights).

    ``dropout`` sets every dropout probability (residual, embedding, attention); None keeps GPT-2's 0.1. Its BOS, EOS
    and pad ids are the tokenizer's (GPT2Config's defaults, 50256, lie outside a small vocabulary)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    rates = {} if dropout is None else {"resid_pdrop": dropout, "embd_pdrop": dropout, "attn_pdrop": dropout}
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=n_positions, n_embd=n_embd, n_layer=n_layer,
                        n_head=n_head, bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id, **rates)
    return GPT2LMHeadModel(config)


def tiny_causal_lm(seed: int = 0):
    """(model, tokenizer): the toy pair used by the README examples."""
    tokenizer = tiny_tokenizer()
    return tiny_model(tokenizer, seed=seed), tokenizer


def save_toy_base(folder, seed: int = 0) -> None:
    """Write the toy base model (safetensors) and its tokenizer to ``folder``: a base that ``dpo-ext train``,
    ``score`` and ``iterate`` load by path, offline (``python -m dpo_ext.testing --save toy-base``)."""
    model, tokenizer = tiny_causal_lm(seed=seed)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m dpo_ext.testing",
                                     description="Write the toy GPT-2 and its word-level tokenizer (TOY_WORDS) to a "
                                                 "folder, as a base model for the examples/ configs. Offline.")
    parser.add_argument("--save", required=True, metavar="DIR", help="folder to write (created if missing)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights (default: 0)")
    args = parser.parse_args(argv)
    save_toy_base(args.save, seed=args.seed)
    print(f"toy base model and tokenizer written to {args.save}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
