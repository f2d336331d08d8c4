"""A byte-level BPE tokenizer trained on a recipe's own texts, for the offline paths (no Hub tokenizer to download).
Byte-level: any text is spelled out, so no word of the data becomes an unknown token. No post-processor adds special
tokens, so ``tokenizer(prompt + completion)`` is the plain concatenation TRL expects."""


def train_byte_level_bpe(texts, vocab_size: int, special_tokens: list[str], eos_token: str, pad_token: str):
    """A `PreTrainedTokenizerFast` trained on ``texts``; ``special_tokens`` take the first ids, and those other than
    ``eos_token`` and ``pad_token`` become its additional special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=special_tokens, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    additional = [t for t in special_tokens if t not in (eos_token, pad_token)]
    extra = {"additional_special_tokens": additional} if additional else {}
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=eos_token, pad_token=pad_token, **extra)
