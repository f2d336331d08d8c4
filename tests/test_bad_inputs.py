"""Bad inputs and faults, table-driven: each case must fail with the expected exception type (or CLI exit code) and a
message that names what was wrong and where (setting, row, field or file).

A case is ``(name, run, expected, fragments)``: ``run(env)`` is called with the shared `Env` below; ``expected`` is an
exception class, or an int exit code of ``dpo_ext.cli.main``; every fragment must appear in the message (or, for the
CLI, in what it printed: stderr, and stdout where `dpo-ext validate` prints its report).

Files are named per case (``score_bad_json.jsonl``...), so a fragment like ``"score_bad_json.jsonl, line 2"`` checks
that the message names the file and the line. Nothing trains: the saved base model and adapter are built once per
module (`saved`), and a case that needs a damaged copy makes it in its own folder.
"""

import copy
import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import datasets
import pytest
import torch
from fixtures import make_model, pairwise_rows, ranked_rows
from peft import LoraConfig, get_peft_model

from dpo_ext import ImplicitRewardScorer, PLDPOConfig, PLDPOTrainer, push_adapter
from dpo_ext.cli import main as cli_main
from dpo_ext.data.rows import PreferenceDataError
from dpo_ext.data.tokenize import prepare_ranked_dataset
from dpo_ext.hub.datasets import push_preference_dataset
from dpo_ext.reference import REFERENCE_RECORD
from dpo_ext.safe_files import WeightsFileError
from dpo_ext.scoring.evaluation import evaluate_preferences
from dpo_ext.settings import SettingError
from dpo_ext.testing import TOY_WORDS

LORA = dict(r=4, lora_alpha=8, target_modules=["c_attn"], lora_dropout=0.0, task_type="CAUSAL_LM")
BASE_MODEL_ID = "dpo-ext-tests/tiny-gpt2"  # what the saved adapter records: a Hub id, as a published one must
CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'] }} {{ m['content'] }} <eos> {% endfor %}"
                 "{% if add_generation_prompt %}assistant {% endif %}")


@dataclass
class Saved:
    """Built once per module: a base model folder (safetensors + tokenizer) and a LoRA adapter folder as the trainer
    leaves it (weights, config naming `BASE_MODEL_ID`, tokenizer, training_config.json with beta 0.1)."""

    base: Path
    adapter: Path


@dataclass
class Env:
    tmp: Path
    tokenizer: object
    saved: Saved

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

    def write_bytes(self, name: str, data: bytes) -> Path:
        path = self.tmp / name
        path.write_bytes(data)
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


# -- rows -----------------------------------------------------------------------------------------------------------

def row(**fields):
    """A valid ranked row, with `fields` replaced (a field set to None is left out)."""
    values = {"prompt": "the movie was ", "completions": ["good", "bad"], "ranks": [0, 1], **fields}
    return {key: value for key, value in values.items() if value is not None}


def token_row(**fields):
    return {"prompt_ids": [3, 4], "completion_ids": [[5], [6]], "ranks": [0, 1], **fields}


def user(text):
    return [{"role": "user", "content": text}]


def assistant(text):
    return [{"role": "assistant", "content": text}]


def chat_row(**fields):
    return {"prompt": user("the movie"), "completions": [assistant("good"), assistant("bad")], "ranks": [0, 1],
            **fields}


def prepare(env: Env, rows, tokenizer=None, **kwargs):
    return prepare_ranked_dataset(datasets.Dataset.from_list(rows), tokenizer or env.tokenizer, **kwargs)


def chat_tokenizer(env: Env):
    tokenizer = copy.deepcopy(env.tokenizer)
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def eval_trainer(env: Env, eval_rows):
    return env.trainer(eval_dataset=datasets.Dataset.from_list(eval_rows))


# -- saved folders --------------------------------------------------------------------------------------------------

def damaged_copy(env: Env, name: str, damage, source=None) -> Path:
    """A copy of the saved adapter (or `source`) in this case's folder `name`, with `damage(folder)` applied."""
    folder = env.tmp / name
    shutil.copytree(source or env.saved.adapter, folder)
    damage(folder)
    return folder


def pickle_only(folder: Path) -> None:
    (folder / "adapter_model.safetensors").unlink()
    (folder / "adapter_model.bin").write_bytes(b"not a pickle: never opened")  # opening it would fail the case


def truncate(path: Path, missing: int = 10) -> None:
    path.write_bytes(path.read_bytes()[:-missing])


def truncated_weights(folder: Path) -> None:
    truncate(folder / "adapter_model.safetensors")


def non_finite_weights(file_name: str, fragment: str, value=math.nan):
    """A damage for `damaged_copy`: `value` in the first tensor of `file_name` whose name contains `fragment`."""
    def damage(folder: Path) -> None:
        from safetensors.torch import load_file, save_file

        tensors = load_file(str(folder / file_name))
        name = next(n for n in tensors if fragment in n)
        tensors[name].view(-1)[0] = value
        save_file(tensors, str(folder / file_name), metadata={"format": "pt"})
    return damage


def non_finite_model(env: Env):
    model = make_model(env.tokenizer, seed=5)
    with torch.no_grad():
        model.transformer.wte.weight[3, 1] = math.inf
    return model


def nan_lora_model(env: Env):
    """A PeftModel whose LoRA B matrices are NaN: every completion's log-prob is NaN."""
    model = get_peft_model(make_model(env.tokenizer), LoraConfig(**LORA))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.fill_(math.nan)
    return model


def cached_trainer(env: Env, edit=None):
    """A trainer whose reference log-probs were cached by an earlier one, its train.json changed by `edit` first."""
    cache = env.tmp / "ref_cache"
    settings = dict(precompute_ref_log_probs=True, ref_cache_dir=str(cache))
    rows = ranked_rows(4, k=3)
    env.trainer(rows=rows, args=env.config(**settings))
    if edit is not None:
        stored = json.loads((cache / "train.json").read_text())
        edit(stored["ref_logps"])
        (cache / "train.json").write_text(json.dumps(stored))  # NaN is written as NaN (Python's JSON accepts it)
    return env.trainer(rows=rows, args=env.config(**settings))


def rewrite_json(path: Path, **fields) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))


def load(env: Env, folder, **kwargs):
    return ImplicitRewardScorer.from_pretrained(str(folder), **{"base_model": str(env.saved.base), "device": "cpu",
                                                                **kwargs})


def truncated_ref_copy(folder: Path) -> None:
    """TRL's frozen reference copy under ref/, cut short."""
    (folder / "ref").mkdir()
    shutil.copyfile(folder / "adapter_config.json", folder / "ref" / "adapter_config.json")
    (folder / "ref" / "adapter_model.safetensors").write_bytes((folder / "adapter_model.safetensors").read_bytes()[:-3])


def pickled_args_only(folder: Path) -> None:
    (folder / "training_config.json").unlink()
    (folder / "training_args.bin").write_bytes(b"not a pickle: never opened")


def base_copy(env: Env, name: str, damage) -> Path:
    folder = env.tmp / name
    shutil.copytree(env.saved.base, folder)
    damage(folder)
    return folder


def pickle_only_base(folder: Path) -> None:
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"not a pickle: never opened")


# -- publishing -----------------------------------------------------------------------------------------------------

def push(env: Env, folder=None, staging=None, **kwargs):
    return push_adapter(folder or env.saved.adapter, "alice/tiny-pl", dry_run=staging or env.tmp / "staging",
                        **kwargs)


def non_empty_folder(env: Env) -> Path:
    folder = env.tmp / "old_staging"
    folder.mkdir()
    (folder / "left_over.txt").write_text("from an earlier run")
    return folder


def data_folder(env: Env, name: str, files: dict) -> Path:
    folder = env.tmp / name
    folder.mkdir()
    for file_name, text in files.items():
        (folder / file_name).write_text(text, encoding="utf-8")
    return folder


def push_data(env: Env, name: str, files: dict):
    return push_preference_dataset(data_folder(env, name, files), "alice/prefs", dry_run=env.tmp / "staging")


def lines(*rows) -> str:
    """JSONL text: dicts are dumped, strings are written as they are (to make a broken line)."""
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


PAIR = {"prompt": "the movie was ", "chosen": "good", "rejected": "bad"}


# -- the command line -----------------------------------------------------------------------------------------------

def cli(env: Env, *argv) -> int:
    return cli_main([str(a) for a in argv])


def run_missing(env: Env, command: str, *argv) -> int:
    """`dpo-ext COMMAND ... -i missing.jsonl`, a relative name that is no file here (outputs go under env.tmp)."""
    argv = [env.tmp / a if a == "o.jsonl" else a for a in argv]
    return cli(env, command, *argv, "-i", "missing.jsonl")


def model_args(env: Env, adapter=None) -> list:
    return [adapter or env.saved.adapter, "--base-model", env.saved.base, "--device", "cpu"]


def run_cli(env: Env, command: str, name: str, *rows, extra=(), output=True):
    """`dpo-ext COMMAND` on the saved adapter, with `rows` written to the input file `name`."""
    path = env.write(name, lines(*rows))
    out = ["-o", env.tmp / "out.jsonl"] if output else []
    return cli(env, command, *model_args(env), "-i", path, *out, *extra)


RB1_ROW = {"prompt": "the movie was ", "chosen": "good", "chosen_model": "a", "rejected": "bad",
           "rejected_model": "b", "subset": "alpacaeval-easy", "id": 7}
RB2_ROW = {"id": "17", "prompt": "the movie was ", "chosen": ["good"], "rejected": ["bad", "awful", "fine"],
           "num_correct": 1, "num_incorrect": 3, "total_completions": 4, "models": ["a"], "subset": "Focus"}


def bench_cli(env: Env, benchmark: str, path, *extra):
    """`dpo-ext eval --benchmark BENCHMARK` on the saved adapter, with local rows from `path`."""
    return cli(env, "eval", "--benchmark", benchmark, *model_args(env), "--input", path, *extra)


def push_cli(env: Env, *extra, folder=None, staging=None):
    return cli(env, "push", folder or env.saved.adapter, "--repo-id", "alice/tiny-pl", "--dry-run",
               staging or env.tmp / "staging", *extra)


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
    # -- rows through prepare_ranked_dataset ------------------------------------------------------------------------
    ("rows missing prompt", lambda env: prepare(env, [row(), {"completions": ["good", "bad"], "ranks": [0, 1]}]),
     PreferenceDataError, ["train dataset, row 1, field 'prompt'", "missing"]),
    ("rows whitespace prompt", lambda env: prepare(env, [row(prompt="   ")]), PreferenceDataError,
     ["row 0, field 'prompt'", "empty prompt", "BOS"]),
    ("rows prompt not text", lambda env: prepare(env, [row(prompt=5)]), PreferenceDataError,
     ["row 0, field 'prompt'", "got int"]),
    ("rows non-string completion", lambda env: prepare(env, [row(completions=[1, 2])]), PreferenceDataError,
     ["row 0, field 'completions[0]'", "expected a string, got int"]),
    ("rows empty completion", lambda env: prepare(env, [row(completions=["good", " "])]), PreferenceDataError,
     ["row 0, field 'completions[1]'", "empty completion"]),
    ("rows completions not a list", lambda env: prepare(env, [row(completions="good bad")]), PreferenceDataError,
     ["row 0, field 'completions'", "expected a list, got str"]),
    ("rows K < 2", lambda env: prepare(env, [row(), row(completions=["good"], ranks=[0])]), PreferenceDataError,
     ["row 1, field 'completions'", "at least 2 completions", "got 1"]),
    ("rows ranks length mismatch", lambda env: prepare(env, [row(ranks=[0, 1, 2])]), PreferenceDataError,
     ["row 0, field 'ranks'", "3 entries for 2 completions"]),
    ("rows negative rank", lambda env: prepare(env, [row(ranks=[-1, 0])]), PreferenceDataError,
     ["row 0, field 'ranks[0]'", "non-negative integers", "-1"]),
    ("rows bool ranks", lambda env: prepare(env, [row(ranks=[True, False])]), PreferenceDataError,
     ["row 0, field 'ranks[0]'", "got True"]),
    ("rows float ranks", lambda env: prepare(env, [row(ranks=[0.5, 1.0])]), PreferenceDataError,
     ["row 0, field 'ranks[0]'", "got 0.5"]),
    ("rows NaN score", lambda env: prepare(env, [row(ranks=None, scores=[math.nan, 1.0])]), PreferenceDataError,
     ["row 0, field 'scores[0]'", "finite", "nan"]),
    ("rows inf score", lambda env: prepare(env, [row(ranks=None, scores=[1.0, math.inf])]), PreferenceDataError,
     ["row 0, field 'scores[1]'", "finite", "inf"]),
    ("rows scores as text", lambda env: prepare(env, [row(ranks=None, scores=["1", "2"])]), PreferenceDataError,
     ["row 0, field 'scores[0]'", "'1'"]),
    ("rows both ranks and scores", lambda env: prepare(env, [row(scores=[1.0, 0.0])]), PreferenceDataError,
     ["row 0, field 'ranks'", "both 'ranks' and 'scores'"]),
    ("rows neither ranks nor scores", lambda env: prepare(env, [row(ranks=None)]), PreferenceDataError,
     ["row 0, field 'ranks'", "missing"]),
    ("rows both completions and chosen", lambda env: prepare(env, [row(chosen="good", rejected="bad")]),
     PreferenceDataError, ["row 0, field 'completions'", "'chosen'/'rejected'"]),
    ("rows chosen without rejected", lambda env: prepare(env, [{"prompt": "the movie was ", "chosen": "good"}]),
     PreferenceDataError, ["row 0, field 'rejected'", "missing"]),
    ("rows chat message without a role",
     lambda env: prepare(env, [chat_row(prompt=[{"content": "the movie"}])], chat_tokenizer(env)),
     PreferenceDataError, ["row 0, field 'prompt'", "{'role', 'content'}"]),
    ("rows chat completion given as text",
     lambda env: prepare(env, [chat_row(completions=["good", "bad"])], chat_tokenizer(env)), PreferenceDataError,
     ["row 0, field 'completions[0]'", "messages like the prompt's"]),
    ("rows chat completion with empty content",
     lambda env: prepare(env, [chat_row(completions=[assistant("good"), assistant(" ")])], chat_tokenizer(env)),
     PreferenceDataError, ["row 0, field 'completions[1]'", "all empty"]),
    ("rows chat prompt with empty content",
     lambda env: prepare(env, [chat_row(prompt=user(" "))], chat_tokenizer(env)), PreferenceDataError,
     ["row 0, field 'prompt'", "empty prompt"]),
    ("rows chat prompt, tokenizer without a chat template", lambda env: prepare(env, [chat_row()]),
     PreferenceDataError, ["row 0, field 'prompt'", "no chat template"]),
    ("rows ref_logps NaN", lambda env: prepare(env, [row(ref_logps=[-1.0, -2.0]), row(ref_logps=[-1.0, math.nan])]),
     PreferenceDataError, ["row 1, field 'ref_logps[1]'", "finite", "nan"]),
    ("rows ref_logps wrong length", lambda env: prepare(env, [row(ref_logps=[-1.0])]), PreferenceDataError,
     ["row 0, field 'ref_logps'", "1 entries for 2 completions"]),
    ("rows ref_logps missing in one row", lambda env: prepare(env, [row(ref_logps=[-1.0, -2.0]), row()]),
     PreferenceDataError, ["row 1, field 'ref_logps'", "missing"]),
    ("tokenized rows negative rank", lambda env: prepare(env, [token_row(), token_row(ranks=[0, -2])]),
     PreferenceDataError, ["row 1, field 'ranks[1]'", "non-negative"]),
    ("tokenized rows ranks length mismatch", lambda env: prepare(env, [token_row(ranks=[0])]), PreferenceDataError,
     ["row 0, field 'ranks'", "1 entries for 2 completions"]),
    ("tokenized rows empty completion", lambda env: prepare(env, [token_row(completion_ids=[[5], []])]),
     PreferenceDataError, ["row 0, field 'completion_ids[1]'", "non-empty list of token ids"]),
    ("tokenized rows empty prompt", lambda env: prepare(env, [token_row(prompt_ids=[])]), PreferenceDataError,
     ["row 0, field 'prompt_ids'", "empty prompt"]),
    ("tokenized rows negative token id", lambda env: prepare(env, [token_row(prompt_ids=[3, -4])]),
     PreferenceDataError, ["row 0, field 'prompt_ids'", "non-negative integers"]),
    ("tokenized rows K < 2", lambda env: prepare(env, [token_row(completion_ids=[[5]], ranks=[0])]),
     PreferenceDataError, ["row 0, field 'completion_ids'", "at least 2 completions"]),
    ("tokenized rows without ranks", lambda env: prepare(env, [{"prompt_ids": [3], "completion_ids": [[5], [6]]}]),
     PreferenceDataError, ["row 0, field 'ranks'", "missing"]),
    ("rows named by the dataset's name", lambda env: prepare(env, [row(), row(ranks=[0])], name="eval"),
     PreferenceDataError, ["eval dataset, row 1, field 'ranks'"]),
    ("rows every one with identical completions", lambda env: prepare(env, [row(completions=["good", "good"])] * 2),
     PreferenceDataError, ["train dataset", "no usable rows"]),
    ("rows every one tied", lambda env: prepare(env, [row(ranks=[1, 1])] * 2), PreferenceDataError,
     ["train dataset", "no usable rows"]),
    ("rows every prompt reaching max_length",
     lambda env: prepare(env, [row(prompt="the movie was good and the plot ")], max_length=4), PreferenceDataError,
     ["train dataset", "no usable rows"]),
    ("rows float ranks after integral ones (Arrow makes the column float)",
     lambda env: prepare(env, [row(), row(ranks=[0.5, 1.5])]), PreferenceDataError,
     ["train dataset, row 1, field 'ranks[0]'", "got 0.5"]),
    ("rows chat message without a role in a Dataset (filled with None)",
     lambda env: prepare(env, [chat_row(), chat_row(prompt=user("the movie") + [{"content": "again"}])],
                         chat_tokenizer(env)), PreferenceDataError,
     ["train dataset, row 1, field 'prompt'", "message 1", "'role'"]),
    ("rows chat chosen without content in a Dataset (filled with None)",
     lambda env: prepare(env, [{"prompt": user("the movie"), "chosen": assistant("good"), "rejected": assistant("bad")},
                               {"prompt": user("the movie"), "chosen": [{"role": "assistant"}],
                                "rejected": assistant("bad")}], chat_tokenizer(env)), PreferenceDataError,
     ["train dataset, row 1, field 'chosen'", "message 0", "'content'"]),
    ("rows zero-row dataset",
     lambda env: prepare_ranked_dataset(datasets.Dataset.from_dict({"prompt": [], "completions": [], "ranks": []}),
                                        env.tokenizer), PreferenceDataError, ["train dataset is empty"]),
    # -- rows through the trainer -----------------------------------------------------------------------------------
    ("trainer train row with a negative rank", lambda env: env.trainer(rows=[row(), row(ranks=[0, -1])]),
     PreferenceDataError, ["train dataset, row 1, field 'ranks[1]'", "non-negative"]),
    ("trainer train row with empty prompt", lambda env: env.trainer(rows=[row(), row(), row(prompt="")]),
     PreferenceDataError, ["train dataset, row 2, field 'prompt'", "empty prompt"]),
    ("trainer train rows as a list of dicts", lambda env: env.trainer(rows=[row(), row(ranks=[1])]),
     PreferenceDataError, ["train dataset, row 1, field 'ranks'", "1 entries for 2"]),
    ("trainer train ref_logps NaN",
     lambda env: env.trainer(rows=[row(ref_logps=[-1.0, -2.0]), row(ref_logps=[math.nan, -2.0])]),
     PreferenceDataError, ["train dataset, row 1, field 'ref_logps[0]'", "finite"]),
    ("trainer train tokenized row with too many ranks",
     lambda env: env.trainer(rows=[token_row(), token_row(completion_ids=[[5], [6, 7]], ranks=[0, 1, 1])]),
     PreferenceDataError, ["train dataset, row 1, field 'ranks'", "3 entries for 2"]),
    ("trainer train every row dropped", lambda env: env.trainer(rows=[row(completions=["good", "good"])] * 3),
     PreferenceDataError, ["train dataset", "no usable rows"]),
    ("trainer eval row missing ranks", lambda env: eval_trainer(env, [row(), row(), row(ranks=None)]),
     PreferenceDataError, ["eval dataset, row 2, field 'ranks'", "missing"]),
    ("trainer eval row with empty completion",
     lambda env: eval_trainer(env, [row(), row(completions=["good", ""])]), PreferenceDataError,
     ["eval dataset, row 1, field 'completions[1]'", "empty completion"]),
    ("trainer eval dict names its dataset",
     lambda env: env.trainer(eval_dataset={"heldout": datasets.Dataset.from_list([row(), row(prompt=" ")])}),
     PreferenceDataError, ["heldout dataset, row 1, field 'prompt'"]),
    ("trainer eval every row tied", lambda env: eval_trainer(env, [row(ranks=[0, 0])] * 2), PreferenceDataError,
     ["eval dataset", "no usable rows"]),
    ("trainer empty eval dataset", lambda env: eval_trainer(env, []), PreferenceDataError,
     ["eval dataset is empty"]),
    ("trainer eval rows as a list mixing types in one field",
     lambda env: env.trainer(eval_dataset=[row(), row(completions=["good", 5])]), PreferenceDataError,
     ["eval dataset, row 1, field 'completions[1]'", "expected a string"]),
    ("trainer eval rows as a list with a non-dict row", lambda env: env.trainer(eval_dataset=[row(), 7]),
     PreferenceDataError, ["eval dataset, row 1", "expected a dict"]),
    ("trainer tokenized row with an id past the vocabulary",
     lambda env: env.trainer(rows=[token_row(), token_row(completion_ids=[[5], [10**6]])]), PreferenceDataError,
     ["train dataset, row 1, field 'completion_ids[1]'", "token id 1000000", "vocabulary"]),
    ("scorer token id past the vocabulary", lambda env: env.scorer().score_tokens([[3]], [[[4], [10**6]]]),
     PreferenceDataError, ["prompt 0, completion 1", "token id 1000000", "vocabulary"]),
    ("scorer negative token id in a prompt", lambda env: env.scorer().score_tokens([[-1]], [[[4], [5]]]),
     PreferenceDataError, ["prompt 0", "token id -1", "vocabulary"]),
    # -- scoring inputs ---------------------------------------------------------------------------------------------
    ("scorer prompts given as one string", lambda env: env.scorer().score("the movie", ["good"]), ValueError,
     ["prompts must be a list"]),
    ("scorer fewer completions than prompts", lambda env: env.scorer().score(["the movie", "the plot"], ["good"]),
     ValueError, ["2 prompts and 1 completions"]),
    ("scorer lists mixed with single completions",
     lambda env: env.scorer().score(["the movie", "the plot"], [["good", "bad"], "fine"]), ValueError,
     ["completion 1 is not a list unlike completion 0"]),
    ("scorer completion not text", lambda env: env.scorer().score(["the movie", "the plot"], [["good"], [3]]),
     PreferenceDataError, ["prompt 1, completion 0", "got int"]),
    ("scorer missing prompt", lambda env: env.scorer().score(["the movie", None], ["good", "bad"]),
     PreferenceDataError, ["prompt 1", "missing"]),
    ("scorer empty prompt", lambda env: env.scorer().score(["the movie", " "], ["good", "bad"]),
     PreferenceDataError, ["prompt 1", "empty prompt", "BOS"]),
    ("scorer empty completion", lambda env: env.scorer().score(["the movie"], [["good", ""]]), PreferenceDataError,
     ["prompt 0, completion 1", "empty completion"]),
    ("scorer empty list of completions", lambda env: env.scorer().score(["the movie", "the"], [["good"], []]),
     PreferenceDataError, ["prompt 1", "empty list of completions"]),
    ("scorer chat prompt, tokenizer without a chat template",
     lambda env: env.scorer().score([user("the movie")], ["good"]), PreferenceDataError,
     ["prompt 0", "no chat template"]),
    ("scorer max_length not above the prompt",
     lambda env: env.scorer(max_length=3).score(["the movie", "the movie was good and"], ["bad", "fine"]),
     PreferenceDataError, ["prompt 1", "4 tokens", "max_length=3"]),
    ("scorer longer than the model's positions",
     lambda env: env.scorer().score(["the movie"], [" ".join(["good"] * 80)]), PreferenceDataError,
     ["prompt 0, completion 0", "64 positions", "max_length"]),
    ("scorer normalize", lambda env: env.scorer().score(["the movie"], ["good"], normalize="median"), ValueError,
     ["normalize", "'median'"]),
    ("scorer score_tokens empty prompt_ids", lambda env: env.scorer().score_tokens([[3], []], [[[4]], [[5]]]),
     PreferenceDataError, ["prompt 1", "empty prompt_ids"]),
    ("scorer score_tokens empty completion", lambda env: env.scorer().score_tokens([[3]], [[[4], []]]),
     PreferenceDataError, ["prompt 0, completion 1", "no tokens"]),
    ("scorer rerank without candidates", lambda env: env.scorer().rerank("the movie", []), PreferenceDataError,
     ["prompt 0", "empty list of completions"]),
    ("scorer best_of_n n = 0", lambda env: env.scorer().best_of_n(["the movie"], 0), ValueError,
     ["n must be at least 1", "0"]),
    ("evaluate_preferences bad row", lambda env: evaluate_preferences(env.scorer(), [row(), row(ranks=[0, 0, 1])]),
     PreferenceDataError, ["row 1, field 'ranks'", "3 entries for 2"]),
    ("evaluate_preferences chat completion missing content",
     lambda env: evaluate_preferences(env.scorer(), [chat_row(completions=[assistant("good"),
                                                                          [{"role": "assistant"}]])]),
     PreferenceDataError, ["row 0, field 'completions[1]'", "{'role', 'content'}"]),
    ("evaluate_preferences no row with a preference",
     lambda env: evaluate_preferences(env.scorer(), [row(completions=["good", "good"])]), ValueError,
     ["no row with a preference"]),
    # -- loading a saved scorer -------------------------------------------------------------------------------------
    ("load adapter with only adapter_model.bin", lambda env: load(env, damaged_copy(env, "bin_adapter", pickle_only)),
     WeightsFileError, ["bin_adapter has adapter_model.bin but no adapter_model.safetensors", "convert"]),
    ("load truncated adapter_model.safetensors",
     lambda env: load(env, damaged_copy(env, "cut_adapter", truncated_weights)), WeightsFileError,
     ["cut_adapter/adapter_model.safetensors", "truncated: 10 bytes missing"]),
    ("load folder without adapter_config.json and no reference",
     lambda env: load(env, damaged_copy(env, "no_config", lambda f: (f / "adapter_config.json").unlink()),
                      base_model=None), ValueError, ["no_config is not a PEFT adapter", "ref_model=",
                                                     "reference_free=True"]),
    ("load adapter_config.json without weights",
     lambda env: load(env, damaged_copy(env, "no_weights", lambda f: (f / "adapter_model.safetensors").unlink())),
     FileNotFoundError, ["no_weights has an adapter_config.json but no adapter_model.safetensors"]),
    ("load a file instead of a folder", lambda env: load(env, env.saved.adapter / "adapter_config.json"), ValueError,
     ["adapter_config.json is a file"]),
    ("load a folder that does not exist", lambda env: load(env, env.tmp / "no_such_adapter"), FileNotFoundError,
     ["no_such_adapter: no such directory"]),
    ("load unknown ref_adapter", lambda env: load(env, env.saved.adapter, ref_adapter="nope"), ValueError,
     ["ref_adapter='nope'", "adapter_config.json"]),
    ("load truncated ref/ adapter", lambda env: load(env, damaged_copy(env, "cut_ref", truncated_ref_copy)),
     WeightsFileError, ["cut_ref/ref/adapter_model.safetensors", "truncated"]),
    ("load adapter trained against another reference",
     lambda env: load(env, damaged_copy(env, "other_ref", lambda f: (f / REFERENCE_RECORD).write_text(
         json.dumps({"reference": "ref_model"})))), ValueError, ["other_ref", "reference='ref_model'", "ref_model="]),
    ("load truncated base model",
     lambda env: load(env, env.saved.adapter,
                      base_model=str(base_copy(env, "cut_base", lambda f: truncate(f / "model.safetensors", 4)))),
     WeightsFileError, ["cut_base/model.safetensors", "truncated: 4 bytes missing"]),
    ("load pickle-only base model",
     lambda env: load(env, env.saved.adapter, base_model=str(base_copy(env, "bin_base", pickle_only_base))),
     WeightsFileError, ["bin_base has pytorch_model.bin but no model.safetensors"]),
    ("load adapter_config.json not JSON",
     lambda env: load(env, damaged_copy(env, "json_config", lambda f: (f / "adapter_config.json").write_text("{oops"))),
     ValueError, ["json_config/adapter_config.json is not valid JSON", "save_pretrained"]),
    ("load base model folder missing", lambda env: load(env, env.saved.adapter, base_model=str(env.tmp / "no_base")),
     FileNotFoundError, ["base model", "no_base", "base_model="]),
    ("load base model Hub id not downloaded",
     lambda env: load(env, env.saved.adapter, base_model="dpo-ext-tests/not-downloaded"), FileNotFoundError,
     ["base model 'dpo-ext-tests/not-downloaded'", "download it first", "base_model="]),
    # -- publishing (dry runs: no network) --------------------------------------------------------------------------
    ("push missing folder", lambda env: push(env, env.tmp / "no_such_adapter"), FileNotFoundError,
     ["no_such_adapter does not exist"]),
    ("push pickle-only weights", lambda env: push(env, damaged_copy(env, "bin_adapter", pickle_only)), ValueError,
     ["bin_adapter has adapter_model.bin but no adapter_model.safetensors"]),
    ("push truncated safetensors", lambda env: push(env, damaged_copy(env, "cut_adapter", truncated_weights)),
     WeightsFileError, ["cut_adapter/adapter_model.safetensors", "truncated: 10 bytes missing"]),
    ("push without adapter_config.json",
     lambda env: push(env, damaged_copy(env, "no_config", lambda f: (f / "adapter_config.json").unlink())),
     FileNotFoundError, ["no_config/adapter_config.json not found"]),
    ("push eval results not JSON", lambda env: push(env, eval_results=env.write("eval_bad.json", "{oops")),
     ValueError, ["eval_bad.json is not valid JSON"]),
    ("push eval results not an object", lambda env: push(env, eval_results=env.write("eval_list.json", "[1, 2]")),
     ValueError, ["eval_list.json", "JSON object"]),
    ("push plot not a PNG", lambda env: push(env, plots=[env.write("curve.png", "GIF89a, not a PNG")]), ValueError,
     ["plot", "curve.png is not a PNG"]),
    ("push plot missing", lambda env: push(env, plots=[env.tmp / "missing_curve.png"]), FileNotFoundError,
     ["missing_curve.png does not exist"]),
    ("push beta mismatch", lambda env: push(env, beta=0.5), ValueError,
     ["beta mismatch", "beta=0.5", "beta=0.1"]),
    ("push base model mismatch", lambda env: push(env, base_model="someone/else"), ValueError,
     ["base model mismatch", "'someone/else'", BASE_MODEL_ID]),
    ("push local base path without base_model",
     lambda env: push(env, damaged_copy(env, "local_base", lambda f: rewrite_json(
         f / "adapter_config.json", base_model_name_or_path=str(env.saved.base)))), ValueError,
     ["local_base/adapter_config.json", "not a Hub model id", "base_model="]),
    ("push beta unknown, only training_args.bin",
     lambda env: push(env, damaged_copy(env, "pickled_args", pickled_args_only)),
     ValueError, ["beta is unknown", "pickled_args", "training_args.bin is never read"]),
    ("push beta unknown, config without beta",
     lambda env: push(env, damaged_copy(env, "no_beta", lambda f: (f / "training_config.json").write_text("{}"))),
     ValueError, ["beta is unknown", "no_beta"]),
    ("push training config is a list", lambda env: push(env, training_config=env.write("config.yaml", "- a\n")),
     ValueError, ["config.yaml", "expected a mapping"]),
    ("push training config missing", lambda env: push(env, training_config=env.tmp / "no_config.yaml"),
     FileNotFoundError, ["no_config.yaml does not exist"]),
    ("push staging inside the source", lambda env: push(env, staging=env.saved.adapter / "staging"), ValueError,
     ["staging", "overlaps the source folder"]),
    ("push staging is the source", lambda env: push(env, staging=env.saved.adapter), ValueError,
     ["overlaps the source folder"]),
    ("push staging not empty", lambda env: push(env, staging=non_empty_folder(env)), ValueError,
     ["old_staging already exists and is not empty"]),
    ("push adapter_config.json not JSON",
     lambda env: push(env, damaged_copy(env, "json_config", lambda f: (f / "adapter_config.json").write_text("{oops"))),
     ValueError, ["json_config/adapter_config.json is not valid JSON"]),
    ("push training config beta text",
     lambda env: push(env, training_config=env.write("config_high.yaml", "beta: high\n")), SettingError,
     ["config_high.yaml", "beta", "'high'"]),
    ("push training config beta NaN",
     lambda env: push(env, training_config=env.write("config_nan.yaml", "beta: .nan\n")), SettingError,
     ["config_nan.yaml", "beta", "finite"]),
    ("push beta NaN", lambda env: push(env, beta=math.nan), SettingError, ["beta", "finite"]),
    ("push training config not YAML",
     lambda env: push(env, training_config=env.write("config_broken.yaml", "beta: [1\n")), ValueError,
     ["config_broken.yaml is not valid YAML"]),
    ("push repo id invalid", lambda env: push_adapter(env.saved.adapter, "bad repo id!!", dry_run=env.tmp / "st"),
     ValueError, ["'bad repo id!!'", "namespace/name"]),
    ("push eval result NaN",
     lambda env: push(env, eval_results=env.write("eval_nan.json", '{"kl": 0.1, "win_rate": NaN}')), ValueError,
     ["eval_nan.json", "'win_rate'", "finite"]),
    ("push-dataset corrupt Parquet", lambda env: push_data(env, "bad_parquet", {"train.parquet": "PAR1"}),
     ValueError, ["bad_parquet/train.parquet", "Parquet"]),
    ("push-dataset bad JSON line", lambda env: push_data(env, "data", {"train.jsonl": lines(PAIR, "{oops")}),
     ValueError, ["train.jsonl, line 2", "not valid JSON"]),
    ("push-dataset row without rejected",
     lambda env: push_data(env, "data", {"train.jsonl": lines(PAIR, {"prompt": "p", "chosen": "a"})}), ValueError,
     ["train.jsonl, line 2", "without rejected"]),
    ("push-dataset neither ranked nor pairwise",
     lambda env: push_data(env, "data", {"test.jsonl": lines({"prompt": "p", "text": "x"})}), ValueError,
     ["test.jsonl", "cannot tell", "columns found: prompt, text"]),
    ("push-dataset ranked list of one",
     lambda env: push_data(env, "data", {"train.jsonl": lines({"prompt": "p", "completions": ["a"]})}),
     ValueError, ["train.jsonl, line 1", "'completions'", "at least 2"]),
    ("push-dataset no data files", lambda env: push_data(env, "notes_only", {"notes.txt": "x"}), FileNotFoundError,
     ["no .jsonl or .parquet files", "notes_only"]),
    ("push-dataset JSONL mixed with Parquet",
     lambda env: push_data(env, "mixed", {"train.jsonl": lines(PAIR), "test.parquet": "x"}), ValueError,
     ["mixed mixes JSONL and Parquet"]),
    ("push-dataset pair the trainer refuses",
     lambda env: push_data(env, "data", {"train.jsonl": lines(PAIR, {"prompt": "p", "chosen": "", "rejected": None})}),
     ValueError, ["train.jsonl, line 2, field 'chosen'", "empty completion"]),
    ("push-dataset ranked completions not text",
     lambda env: push_data(env, "data", {"train.jsonl": lines({"prompt": "p", "completions": [1, 2]})}),
     ValueError, ["train.jsonl, line 1, field 'completions[0]'", "expected a string, got int"]),
    # -- dpo-ext score / rerank / eval ------------------------------------------------------------------------------
    ("cli score bad JSON line", lambda env: run_cli(env, "score", "score_bad_json.jsonl", PAIR, "{oops"), 2,
     ["dpo-ext score: error", "score_bad_json.jsonl, line 2", "not valid JSON"]),
    ("cli score row without completions",
     lambda env: run_cli(env, "score", "score_no_field.jsonl", PAIR, {"prompt": "the"}), 2,
     ["score_no_field.jsonl, line 2", "no 'completion', 'completions' or 'chosen'/'rejected'"]),
    ("cli score empty completion",
     lambda env: run_cli(env, "score", "score_empty.jsonl", PAIR, {"prompt": "the", "completions": ["good", ""]}),
     2, ["score_empty.jsonl, line 2, field 'completions[1]'", "empty completion"]),
    ("cli score empty prompt",
     lambda env: run_cli(env, "score", "score_prompt.jsonl", PAIR, PAIR, {"prompt": " ", "completion": "good"}), 2,
     ["score_prompt.jsonl, line 3, field 'prompt'", "empty prompt"]),
    ("cli score no such input",
     lambda env: cli(env, "score", *model_args(env), "-i", env.tmp / "absent.jsonl", "-o", env.tmp / "o.jsonl"), 2,
     ["absent.jsonl: no such file"]),
    ("cli score unsupported input type",
     lambda env: cli(env, "score", *model_args(env), "-i", env.write("rows.txt", "x"), "-o", env.tmp / "o.jsonl"),
     2, ["rows.txt: unsupported file type '.txt'"]),
    ("cli score empty input", lambda env: run_cli(env, "score", "score_blank.jsonl"), 2,
     ["score_blank.jsonl: no rows"]),
    ("cli score output is a directory",
     lambda env: run_cli(env, "score", "score_ok.jsonl", PAIR, extra=["-o", env.tmp]), 2,
     ["--output", "is a directory"]),
    ("cli score no such model",
     lambda env: cli(env, "score", env.tmp / "no_model", "-i", env.write("ok.jsonl", lines(PAIR)), "-o",
                     env.tmp / "o.jsonl"), 2, ["no_model: no such directory"]),
    ("cli score full model without a reference",
     lambda env: cli(env, "score", env.saved.base, "-i", env.write("ok.jsonl", lines(PAIR)), "-o",
                     env.tmp / "o.jsonl"), 2, ["is not a PEFT adapter", "--ref-model", "--reference-free"]),
    ("cli score pickle-only adapter",
     lambda env: cli(env, "score", *model_args(env, damaged_copy(env, "bin_adapter", pickle_only)), "-i",
                     env.write("ok.jsonl", lines(PAIR)), "-o", env.tmp / "o.jsonl"), 2,
     ["bin_adapter has adapter_model.bin but no adapter_model.safetensors"]),
    ("cli score completion longer than the model (after loading)",
     lambda env: run_cli(env, "score", "score_long.jsonl", PAIR,
                         {"prompt": "the movie was ", "completion": " ".join(["good"] * 80)}), 2,
     ["score_long.jsonl, line 2", "64 positions"]),
    ("cli rerank --n 0", lambda env: run_cli(env, "rerank", "rerank_ok.jsonl", PAIR, extra=["--n", "0"]), 2,
     ["--n must be at least 1"]),
    ("cli rerank candidates not a list",
     lambda env: run_cli(env, "rerank", "rerank_str.jsonl", {"prompt": "the ", "candidates": ["good", "bad"]},
                         {"prompt": "the ", "candidates": "good"}), 2,
     ["rerank_str.jsonl, line 2", "'candidates' must be a non-empty list"]),
    ("cli rerank no candidates",
     lambda env: run_cli(env, "rerank", "rerank_none.jsonl", {"prompt": "the ", "candidates": []}), 2,
     ["rerank_none.jsonl, line 1", "'candidates' must be a non-empty list"]),
    ("cli rerank empty prompt",
     lambda env: run_cli(env, "rerank", "rerank_prompt.jsonl", {"prompt": "", "candidates": ["good"]}), 2,
     ["rerank_prompt.jsonl, line 1, field 'prompt'", "empty prompt"]),
    ("cli rerank bad JSON line", lambda env: run_cli(env, "rerank", "rerank_json.jsonl", "[1,"), 2,
     ["rerank_json.jsonl, line 1", "not valid JSON"]),
    ("cli rerank output is a directory",
     lambda env: run_cli(env, "rerank", "rerank_ok.jsonl", PAIR, extra=["-o", env.tmp]), 2,
     ["--output", "is a directory"]),
    ("cli eval bad row names the file line",
     lambda env: run_cli(env, "eval", "eval_rows.jsonl", PAIR, "", row(ranks=[0]), output=False), 2,
     ["eval_rows.jsonl, line 3, field 'ranks'", "1 entries for 2"]),
    ("cli eval NaN score",  # Python's JSON reader accepts NaN
     lambda env: run_cli(env, "eval", "eval_nan.jsonl", PAIR,
                         '{"prompt": "p", "completions": ["a", "b"], "scores": [NaN, 1]}', output=False), 2,
     ["eval_nan.jsonl, line 2, field 'scores[0]'", "finite"]),
    ("cli eval bad JSON line", lambda env: run_cli(env, "eval", "eval_json.jsonl", PAIR, "oops", output=False), 2,
     ["eval_json.jsonl, line 2", "not valid JSON"]),
    ("cli eval output is a directory",
     lambda env: run_cli(env, "eval", "eval_ok.jsonl", PAIR, output=False, extra=["-o", env.tmp]), 2,
     ["--output", "is a directory"]),
    ("cli eval no row with a preference names the file",
     lambda env: run_cli(env, "eval", "eval_tied.jsonl", row(ranks=[0, 0]), output=False), 2,
     ["eval_tied.jsonl", "no row with a preference"]),
    ("cli rerank candidate not text, before the model loads",
     lambda env: cli(env, "rerank", env.tmp / "no_model", "-i", env.write("rerank_int.jsonl", lines(
         {"prompt": "the ", "candidates": ["good", 3]})), "-o", env.tmp / "o.jsonl"), 2,
     ["rerank_int.jsonl, line 1, field 'candidates[1]'", "expected a string, got int"]),
    ("cli rerank candidate longer than the model names line and field",
     lambda env: run_cli(env, "rerank", "rerank_long.jsonl",
                         {"prompt": "the movie was ", "candidates": ["good", " ".join(["good"] * 80)]}), 2,
     ["rerank_long.jsonl, line 1, field 'candidates[1]'", "64 positions"]),
    ("cli score completion row names field 'completion'",
     lambda env: run_cli(env, "score", "score_long1.jsonl",
                         {"prompt": "the movie was ", "completion": " ".join(["good"] * 80)}), 2,
     ["score_long1.jsonl, line 1, field 'completion'", "64 positions"]),
    ("cli score .json array of non-objects",
     lambda env: cli(env, "score", *model_args(env), "-i", env.write("numbers.json", "[1, 2]"), "-o",
                     env.tmp / "o.jsonl"), 2, ["numbers.json, row 1", "JSON object"]),
    ("cli validate .json array of non-objects", lambda env: cli(env, "validate", env.write("numbers.json", "[1, 2]")),
     2, ["numbers.json, row 1", "JSON object"]),
    ("cli validate malformed .json array",
     lambda env: cli(env, "validate", env.write("broken_array.json", '[{"prompt": }]')), 2,
     ["broken_array.json", "not valid JSON", "line 1 column 13"]),
    ("cli score base model folder missing",
     lambda env: cli(env, "score", env.saved.adapter, "--base-model", env.tmp / "no_base", "--device", "cpu", "-i",
                     env.write("ok.jsonl", lines(PAIR)), "-o", env.tmp / "o.jsonl"), 2,
     ["dpo-ext score: error", "no_base", "--base-model"]),
    ("cli eval adapter names a base model not downloaded",
     lambda env: cli(env, "eval", damaged_copy(env, "far_base", lambda f: rewrite_json(
         f / "adapter_config.json", base_model_name_or_path="dpo-ext-tests/not-downloaded")), "--device", "cpu",
                     "-i", env.write("ok.jsonl", lines(PAIR))), 2,
     ["dpo-ext eval: error", "'dpo-ext-tests/not-downloaded'", "--base-model"]),
    # -- dpo-ext push / push-dataset --------------------------------------------------------------------------------
    ("cli push missing folder", lambda env: push_cli(env, folder=env.tmp / "no_such_adapter"), 2,
     ["dpo-ext push: error", "no_such_adapter does not exist"]),
    ("cli push pickle-only weights", lambda env: push_cli(env, folder=damaged_copy(env, "bin_adapter", pickle_only)),
     2, ["bin_adapter has adapter_model.bin but no adapter_model.safetensors"]),
    ("cli push truncated safetensors",
     lambda env: push_cli(env, folder=damaged_copy(env, "cut_adapter", truncated_weights)), 2,
     ["cut_adapter/adapter_model.safetensors", "truncated"]),
    ("cli push eval results not JSON",
     lambda env: push_cli(env, "--eval-results", env.write("eval_bad.json", "{oops")), 2,
     ["eval_bad.json is not valid JSON"]),
    ("cli push plot not a PNG", lambda env: push_cli(env, "--plot", env.write("curve.png", "GIF89a")), 2,
     ["curve.png is not a PNG"]),
    ("cli push beta mismatch", lambda env: push_cli(env, "--beta", "0.3"), 2, ["beta mismatch", "beta=0.3"]),
    ("cli push base model mismatch", lambda env: push_cli(env, "--base-model", "someone/else"), 2,
     ["base model mismatch", "'someone/else'"]),
    ("cli push staging inside the source", lambda env: push_cli(env, staging=env.saved.adapter / "staging"), 2,
     ["overlaps the source folder"]),
    ("cli push staging not empty", lambda env: push_cli(env, staging=non_empty_folder(env)), 2,
     ["old_staging already exists and is not empty"]),
    ("cli push offline without --dry-run",
     lambda env: cli(env, "push", env.saved.adapter, "--repo-id", "alice/tiny-pl"), 2,
     ["HF_HUB_OFFLINE", "dry run"]),
    ("cli push config not YAML", lambda env: push_cli(env, "--config", env.write("bad.yaml", "beta: [1\n")), 2,
     ["dpo-ext push: error", "bad.yaml is not valid YAML"]),
    ("cli push config beta text", lambda env: push_cli(env, "--config", env.write("high.yaml", "beta: high\n")), 2,
     ["high.yaml", "beta", "'high'"]),
    ("cli push bad repo id",
     lambda env: cli(env, "push", env.saved.adapter, "--repo-id", "bad repo id!!", "--dry-run", env.tmp / "st"), 2,
     ["'bad repo id!!'", "namespace/name"]),
    ("cli push-dataset bad JSON line",
     lambda env: cli(env, "push-dataset", data_folder(env, "data", {"train.jsonl": lines(PAIR, PAIR, "{oops")}),
                     "--repo-id", "alice/prefs", "--dry-run", env.tmp / "staging"), 2,
     ["dpo-ext push-dataset: error", "train.jsonl, line 3", "not valid JSON"]),
    ("cli push-dataset missing folder",
     lambda env: cli(env, "push-dataset", env.tmp / "no_data", "--repo-id", "alice/prefs", "--dry-run",
                     env.tmp / "staging"), 2, ["no_data does not exist"]),
    # -- dpo-ext validate -------------------------------------------------------------------------------------------
    ("cli validate lists every bad line",
     lambda env: cli(env, "validate", env.write("to_check.jsonl", lines(
         PAIR, {**PAIR, "prompt": ""}, PAIR, row(ranks=[0, -1]), row(ranks=None, scores=[1, None])))), 1,
     ["3 invalid rows", "to_check.jsonl, line 2, field 'prompt'", "to_check.jsonl, line 4, field 'ranks[1]'",
      "to_check.jsonl, line 5, field 'scores[1]'", "FAIL"]),
    ("cli validate --json lists every bad line",
     lambda env: cli(env, "validate", "--json", env.write("to_check.jsonl", lines(
         row(completions=["good", 1]), PAIR, row(ranks=[0])))), 1,
     ['"invalid_rows": 2', "to_check.jsonl, line 1, field 'completions[1]'", "to_check.jsonl, line 3, field 'ranks'"]),
    ("cli validate every row dropped",
     lambda env: cli(env, "validate", env.write("all_tied.jsonl", lines(row(ranks=[0, 0]), row(ranks=[2, 2])))), 1,
     ["all_tied.jsonl: 2 rows, 0 usable", "FAIL", "no usable row"]),
    ("cli validate bad JSON line", lambda env: cli(env, "validate", env.write("broken.jsonl", lines(PAIR, "{x"))), 2,
     ["dpo-ext validate: error", "broken.jsonl, line 2", "not valid JSON"]),
    ("cli validate missing file", lambda env: cli(env, "validate", env.tmp / "absent.jsonl"), 2,
     ["absent.jsonl: no such file"]),
    ("cli validate --max-length 1",
     lambda env: cli(env, "validate", env.write("ok.jsonl", lines(PAIR)), "--max-length", "1"), 2,
     ["--max-length: must be at least 2, got 1"]),  # the words of every command's --max-length
    # -- issue 19: RewardBench and dpo-ext eval --
    ("cli eval --benchmark empty input file",
     lambda env: bench_cli(env, "rewardbench", env.write("rb_empty.jsonl", "")), 2,
     ["dpo-ext eval: error", "rb_empty.jsonl: no rows"]),
    ("cli eval --benchmark input of blank lines",
     lambda env: bench_cli(env, "rewardbench2", env.write("rb_blank.jsonl", "\n  \n")), 2, ["rb_blank.jsonl: no rows"]),
    ("cli eval --benchmark unknown subset names the file line",
     lambda env: bench_cli(env, "rewardbench", env.write("rb_subset.jsonl", lines(RB1_ROW) + "\n" + lines(
         {**RB1_ROW, "subset": "Chat"}))), 2,
     ["rb_subset.jsonl, line 3, field 'subset'", "unknown subset 'Chat'"]),
    ("cli eval --benchmark missing field names the file line",
     lambda env: bench_cli(env, "rewardbench", env.write("rb_missing.jsonl", lines(
         RB1_ROW, {k: v for k, v in RB1_ROW.items() if k != "prompt"}))), 2,
     ["rb_missing.jsonl, line 2, field 'prompt'", "missing"]),
    ("cli eval --benchmark rewardbench row given to rewardbench2",
     lambda env: bench_cli(env, "rewardbench2", env.write("rb2_of_rb1.jsonl", lines(RB2_ROW, RB1_ROW))), 2,
     ["rb2_of_rb1.jsonl, line 2, field 'id'", "expected a string, got int"]),
    ("cli eval --benchmark JSON array names the row",
     lambda env: bench_cli(env, "rewardbench", env.write("rb_rows.json", json.dumps(
         [RB1_ROW, {**RB1_ROW, "chosen": ["good"]}]))), 2,
     ["rb_rows.json, row ", "field 'chosen'", "expected a string, got list"]),
    ("cli eval --benchmark completion longer than the model names line and field",
     lambda env: bench_cli(env, "rewardbench", env.write("rb_long.jsonl", lines(
         RB1_ROW, {**RB1_ROW, "rejected": " ".join(["bad"] * 80)}))), 2,
     ["rb_long.jsonl, line 2, field 'rejected'", "64 positions"]),
    ("cli eval --benchmark rewardbench2 completion longer than the model names its list position",
     lambda env: bench_cli(env, "rewardbench2", env.write("rb2_long.jsonl", lines(
         {**RB2_ROW, "rejected": ["bad", " ".join(["bad"] * 80), "fine"]}))), 2,
     ["rb2_long.jsonl, line 1, field 'rejected[1]'", "64 positions"]),
    ("cli eval --benchmark --chat with a tokenizer without chat template",
     lambda env: bench_cli(env, "rewardbench", env.write("rb_ok.jsonl", lines(RB1_ROW)), "--chat"), 2,
     ["dpo-ext eval: error", "--chat", "no chat template"]),
    ("cli eval --benchmark from the Hub while offline",
     lambda env: cli(env, "eval", "--benchmark", "rewardbench", *model_args(env)), 2,
     ["dpo-ext eval: error", "allenai/reward-bench", "HF_HUB_OFFLINE"]),
    # -- issue 19: the training record and the scorer's reference --
    ("load training record not JSON",
     lambda env: load(env, damaged_copy(env, "record_json", lambda f: (f / REFERENCE_RECORD).write_text("{oops"))),
     ValueError, ["record_json/dpo_ext_reference.json is not valid JSON"]),
    ("load training record not an object",
     lambda env: load(env, damaged_copy(env, "record_list", lambda f: (f / REFERENCE_RECORD).write_text("[]"))),
     ValueError, ["record_list/dpo_ext_reference.json", "expected a JSON object"]),
    ("load training record beta negative",
     lambda env: load(env, damaged_copy(env, "record_neg", lambda f: (f / REFERENCE_RECORD).write_text(
         json.dumps({"reference": "disabled_adapters", "beta": -0.5})))), SettingError,
     ["record_neg/dpo_ext_reference.json, field 'beta'", "greater than 0"]),
    ("load training record beta NaN",
     lambda env: load(env, damaged_copy(env, "record_nan", lambda f: (f / REFERENCE_RECORD).write_text(
         '{"beta": NaN}'))), SettingError, ["record_nan/dpo_ext_reference.json, field 'beta'", "finite"]),
    ("load training record reference not text",
     lambda env: load(env, damaged_copy(env, "record_ref", lambda f: (f / REFERENCE_RECORD).write_text(
         json.dumps({"reference": 3})))), ValueError, ["record_ref/dpo_ext_reference.json, field 'reference'"]),
    ("load beta conflicts with the training record",
     lambda env: load(env, damaged_copy(env, "record_05", lambda f: (f / REFERENCE_RECORD).write_text(
         json.dumps({"reference": "disabled_adapters", "beta": 0.5}))), beta=0.1), ValueError,
     ["beta=0.1", "record_05/dpo_ext_reference.json records beta=0.5", "override_beta=True"]),
    ("load beta conflicts with the training config", lambda env: load(env, env.saved.adapter, beta=0.3), ValueError,
     ["beta=0.3", "training_config.json records beta=0.1", "override_beta=True"]),
    ("cli score --beta conflicts with the training config",
     lambda env: run_cli(env, "score", "conflict.jsonl", PAIR, extra=["--beta", "0.3"]), 2,
     ["dpo-ext score: error", "beta=0.3", "training_config.json records beta=0.1", "--override-beta"]),
    ("push beta conflicts with the training record",
     lambda env: push(env, damaged_copy(env, "push_record_05", lambda f: (f / REFERENCE_RECORD).write_text(
         json.dumps({"reference": "disabled_adapters", "beta": 0.5}))), beta=0.1), ValueError,
     ["beta mismatch", "beta=0.1", "push_record_05/dpo_ext_reference.json records beta=0.5"]),
    ("push training record beta zero",
     lambda env: push(env, damaged_copy(env, "push_record_0", lambda f: (f / REFERENCE_RECORD).write_text(
         json.dumps({"beta": 0})))), SettingError, ["push_record_0/dpo_ext_reference.json, field 'beta'"]),
    # -- issue 19: reference cache files and non-finite weights --
    ("trainer ref cache row with K-1 values",  # it trained with the missing value read as 0.0
     lambda env: cached_trainer(env, lambda rows: rows[1].pop()), ValueError,
     ["ref_cache/train.json, row 1, field 'ref_logps': has 2 entries for 3 completions", "dpo-ext precompute-ref"]),
    ("trainer ref cache NaN value",
     lambda env: cached_trainer(env, lambda rows: rows[3].__setitem__(0, math.nan)), ValueError,
     ["ref_cache/train.json, row 3, field 'ref_logps[0]'", "finite", "nan"]),
    ("trainer ref cache one row short",
     lambda env: cached_trainer(env, lambda rows: rows.pop()), ValueError,
     ["ref_cache/train.json", "holds 3 rows for the 4 rows of the train dataset", "delete"]),
    ("trainer ref cache value as text",
     lambda env: cached_trainer(env, lambda rows: rows[2].__setitem__(1, "-3.5")), ValueError,
     ["ref_cache/train.json, row 2, field 'ref_logps[1]'", "'-3.5'"]),
    ("config ref_cache_dir is a file",
     lambda env: env.config(precompute_ref_log_probs=True, ref_cache_dir=str(env.write("cache_file.json", "{}"))),
     SettingError, ["PLDPOConfig.ref_cache_dir", "cache_file.json is a file, not a folder"]),
    ("cli precompute-ref cache path is a file",
     lambda env: cli(env, "precompute-ref", "--model_name_or_path", env.saved.base, "--dataset_name",
                     env.write("precompute.jsonl", lines(PAIR, PAIR)), "--ref_cache_dir",
                     env.write("precompute_cache", "a file"), "--output_dir", env.tmp / "out"), 2,
     ["dpo-ext precompute-ref: error:", "precompute_cache is a file, not a folder"]),
    ("trainer policy with NaN adapter weights",
     lambda env: env.trainer(model=nan_lora_model(env), peft_config=None), ValueError,
     ["the policy's weight", "lora_B", "holds NaN values"]),
    ("trainer ref_model with an infinite weight",
     lambda env: env.trainer(ref_model=non_finite_model(env)), ValueError,
     ["ref_model's weight 'transformer.wte.weight' holds infinite values (1 of"]),
    ("scorer NaN log-probs named, not scored 0",
     lambda env: ImplicitRewardScorer(nan_lora_model(env), env.tokenizer).score(["the movie was "], [["good", "bad"]]),
     PreferenceDataError, ["prompt 0, completion 0", "policy", "non-finite log-prob", "nan"]),
    ("evaluate NaN log-probs names the row, not accuracy 0.0",
     lambda env: evaluate_preferences(ImplicitRewardScorer(nan_lora_model(env), env.tokenizer), [PAIR, PAIR]),
     PreferenceDataError, ["row 0, field 'completions[0]'", "non-finite log-prob"]),
    ("cli eval NaN adapter weights",  # gave an accuracy of 0.0 with no warning
     lambda env: cli(env, "eval", *model_args(env, damaged_copy(env, "nan_adapter", non_finite_weights(
         "adapter_model.safetensors", "lora_B"))), "-i", env.write("eval_nan_w.jsonl", lines(PAIR))), 2,
     ["nan_adapter/adapter_model.safetensors", "lora_B", "holds NaN values"]),
    ("cli eval infinite base model weight",
     lambda env: cli(env, "eval", env.saved.adapter, "--base-model", damaged_copy(
         env, "inf_base", non_finite_weights("model.safetensors", "wte", math.inf), source=env.saved.base),
         "--device", "cpu", "-i", env.write("eval_inf_w.jsonl", lines(PAIR))), 2,
     ["inf_base/model.safetensors", "tensor 'transformer.wte.weight' holds infinite values"]),
    ("cli score NaN base model bias",
     lambda env: cli(env, "score", env.saved.adapter, "--base-model", damaged_copy(
         env, "nan_bias_base", non_finite_weights("model.safetensors", "ln_f.bias"), source=env.saved.base),
         "--device", "cpu", "-i", env.write("score_ok.jsonl", lines(PAIR)), "-o", env.tmp / "scored.jsonl"), 2,
     ["nan_bias_base/model.safetensors", "ln_f.bias", "holds NaN values"]),
    # -- issue 19: dpo-ext train / validate inputs and model loading --
    ("cli train a masked LM", lambda env: train_cli(env, model=masked_lm_folder(env)), 2,
     ["--model_name_or_path", "masked_lm", "BertForMaskedLM", "not a causal LM"]),
    ("cli train a model saved with LoRA layers inside",
     lambda env: train_cli(env, model=lora_layers_folder(env)), 2,
     ["lora_layers", "weights missing from the checkpoint", "attn.c_attn.weight", "saved with LoRA layers"]),
    ("cli train pickle-only model", lambda env: train_cli(env, model=pickled_model_folder(env)), 2,
     ["pickled_model has pytorch_model.bin but no model.safetensors", "save_pretrained(NEW_FOLDER)"]),
    ("cli train missing split", lambda env: train_cli(env, "--dataset_train_split", "nope", data=saved_splits(env)),
     2, ["--dataset_train_split", "splits_folder has no split 'nope'", "train"]),
    ("cli train names the file line after blank lines",
     lambda env: train_cli(env, data=env.write("train_lines.jsonl", lines(PAIR, "", "", {**PAIR, "prompt": ""}))),
     2, ["train_lines.jsonl, line 4, field 'prompt'", "empty prompt"]),
    ("cli train names the line of a row the tokenizer refuses",
     lambda env: train_cli(env, data=env.write("merging.jsonl", lines(PAIR, "", {**PAIR, "prompt": "the"}))),
     2, ["merging.jsonl, line 3, field 'prompt'", "gives no token of its own"]),
    ("cli validate text and chat prompts mixed",
     lambda env: cli(env, "validate", env.write("mixed_prompts.jsonl", lines(
         PAIR, {"prompt": user("hi"), "chosen": assistant("good"), "rejected": assistant("bad")}))),
     1, ["mixed_prompts.jsonl, line 2, field 'prompt'", "a list of dict where the rows before hold a str"]),
    ("ultrafeedback rating off its 1-5 scale", lambda env: ultrafeedback_rows(rating="9"), PreferenceDataError,
     ["row 1, field 'completions[1].annotations.honesty.Rating'", "off the 1-5 scale", "'9'"]),
    ("trainer model folder saved with LoRA layers inside",
     lambda env: env.trainer(model=str(lora_layers_folder(env))), ValueError,
     ["lora_layers", "weights missing from the checkpoint", "saved with LoRA layers"]),
    # -- issue 19: cards --
    ("push license the Hub does not know", lambda env: push(env, license="apache2"), ValueError,
     ["license 'apache2'", "not a license id the Hub knows", "apache-2.0", "repositories-licenses"]),
    ("push license other", lambda env: push(env, license="other"), ValueError,
     ["license 'other'", "license_name", "repositories-licenses"]),
    ("cli push license the Hub does not know", lambda env: push_cli(env, "--license", "Apache 2"), 2,
     ["dpo-ext push: error: license 'Apache 2' is not a license id the Hub knows"]),
    ("push data license the Hub does not know",
     lambda env: push_preference_dataset(data_folder(env, "prefs_license", {"train.jsonl": json.dumps(
         {"prompt": "p", "chosen": "a", "rejected": "b"}) + "\n"}), "alice/prefs", dry_run=env.tmp / "staging",
         license="gnu"), ValueError, ["license 'gnu'", "not a license id the Hub knows"]),
    # -- issue 20: dpo-ext label --
    ("cli label a file of pairs, no completions",
     lambda env: label_cli(env, "label_pairs.jsonl", PAIR, judge="py:json:loads"), 2,
     ["dpo-ext label: error: ", "label_pairs.jsonl, line 1, field 'completions'", "missing", "chosen, prompt"]),
    ("cli label a row without a prompt",
     lambda env: label_cli(env, "label_no_prompt.jsonl", LABEL_ROW, {"completions": ["good"]}, judge="py:json:loads"),
     2, ["label_no_prompt.jsonl, line 2, field 'prompt'", "missing"]),
    ("cli label K = 0", lambda env: label_cli(env, "label_k0.jsonl", LABEL_ROW, "", {**LABEL_ROW, "completions": []},
                                              judge="py:json:loads"), 2,
     ["label_k0.jsonl, line 3, field 'completions'", "empty list of completions"]),
    ("cli label a reward model with two outputs",
     lambda env: label_cli(env, "label_rm2.jsonl", LABEL_ROW, judge=f"rm:{reward_model_folder(env, 2)}"), 2,
     ["dpo-ext label: error: reward model '", "rm_2_outputs'", "has 2 outputs", "num_labels=1"]),
    ("cli label a causal LM as the reward model",
     lambda env: label_cli(env, "label_lm.jsonl", LABEL_ROW, judge=f"rm:{env.saved.base}"), 2,
     ["GPT2LMHeadModel, not a sequence-classification reward model"]),
    ("cli label unknown judge kind", lambda env: label_cli(env, "label_kind.jsonl", LABEL_ROW, judge="gpt4:judge"), 2,
     ["judge 'gpt4:judge': unknown kind 'gpt4'", "rm:PATH_OR_HUB_ID", "implicit:ADAPTER", "py:module:function"]),
    ("cli label a judge folder without a kind",
     lambda env: label_cli(env, "label_bare.jsonl", LABEL_ROW, judge=str(env.saved.adapter)), 2,
     ["no KIND: prefix", "implicit:"]),
    ("cli label module that cannot be imported",
     lambda env: label_cli(env, "label_import.jsonl", LABEL_ROW, judge="py:no_such_judge_module:score"), 2,
     ["judge 'py:no_such_judge_module:score': cannot import module 'no_such_judge_module'", "PYTHONPATH"]),
    ("cli label module whose import fails",
     lambda env: label_cli(env, "label_broken.jsonl", LABEL_ROW, module="def score(:\n"), 2,
     ["cannot import module", "SyntaxError"]),
    ("cli label function missing from its module",
     lambda env: label_cli(env, "label_nofn.jsonl", LABEL_ROW, module="x = 1\n", function="nope"), 2,
     ["has no attribute 'nope'"]),
    ("cli label judge returns NaN",
     lambda env: label_cli(env, "label_nan.jsonl", LABEL_ROW, "", LABEL_ROW,
                           module="def score(p, c):\n    return [[1.0, float('nan')] for _ in p]\n"), 2,
     ["label_nan.jsonl, line 1, field 'completions[1]'", "the judge py:", "returned nan"]),
    ("cli label judge returns the wrong count",
     lambda env: label_cli(env, "label_count.jsonl", LABEL_ROW, LABEL_ROW,
                           module="def score(p, c):\n    return [[1.0] * (len(cs) + 1) for cs in c]\n"), 2,
     ["label_count.jsonl, line 1, field 'completions'", "returned 3 scores for the row's 2 completions"]),
    ("cli label judge returns text", lambda env: label_cli(env, "label_text.jsonl", LABEL_ROW, module=(
        "def score(p, c):\n    return [['good', 'bad'] for _ in p]\n")), 2,
     ["label_text.jsonl, line 1, field 'completions[0]'", "'good' (str), not a number"]),
    ("cli label batch size 0",
     lambda env: label_cli(env, "label_b0.jsonl", LABEL_ROW, judge="py:json:loads", extra=("--batch-size", "0")), 2,
     ["--batch-size must be at least 1, got 0"]),
    # -- issue 20: dpo-ext sample --
    ("cli sample a file without prompts", lambda env: sample_cli(env, "sample_no_prompt.jsonl", {"text": "hi"}), 2,
     ["dpo-ext sample: error: ", "sample_no_prompt.jsonl, line 1, field 'prompt'", "missing"]),
    ("cli sample an empty prompt",
     lambda env: sample_cli(env, "sample_empty.jsonl", {"prompt": "the movie"}, "", {"prompt": " "}), 2,
     ["sample_empty.jsonl, line 3, field 'prompt'", "empty prompt"]),
    ("cli sample K = 0", lambda env: sample_cli(env, "sample_k0.jsonl", {"prompt": "the"}, extra=("--k", "0")), 2,
     ["dpo-ext sample: error: --k must be at least 1 (completions per prompt), got 0"]),
    ("cli sample unreadable YAML",
     lambda env: sample_cli(env, "sample_yaml.jsonl", {"prompt": "the"}, extra=(
         "--config", env.write("gen_bad.yaml", "max_new_tokens: 8\ntemperature: [1.0\n"))), 2,
     ["gen_bad.yaml, line 3", "not valid YAML"]),
    ("cli sample generation field that does not exist",
     lambda env: sample_cli(env, "sample_field.jsonl", {"prompt": "the"}, extra=(
         "--config", env.write("gen_field.yaml", "max_new_tokens: 8\ntemprature: 0.7\n"))), 2,
     ["gen_field.yaml, line 2, field 'temprature'", "not a GenerationConfig field"]),
    ("cli sample YAML that is not a mapping",
     lambda env: sample_cli(env, "sample_list.jsonl", {"prompt": "the"}, extra=(
         "--config", env.write("gen_list.yaml", "- 8\n"))), 2, ["gen_list.yaml, line 1", "expected a mapping"]),
    # -- issue 19: found by trying the README --
    ("cli validate a BOM-prefixed JSONL file (Windows editors write one)",  # refused: "Unexpected UTF-8 BOM"
     lambda env: cli(env, "validate", env.write("bom.jsonl", "\ufeff" + lines(PAIR))), 0,
     ["bom.jsonl: 1 rows, 1 usable", "OK"]),
    ("cli validate a CSV row is named from 1",
     lambda env: cli(env, "validate", env.write("list.csv", 'prompt,completions,ranks\nthe movie,"[1]","[0]"\n')), 1,
     ["list.csv, row 1, field 'completions'"]),
    ("cli validate a folder that is not a saved dataset",  # datasets' message, with nothing to do
     lambda env: cli(env, "validate", data_folder(env, "not_a_dataset", {"train.jsonl": lines(PAIR)})), 2,
     ["not_a_dataset is a folder but not a saved dataset", "save_to_disk", ".jsonl"]),
    ("cli eval --benchmark --split on a local file",  # the split was ignored: the file's rows were scored
     lambda env: bench_cli(env, "rewardbench", env.write("rb_split.jsonl", lines(RB1_ROW)), "--split", "test"), 2,
     ["rb_split.jsonl is a file, which holds one split", "'test'"]),
    ("cli train --dataset_train_split on a single file",
     lambda env: train_cli(env, "--dataset_train_split", "test", data=env.write("one_split.jsonl", lines(PAIR))), 2,
     ["one_split.jsonl is a file, which holds one split", "'test'"]),
    ("cli train row longer than the model names the file line",  # "train dataset, row 1": a plain ValueError
     lambda env: train_cli(env, data=env.write("train_long.jsonl", lines(PAIR, "", {
         **PAIR, "chosen": " ".join(["good"] * 80)}))), 2, ["train_long.jsonl, line 3", "64 positions"]),
    ("cli score --reference-free with --ref-model",  # the reference was loaded and silently unused
     lambda env: run_cli(env, "score", "free_ref.jsonl", PAIR, extra=["--reference-free", "--ref-model",
                                                                     env.saved.base]), 2,
     ["--reference-free", "--ref-model", "give one of them"]),
    ("cli score --max-batch-tokens 0",  # accepted: 0 read as the default
     lambda env: cli(env, "score", env.tmp / "no_model", "-i", env.write("ok.jsonl", lines(PAIR)), "-o",
                     env.tmp / "o.jsonl", "--max-batch-tokens", "0"), 2, ["--max-batch-tokens: must be at least 1"]),
    ("cli score --max-length 1 names the flag before the model loads",
     lambda env: cli(env, "score", env.tmp / "no_model", "-i", env.write("ok.jsonl", lines(PAIR)), "-o",
                     env.tmp / "o.jsonl", "--max-length", "1"), 2, ["--max-length: must be at least 2"]),
    ("cli score --device on a GPU this machine lacks",  # a traceback, exit 1
     lambda env: cli(env, "score", env.saved.adapter, "--base-model", env.saved.base, "--device", "cuda:99", "-i",
                     env.write("ok.jsonl", lines(PAIR)), "-o", env.tmp / "o.jsonl"), 2,
     ["dpo-ext score: error: device 'cuda:99'"]),
    ("cli score --device torch does not know",  # a traceback, exit 1
     lambda env: cli(env, "score", env.saved.adapter, "--device", "gpu", "-i", env.write("ok.jsonl", lines(PAIR)),
                     "-o", env.tmp / "o.jsonl"), 2, ["device 'gpu' is not a device torch knows", "cuda:N"]),
    ("cli score output is the input file",  # the input rows were replaced by the scores
     lambda env: run_cli(env, "score", "in_place.jsonl", PAIR, extra=["-o", env.tmp / "in_place.jsonl"]), 2,
     ["in_place.jsonl is the input file", "give another file"]),
    ("cli eval output is the input file",
     lambda env: run_cli(env, "eval", "in_place.jsonl", PAIR, output=False, extra=["-o", env.tmp / "in_place.jsonl"]),
     2, ["in_place.jsonl is the input file"]),
    ("scorer max_batch_tokens 0", lambda env: env.scorer(max_batch_tokens=0), SettingError,
     ["max_batch_tokens", "at least 1"]),
    ("cli push --eval-results a folder",  # IsADirectoryError traceback, exit 1
     lambda env: push_cli(env, "--eval-results", data_folder(env, "results_dir", {})), 2,
     ["eval results", "results_dir is a folder, not a file"]),
    ("cli push --plot a folder",  # "does not exist"
     lambda env: push_cli(env, "--plot", data_folder(env, "plots_dir", {})), 2, ["plot", "plots_dir is a folder"]),
    ("cli push --eval-results missing names the flag's input",  # "[Errno 2] No such file or directory"
     lambda env: push_cli(env, "--eval-results", env.tmp / "no_results.json"), 2,
     ["eval results", "no_results.json does not exist"]),
    ("cli push-dataset a file instead of the folder",  # "data folder ... does not exist"
     lambda env: cli(env, "push-dataset", env.write("rows_file.jsonl", lines(PAIR)), "--repo-id", "alice/prefs",
                     "--dry-run", env.tmp / "staging"), 2, ["rows_file.jsonl is a file", "the folder that holds it"]),
    # -- issue 20: sampling settings, refused before a model loads --
    ("cli rerank top-p above 1",
     lambda env: run_cli(env, "rerank", "rerank_top_p.jsonl", {"prompt": "the "}, extra=("--top-p", "2")), 2,
     ["top_p=2.0", "in (0, 1]"]),
    ("cli rerank temperature 0",
     lambda env: run_cli(env, "rerank", "rerank_temp.jsonl", {"prompt": "the "}, extra=("--temperature", "0")), 2,
     ["temperature=0.0", "above 0"]),
    ("cli sample top-k negative",
     lambda env: cli(env, "sample", env.saved.adapter, "--base-model", env.saved.base, "-i",
                     env.write("sample_top_k.jsonl", lines({"prompt": "the "})), "-o", env.tmp / "s.jsonl",
                     "--top-k", "-1"), 2, ["top_k=-1", "whole number >= 0"]),
    ("cli iterate temperature 0", lambda env: iterate_cli(env, "--temperature", "0"), 2, ["temperature=0.0"]),
    # -- issue 20: dpo-ext iterate --
    ("cli iterate prompts file without a prompt",
     lambda env: iterate_cli(env, prompts=env.write("no_prompt.jsonl", lines({"prompt": "the movie was "}, "",
                                                                              {"text": "the plot"}))),
     2, ["no_prompt.jsonl, line 3, field 'prompt'", "missing"]),
    ("cli iterate k below 2", lambda env: iterate_cli(env, "--k", "1"), 2, ["k must be at least 2", "1"]),
    ("cli iterate self-rewarding without a starting adapter", lambda env: iterate_cli(env, "--judge", "self",
                                                                                      "--eval_judge", "py:math:fsum"),
     2, ["judge='self'", "pass start_adapter"]),
    ("cli iterate without --prompts", lambda env: iterate_cli(env, prompts=""), 2, ["--prompts is required"]),
    ("cli iterate without a LoRA", lambda env: iterate_cli(env, use_peft=False), 2, ["add --use_peft",
                                                                                     "--start_adapter"]),
    ("cli iterate unknown judge kind", lambda env: iterate_cli(env, "--judge", "gpt4"), 2,
     ["judge 'gpt4'", "no KIND: prefix"]),
    # -- issue 19: last loose ends --
    ("cli validate --max-prompt-length without --max-length",  # unknown flag: validate could not check the setting
     lambda env: cli(env, "validate", env.write("mpl.jsonl", lines(PAIR)), "--max-prompt-length", "4"), 2,
     ["--max-prompt-length (4) must be below --max-length (None)", "give --max-length"]),
    ("cli validate --max-prompt-length not below --max-length",
     lambda env: cli(env, "validate", env.write("mpl.jsonl", lines(PAIR)), "--max-length", "16",
                     "--max-prompt-length", "16"), 2, ["--max-prompt-length (16) must be below --max-length (16)"]),
    ("cli validate a CSV list column",  # "expected a list, got str", nothing on why a list is text
     lambda env: cli(env, "validate", env.write("list_column.csv", CSV_LIST_COLUMN)), 1,
     ["list_column.csv, row 1, field 'completions'", "expected a list, got str", "CSV cells are plain text",
      "JSONL or Parquet"]),
    ("cli train a CSV list column", lambda env: train_cli(env, data=env.write("train_list.csv", CSV_LIST_COLUMN)), 2,
     ["train_list.csv, row 1, field 'completions'", "CSV cells are plain text"]),
    ("cli push-dataset a BOM-prefixed JSONL file",  # refused: "line 1: not valid JSON" (validate and train read it)
     lambda env: cli(env, "push-dataset", data_folder(env, "bom_data", {"train.jsonl": "\ufeff" + lines(PAIR, PAIR)}),
                     "--repo-id", "alice/prefs", "--dry-run", env.tmp / "staging"), 0, ["pairwise/train.jsonl"]),
    ("cli push-dataset names Parquet rows from 1",  # "row 1" for the second row: validate and train say "row 2"
     lambda env: cli(env, "push-dataset", parquet_folder(env, "bad_rows", [PAIR, {**PAIR, "chosen": " "}]),
                     "--repo-id", "alice/prefs", "--dry-run", env.tmp / "staging"), 2,
     ["train.parquet, row 2, field 'chosen'"]),
    ("cli validate a UTF-16 JSONL file",  # "'utf-8' codec can't decode byte 0xff": no file, nothing to do
     lambda env: cli(env, "validate", env.write_bytes("utf16.jsonl", lines(PAIR).encode("utf-16"))), 2,
     ["utf16.jsonl: not UTF-8 text", "save it as UTF-8"]),
    ("cli push-dataset a UTF-16 JSONL file",  # the same bare codec message
     lambda env: cli(env, "push-dataset", data_folder_bytes(env, "utf16_data", lines(PAIR).encode("utf-16")),
                     "--repo-id", "alice/prefs", "--dry-run", env.tmp / "staging"), 2,
     ["utf16_data/train.jsonl: not UTF-8 text", "save it as UTF-8"]),
    ("cli score a file named .parquet that is not Parquet",  # "Parquet magic bytes not found": which file?
     lambda env: cli(env, "score", env.saved.adapter, "--base-model", env.saved.base, "-i",
                     env.write("rows.parquet", "prompt,chosen,rejected\n"), "-o", env.tmp / "o.jsonl"), 2,
     ["rows.parquet: not a readable Parquet file"]),
    ("cli validate a CSV separated by semicolons",  # "field 'prompt': missing", with the prompt right there
     lambda env: cli(env, "validate", env.write("semicolons.csv", "prompt;chosen;rejected\nthe movie ;good;bad\n")),
     1, ["semicolons.csv, row 1, field 'prompt': missing", "one column, 'prompt;chosen;rejected'",
         "separated by commas"]),
    ("cli eval a .json file holding one object over several lines",  # "line 1: not valid JSON"
     lambda env: cli(env, "eval", env.saved.adapter, "--base-model", env.saved.base, "-i",
                     env.write("pretty.json", json.dumps({"rows": [PAIR]}, indent=1))), 2,
     ["pretty.json: one JSON object over several lines", "under 'rows'", "JSON array of row objects"]),
    # -- issue 22: the CLI --
    # A missing rows.jsonl (named as typed: relative, like a Hub id) was "could not load the Hub dataset
    # 'missing.jsonl'": it is a file that is not there.
    ("cli score a missing input file", lambda env: run_missing(env, "score", *model_args(env), "-o", "o.jsonl"), 2,
     ["dpo-ext score: error: ", "missing.jsonl: no such file"]),
    ("cli rerank a missing input file", lambda env: run_missing(env, "rerank", *model_args(env), "-o", "o.jsonl"),
     2, ["dpo-ext rerank: error: ", "missing.jsonl: no such file"]),
    ("cli eval a missing input file", lambda env: run_missing(env, "eval", *model_args(env)), 2,
     ["dpo-ext eval: error: ", "missing.jsonl: no such file"]),
    ("cli validate a missing file", lambda env: cli(env, "validate", "missing.jsonl"), 2,
     ["dpo-ext validate: error: ", "missing.jsonl: no such file"]),
    ("cli label a missing file",
     lambda env: cli(env, "label", "missing.jsonl", "--judge", "py:os:getcwd", "-o", env.tmp / "o.jsonl"),
     2, ["dpo-ext label: error: ", "missing.jsonl: no such file"]),
    ("cli sample a missing prompts file",
     lambda env: run_missing(env, "sample", env.saved.adapter, "--base-model", env.saved.base, "-o", "o.jsonl",
                             "--k", "2"), 2, ["dpo-ext sample: error: ", "missing.jsonl: no such file"]),
    ("cli train a missing dataset file",
     lambda env: cli(env, "train", "--dataset_name", "missing.jsonl", "--model_name_or_path",
                     env.saved.base, "--output_dir", env.tmp / "out"), 2,
     ["dpo-ext train: error: ", "missing.jsonl: no such file"]),
    ("cli iterate a missing prompts file",
     lambda env: cli(env, "iterate", "--prompts", "missing.jsonl", "--model_name_or_path", env.saved.base,
                     "--use_peft", "--judge", "py:os:getcwd", "--output_dir", env.tmp / "out"), 2,
     ["dpo-ext iterate: error: ", "missing.jsonl: no such file"]),
    ("cli push-dataset a missing file",
     lambda env: cli(env, "push-dataset", "missing.jsonl", "--repo-id", "alice/prefs", "--dry-run",
                     env.tmp / "staging"), 2, ["dpo-ext push-dataset: error: ", "missing.jsonl", "no such file"]),
    ("cli train a missing --config file",  # TrlParser's own open(): "[Errno 2] No such file or directory"
     lambda env: cli(env, "train", "--config", env.tmp / "missing.yaml"), 2,
     ["dpo-ext train: error: --config ", "missing.yaml: no such file"]),
]


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tokenizer) -> Saved:
    root = tmp_path_factory.mktemp("saved")
    base, adapter = root / "base", root / "adapter"
    make_model(tokenizer).save_pretrained(base)
    tokenizer.save_pretrained(base)
    get_peft_model(make_model(tokenizer), LoraConfig(**LORA)).save_pretrained(adapter)
    rewrite_json(adapter / "adapter_config.json", base_model_name_or_path=BASE_MODEL_ID)
    tokenizer.save_pretrained(adapter)
    (adapter / "training_config.json").write_text(json.dumps({"beta": 0.1}))  # as PLDPOTrainer writes it
    return Saved(base, adapter)


@pytest.fixture
def env(tmp_path, tokenizer, saved):
    return Env(tmp_path, tokenizer, saved)


@pytest.mark.parametrize("name, run, expected, fragments", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_named(env, capsys, name, run, expected, fragments):
    if isinstance(expected, int):
        assert run(env) == expected
        captured = capsys.readouterr()
        message = captured.err + captured.out  # validate prints its report on stdout
    else:
        with pytest.raises(expected) as info:
            run(env)
        message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{name}: {fragment!r} not in {message!r}"


def test_enough_cases():
    assert len(CASES) >= 60
    assert len({c[0] for c in CASES}) == len(CASES), "case names must be unique (they are the test ids)"


# -- issue 19: dpo-ext train / validate inputs and model loading (helpers) -----------------------------------------

def train_cli(env: Env, *extra, data=None, model=None) -> int:
    """`dpo-ext train` for one LoRA step on the saved base (or `model`), on `data` (a valid file by default)."""
    data = data or env.write("train_rows.jsonl", lines(*pairwise_rows(4)))
    return cli(env, "train", "--model_name_or_path", model or env.saved.base, "--dataset_name", data,
               "--dataset_test_split", "none", "--use_peft", "--lora_r", "4", "--lora_target_modules", "c_attn",
               "--max_steps", "1", "--per_device_train_batch_size", "2", "--use_cpu", "--report_to", "none",
               "--save_strategy", "no", "--output_dir", env.tmp / "out", *extra)


def masked_lm_folder(env: Env) -> Path:
    """A BERT masked LM built from a config and saved, with the test tokenizer (AutoModelForCausalLM loads it)."""
    from transformers import BertConfig, BertForMaskedLM

    folder = env.tmp / "masked_lm"
    BertForMaskedLM(BertConfig(vocab_size=len(env.tokenizer), hidden_size=32, num_hidden_layers=1,
                               num_attention_heads=2, intermediate_size=64)).save_pretrained(folder)
    env.tokenizer.save_pretrained(folder)
    return folder


def lora_layers_folder(env: Env) -> Path:
    """What the README once did: `save_pretrained()` on a model that `get_peft_model()` had put LoRA layers into."""
    folder = env.tmp / "lora_layers"
    model = make_model(env.tokenizer)
    get_peft_model(model, LoraConfig(**LORA))
    model.save_pretrained(folder)
    env.tokenizer.save_pretrained(folder)
    return folder


def pickled_model_folder(env: Env) -> Path:
    folder = env.tmp / "pickled_model"
    shutil.copytree(env.saved.base, folder)
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"not a pickle: never opened")
    return folder


def saved_splits(env: Env) -> Path:
    folder = env.tmp / "splits_folder"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(pairwise_rows(4))}).save_to_disk(folder)
    return folder


def ultrafeedback_rows(rating: str):
    """`to_ranked_rows` of two records in UltraFeedback's published schema, one honesty rating of the second set to
    ``rating``."""
    from fixtures import load_recipe

    uf = load_recipe("ultrafeedback").uf

    def completion(response, value="3"):
        return {"response": response, "annotations": {aspect: {"Rating": value} for aspect in uf.ASPECTS}}

    records = [{"instruction": "the movie was", "completions": [completion("good", "5"), completion("bad")]}
               for _ in range(2)]
    records[1]["completions"][1]["annotations"]["honesty"]["Rating"] = rating
    return uf.to_ranked_rows(records)


# -- issue 20: dpo-ext sample (helpers) -------------------------------------------------------------------------------

def sample_cli(env: Env, name: str, *rows, extra=()) -> int:
    """`dpo-ext sample` on the saved adapter, with `rows` written to the input file `name` (inputs fail before it
    loads)."""
    return cli(env, "sample", env.saved.adapter, "--base-model", env.saved.base, "-i", env.write(name, lines(*rows)),
               "-o", env.tmp / "samples.jsonl", *extra)


# -- issue 20: dpo-ext label (helpers) --------------------------------------------------------------------------------

LABEL_ROW = {"prompt": "the movie was ", "completions": ["good", "bad"]}


def label_cli(env: Env, name: str, *rows, judge=None, module=None, function="score", extra=()) -> int:
    """`dpo-ext label` on a file of ``rows``; the judge is ``judge``, or ``function`` of a module written from the
    text ``module`` into the case's folder (named after the file, put on ``sys.path`` for the call only)."""
    import sys

    if module is not None:
        module_name = name.removesuffix(".jsonl")
        env.write(f"{module_name}.py", module)
        judge = f"py:{module_name}:{function}"
        sys.path.insert(0, str(env.tmp))
    try:
        return cli(env, "label", env.write(name, lines(*rows)), "--judge", judge, "-o", env.tmp / "labelled.jsonl",
                   "--device", "cpu", *extra)
    finally:
        if module is not None:
            sys.path.remove(str(env.tmp))
            sys.modules.pop(name.removesuffix(".jsonl"), None)


def reward_model_folder(env: Env, num_labels: int) -> Path:
    from fixtures import save_reward_model

    folder = save_reward_model(env.tokenizer, env.tmp / f"rm_{num_labels}_outputs", num_labels=num_labels)
    env.tokenizer.save_pretrained(folder)
    return folder


# -- issue 20: dpo-ext iterate (helpers) ------------------------------------------------------------------------------

def iterate_cli(env: Env, *extra, prompts=None, use_peft=True) -> int:
    """`dpo-ext iterate` for one round on the saved base: every case fails before anything is sampled."""
    prompts = env.write("prompts.jsonl", lines({"prompt": "the movie was "})) if prompts is None else prompts
    # the judge: any importable function passes the spec check; no case gets as far as calling it
    return cli(env, "iterate", "--model_name_or_path", env.saved.base, "--prompts", prompts, "--judge",
               "py:math:fsum", "--rounds", "1", *(["--use_peft", "--lora_target_modules", "c_attn"]
                                                         if use_peft else []),
               "--use_cpu", "--report_to", "none", "--output_dir", env.tmp / "rounds", *extra)


# -- issue 19: last loose ends (helpers) -------------------------------------------------------------------------------

CSV_LIST_COLUMN = 'prompt,completions,ranks\nthe movie was ,"[""good"", ""bad""]","[0, 1]"\n'  # lists as cell text


def data_folder_bytes(env: Env, name: str, data: bytes) -> Path:
    """A folder holding ``train.jsonl`` with the bytes ``data``."""
    folder = env.tmp / name
    folder.mkdir()
    (folder / "train.jsonl").write_bytes(data)
    return folder


def parquet_folder(env: Env, name: str, rows: list) -> Path:
    """A folder holding ``train.parquet`` with ``rows``."""
    folder = env.tmp / name
    datasets.Dataset.from_list(rows).to_parquet(folder / "train.parquet")
    return folder
