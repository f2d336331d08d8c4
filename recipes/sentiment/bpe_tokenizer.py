"""Stage 2: a byte-level BPE tokenizer trained on the SFT reviews (offline path), saved as a
`PreTrainedTokenizerFast`. At paper scale the model's own tokenizer is used instead.

No post-processor adds special tokens: a prompt is a review prefix of at least two tokens, so the model never has to
predict a review's first token, and ``tokenizer(prompt + completion)`` is the plain concatenation TRL expects.
"""

from pathlib import Path

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"  # distinct from EOS so that padding after an early EOS can be told apart from the EOS itself


def build(out_dir: Path, texts: list[str], vocab_size: int):
    """`recipe_kit.bpe.train_byte_level_bpe` on ``texts``, saved to ``out_dir``."""
    from recipe_kit.bpe import train_byte_level_bpe

    wrapped = train_byte_level_bpe(texts, vocab_size, [EOS_TOKEN, PAD_TOKEN], EOS_TOKEN, PAD_TOKEN)
    wrapped.model_max_length = 1024
    wrapped.save_pretrained(out_dir)
    return wrapped


def load(path: str | Path):
    """The tokenizer at ``path`` (a folder or Hub id), padding with EOS when it has no pad token (GPT-2's has none;
    padding is always masked out)."""
    from dpo_ext.modeling.tokenizers import ensure_pad_token, load_tokenizer

    tokenizer = load_tokenizer(str(path), "--model_name_or_path")
    ensure_pad_token(tokenizer, str(path))
    return tokenizer
