"""Bad inputs and faults, table-driven: each case must fail with the expected exception type (or CLI exit code) and a
message that names what was wrong and where (setting, row, field or file).

A case is ``(name, run, expected, fragments)``: ``run(env)`` is called with the shared `Env` below; ``expected`` is an
exception class, or an int exit code of ``dpo_ext.cli.main``; every fragment must appear in the message (or stderr).
"""

import json
import math
from dataclasses import dataclass
from pathlib import Path

import datasets
import pytest
import torch
from peft import LoraConfig, get_peft_model

from conftest import make_model, pairwise_rows, ranked_rows
from dpo_ext import ImplicitRewardScorer, PLDPOConfig, PLDPOTrainer
from dpo_ext.cli import main as cli_main
from dpo_ext.settings import SettingError
from dpo_ext.testing import TOY_WORDS

LORA = dict(r=4, lora_alpha=8, target_modules=["c_attn"], lora_dropout=0.0, task_type="CAUSAL_LM")


@dataclass
class Env:
    tmp: Path
    tokenizer: object

    def config(self, **overrides) -> PLDPOConfig:
        values = dict(output_dir=str(self.tmp / "out"), per_device_train_batch_size=2, learning_rate=1e-3,
                      max_steps=1, report_to="none", use_cpu=True, max_length=32, save_strategy="no", seed=0)
        return PLDPOConfig(**{**values, **overrides})

    def trainer(self, rows=None, model=None, **kwargs):
        rows = ranked_rows(4, k=3) if rows is None else rows
        kwargs.setdefault("processing_class", self.tokenizer)
        kwargs.setdefault("args", self.config())
        kwargs.setdefault("peft_config", LoraConfig(**LORA))
        return PLDPOTrainer(model if model is not None else make_model(self.tokenizer),
                            train_dataset=datasets.Dataset.from_list(rows), **kwargs)

    def scorer(self, **kwargs):
        model = get_peft_model(make_model(self.tokenizer), LoraConfig(**LORA))
        return ImplicitRewardScorer(model, self.tokenizer, **kwargs)

    def write(self, name: str, text: str) -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path


def other_tokenizer():
    """Same size and special tokens as the test tokenizer, other ids for the words: a different tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "<eos>", "<unk>"] + list(reversed(sorted(set(TOY_WORDS))))
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>")


def saved_reference(env: Env, tokenizer):
    """A reference model saved with `tokenizer` and loaded back from its folder (so its tokenizer is recorded)."""
    from transformers import AutoModelForCausalLM

    folder = env.tmp / "ref_model"
    make_model(env.tokenizer, seed=5).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return AutoModelForCausalLM.from_pretrained(folder)


def no_pad_no_eos_tokenizer(env: Env):
    tokenizer = other_tokenizer()
    tokenizer.pad_token = None
    tokenizer.eos_token = None
    return tokenizer


def smaller_vocabulary_model(env: Env):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=len(env.tokenizer) - 4, n_positions=64, n_embd=32, n_layer=1,
                                      n_head=2))


def short_model(env: Env):
    from dpo_ext.testing import tiny_model

    return tiny_model(env.tokenizer, n_positions=8)


def long_rows():
    return [{"prompt": "the movie was ", "chosen": " ".join(["good"] * 12), "rejected": "bad"}] * 3


CASES = [
    # -- settings ---------------------------------------------------------------------------------------------------
    ("config beta nan", lambda env: env.config(beta=float("nan")), SettingError, ["beta", "finite"]),
    ("config beta inf", lambda env: env.config(beta=float("inf")), SettingError, ["beta", "finite"]),
    ("config beta zero", lambda env: env.config(beta=0.0), SettingError, ["beta", "greater than 0"]),
    ("config beta text", lambda env: env.config(beta="one tenth"), SettingError, ["beta", "'one tenth'"]),
    ("config learning_rate nan", lambda env: env.config(learning_rate=float("nan")), SettingError,
     ["learning_rate", "finite"]),
    ("config alpha negative", lambda env: env.config(unlikelihood_alpha=-1.0), SettingError,
     ["unlikelihood_alpha", "at least 0"]),
    ("config max_length 1", lambda env: env.config(max_length=1), SettingError, ["max_length", "at least 2"]),
    ("config loss_type", lambda env: env.config(loss_type="hinge"), ValueError, ["loss_type", "hinge"]),
    ("config weight_decay text", lambda env: env.config(weight_decay="a lot"), SettingError,
     ["weight_decay", "'a lot'"]),
    # -- trainer set-up ---------------------------------------------------------------------------------------------
    ("trainer output_dir is a file",
     lambda env: env.trainer(args=env.config(output_dir=str(env.write("a_file", "x")))), ValueError,
     ["a_file", "cannot be written"]),
    ("trainer no processing_class for a config-built model",
     lambda env: env.trainer(processing_class=None), ValueError, ["processing_class"]),
    ("trainer tokenizer without pad or eos",
     lambda env: env.trainer(processing_class=no_pad_no_eos_tokenizer(env)), ValueError, ["pad token", "EOS"]),
    ("trainer tokenizer larger than the model",
     lambda env: env.trainer(model=smaller_vocabulary_model(env)), ValueError, ["tokenizer", "policy"]),
    ("trainer ref_model with a smaller vocabulary",
     lambda env: env.trainer(ref_model=smaller_vocabulary_model(env), peft_config=None), ValueError,
     ["ref_model", "vocabulary"]),
    ("trainer ref_model saved with another tokenizer",
     lambda env: env.trainer(ref_model=saved_reference(env, other_tokenizer()), peft_config=None), ValueError,
     ["ref_model", "tokenizer", "ref_model"]),
    ("trainer rows longer than the model's positions",
     lambda env: env.trainer(rows=long_rows(), model=short_model(env), args=env.config(max_length=64)), ValueError,
     ["train dataset, row 0", "8 positions", "max_length"]),
    ("trainer rows longer than the model's positions, max_length None",
     lambda env: env.trainer(rows=pairwise_rows(2), model=short_model(env), args=env.config(max_length=None)),
     ValueError, ["train dataset, row", "positions"]),
    # -- scorer -----------------------------------------------------------------------------------------------------
    ("scorer beta nan", lambda env: env.scorer(beta=float("nan")), SettingError, ["beta", "finite"]),
    ("scorer beta negative", lambda env: env.scorer(beta=-0.1), SettingError, ["beta", "greater than 0"]),
    ("scorer score beta zero", lambda env: env.scorer().score(["the movie"], [["good", "bad"]], beta=0),
     SettingError, ["beta", "greater than 0"]),
    ("scorer score beta nan", lambda env: env.scorer().score(["the movie"], [["good", "bad"]], beta=math.nan),
     SettingError, ["beta", "finite"]),
    ("scorer ref_model with a smaller vocabulary",
     lambda env: env.scorer(ref_model=smaller_vocabulary_model(env)), ValueError, ["ref_model", "vocabulary"]),
    ("scorer ref_model saved with another tokenizer",
     lambda env: env.scorer(ref_model=saved_reference(env, other_tokenizer())), ValueError,
     ["ref_model", "tokenizer"]),
    ("scorer no tokenizer for a config-built model",
     lambda env: ImplicitRewardScorer(get_peft_model(make_model(env.tokenizer), LoraConfig(**LORA))), ValueError,
     ["tokenizer="]),
    ("scorer max_length text", lambda env: env.scorer(max_length="long"), SettingError, ["max_length", "'long'"]),
]


@pytest.fixture
def env(tmp_path, tokenizer):
    return Env(tmp_path, tokenizer)


@pytest.mark.parametrize("name, run, expected, fragments", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_named(env, capsys, name, run, expected, fragments):
    if isinstance(expected, int):
        assert run(env) == expected
        message = capsys.readouterr().err
    else:
        with pytest.raises(expected) as info:
            run(env)
        message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{name}: {fragment!r} not in {message!r}"


def test_enough_cases():
    assert len(CASES) >= 50
