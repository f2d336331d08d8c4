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


def tiny_model(tokenizer, seed: int = 0, n_layer: int = 2, n_embd: int = 32, n_positions: int = 64):
    """A randomly initialised GPT-2 sized for `tokenizer` (seeded, so two calls give the same weights)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=n_positions, n_embd=n_embd, n_layer=n_layer,
                        n_head=2, bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id)
    return GPT2LMHeadModel(config)


def tiny_causal_lm(seed: int = 0):
    """(model, tokenizer): the toy pair used by the README examples."""
    tokenizer = tiny_tokenizer()
    return tiny_model(tokenizer, seed=seed), tokenizer
