"""Ranked lists whose prompt and completion lengths follow Anthropic HH's (random words, one word = one token).

Where the numbers come from (no token-length table of HH is published that we could find, so they are derived):
the Hub dataset cards give the bytes and rows of HH's preference data. ``tasksource/hh-rlhf`` (the four subsets as
published, columns chosen and rejected, each = dialogue history + final reply) has 308,571,371 bytes in 160,800
training rows: 2P + R1 + R2 = 1,919 bytes per row. ``KHuss/hh-rlhf-formatted`` (the same 160,800 rows plus the
shared prefix x and both replies y1, y2) has 512,473,755 bytes: 3P + 2(R1 + R2) = 3,187 bytes per row. Solved:
prompt (history up to the last ``\\n\\nAssistant:``) P = 651 bytes, a reply R = 308 bytes on average. At about 4 bytes
per token for English with the GPT-NeoX / Llama 3 BPE tokenizers (a rule of thumb, not measured on HH) that is a mean
of 163 prompt tokens and 77 reply tokens. The spread is an assumption, not a published number: log-normal with
sigma 0.8 (prompts: one to several dialogue turns) and 0.7 (replies), its median set so the mean is the one above,
clipped to [8, 1024] tokens (the DPO recipes truncate there).
"""

import math
import random

PROMPT_MEAN_TOKENS = 651 / 4  # 163
COMPLETION_MEAN_TOKENS = 308 / 4  # 77
PROMPT_SIGMA, COMPLETION_SIGMA = 0.8, 0.7
MIN_TOKENS, MAX_TOKENS = 8, 1024


def draw_length(rng: random.Random, mean: float, sigma: float, scale: float = 1.0) -> int:
    """One log-normal length with the given mean (mu = log(mean) - sigma^2 / 2), scaled and clipped."""
    value = rng.lognormvariate(math.log(mean) - sigma**2 / 2, sigma) * scale
    return int(min(max(round(value), max(1, round(MIN_TOKENS * scale))), round(MAX_TOKENS * scale)))


def hh_ranked_rows(n_lists: int, k: int, vocab_size: int, seed: int = 0, scale: float = 1.0) -> list[dict]:
    """``n_lists`` ranked lists of K completions of random words ``w0 .. w{vocab-4}``, lengths drawn to HH's.

    ``scale`` shrinks every length (0.1 for the smoke run). Each completion has ``length - 1`` words: the trainers
    append EOS, so a completion is ``length`` tokens with the `common.word_tokenizer`.
    """
    rng = random.Random(seed)

    def words(n):
        return " ".join(f"w{rng.randrange(vocab_size - 3)}" for _ in range(n))

    rows = []
    for _ in range(n_lists):
        prompt = words(draw_length(rng, PROMPT_MEAN_TOKENS, PROMPT_SIGMA, scale))
        completions = [words(max(1, draw_length(rng, COMPLETION_MEAN_TOKENS, COMPLETION_SIGMA, scale) - 1))
                       for _ in range(k)]
        rows.append({"prompt": prompt + " ", "completions": completions, "ranks": list(range(k))})
    return rows


def row_lengths(row: dict) -> tuple[int, list[int]]:
    """(prompt tokens, [completion tokens incl. EOS]) of a row made by `hh_ranked_rows` (words = tokens)."""
    return len(row["prompt"].split()), [len(c.split()) + 1 for c in row["completions"]]
