"""Everything the tests need is built here, offline: a word-level tokenizer trained in memory and tiny GPT-2s."""

import os
import random

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(2)

from dpo_ext.testing import TOY_WORDS as WORDS
from dpo_ext.testing import tiny_model, tiny_tokenizer


@pytest.fixture(autouse=True)
def _isolated_hf_home(tmp_path_factory, monkeypatch):
    # evaluate and datasets write caches under HF_HOME: keep them out of the user's home
    monkeypatch.setenv("HF_HOME", str(tmp_path_factory.getbasetemp() / "hf_home"))


@pytest.fixture(scope="session")
def tokenizer():
    return tiny_tokenizer()


def make_model(tokenizer, seed=0, n_layer=2, n_embd=32):
    return tiny_model(tokenizer, seed=seed, n_layer=n_layer, n_embd=n_embd)


def sentence(rng, n):
    return " ".join(rng.choice(WORDS) for _ in range(n))


def ranked_rows(n_rows=8, k=4, seed=0, variable_k=False):
    """Ranked rows with a learnable pattern: completions with more 'good' words rank higher."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n_rows):
        kk = rng.randint(2, k) if variable_k else k
        completions = [" ".join(["good"] * (kk - j) + [rng.choice(WORDS)]) for j in range(kk)]
        order = list(range(kk))
        rng.shuffle(order)
        rows.append({"prompt": sentence(rng, 3) + " ", "completions": [completions[j] for j in order],
                     "ranks": order})
    return rows


def pairwise_rows(n_rows=8, seed=0):
    rng = random.Random(seed)
    return [{"prompt": sentence(rng, 3) + " ", "chosen": "good great " + sentence(rng, 2),
             "rejected": "bad awful " + sentence(rng, 3)} for _ in range(n_rows)]
