"""`dpo-ext sample` on a tiny saved model and adapter: the samples are the library's, fields are kept, and generation
settings come from YAML with the flags on top."""

import json

import pytest
from fixtures import save_base_and_adapter
from peft import PeftModel
from transformers import AutoModelForCausalLM

from dpo_ext.cli import main
from dpo_ext.sampling import sample_completions

PROMPTS = [{"prompt": "the movie was", "id": 1, "source": "a"}, {"prompt": "i saw it and", "id": 2},
           {"prompt": "they liked the", "id": 3}]


@pytest.fixture(scope="module")
def saved(tokenizer, tmp_path_factory):
    """A base model directory and a non-zero LoRA adapter saved on it (with the tokenizer in the base)."""
    return save_base_and_adapter(tokenizer, tmp_path_factory.mktemp("sample_models"), ["c_attn"], lora_scale=0.5,
                                 seed=1)


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_sample_an_adapter_writes_the_librarys_samples_and_keeps_fields(saved, tmp_path, tokenizer, capsys):
    out = tmp_path / "rows.jsonl"
    code = main(["sample", str(saved / "adapter"), "--base-model", str(saved / "base"), "-i",
                 _jsonl(tmp_path / "prompts.jsonl", PROMPTS), "-o", str(out), "--k", "3", "--seed", "4",
                 "--max-new-tokens", "6", "--device", "cpu"])
    assert code == 0
    rows = _read(out)
    policy = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(saved / "base"), saved / "adapter").eval()
    expected = sample_completions(policy, tokenizer, [p["prompt"] for p in PROMPTS], 3, {"max_new_tokens": 6}, seed=4)
    assert [r["completions"] for r in rows] == [s.texts for s in expected]
    assert [{k: v for k, v in r.items() if k != "completions"} for r in rows] == PROMPTS
    base = AutoModelForCausalLM.from_pretrained(saved / "base").eval()  # the adapter was on: the base samples others
    from_base = sample_completions(base, tokenizer, [p["prompt"] for p in PROMPTS], 3, {"max_new_tokens": 6}, seed=4)
    assert [s.texts for s in from_base] != [r["completions"] for r in rows]
    assert "Sampled 3 completions for each of 3 prompts" in capsys.readouterr().err


def test_sample_a_model_with_yaml_settings_and_flags_on_top(saved, tmp_path, tokenizer, capsys):
    config = tmp_path / "gen.yaml"
    config.write_text("max_new_tokens: 9\ntop_k: 5\ntemperature: 0.7\n")
    out = tmp_path / "rows.jsonl"
    code = main(["sample", str(saved / "base"), "-i", _jsonl(tmp_path / "prompts.jsonl", PROMPTS[:2]), "-o",
                 str(out), "--k", "1", "--config", str(config), "--max-new-tokens", "3", "--device", "cpu"])
    assert code == 0
    assert "training on ranked rows needs K >= 2" in capsys.readouterr().err
    model = AutoModelForCausalLM.from_pretrained(saved / "base").eval()
    expected = sample_completions(model, tokenizer, [p["prompt"] for p in PROMPTS[:2]], 1,
                                  {"max_new_tokens": 3, "top_k": 5, "temperature": 0.7}, seed=0)
    assert [r["completions"] for r in _read(out)] == [s.texts for s in expected]
    assert all(len(c) <= 3 for s in expected for c in s.completion_ids)


def test_sample_layout_flag_reaches_the_sampler(saved, tmp_path, tokenizer):
    """Prompts of different token lengths: the two layouts draw other samples, and the flag picks the library's."""
    prompts = [{"prompt": "the movie was "}, {"prompt": "the "}, {"prompt": "i saw it and the plot was "}]
    model = AutoModelForCausalLM.from_pretrained(saved / "base").eval()
    for layout in ("by_length", "padded"):
        out = tmp_path / f"{layout}.jsonl"
        assert main(["sample", str(saved / "base"), "-i", _jsonl(tmp_path / "mixed.jsonl", prompts), "-o", str(out),
                     "--k", "4", "--max-new-tokens", "5", "--layout", layout, "--device", "cpu"]) == 0
        expected = sample_completions(model, tokenizer, [p["prompt"] for p in prompts], 4, {"max_new_tokens": 5},
                                      seed=0, layout=layout)
        assert [r["completions"] for r in _read(out)] == [s.texts for s in expected]
    assert _read(tmp_path / "by_length.jsonl") != _read(tmp_path / "padded.jsonl")
