"""`dpo-ext validate` and `dpo-ext train` accept exactly the same files: one table of files, both commands run on each.

Each row of `FILES` is ``(name, JSONL lines, accepted, fragment)``: ``validate`` (with the model's tokenizer) must
exit 0 for an accepted file and 1 otherwise, ``train`` (one step) 0 or 2, and for a rejected file both must print the
fragment (which names the file line and the field where there is one).
"""

import json

import pytest

from fixtures import make_model
from dpo_ext.cli import main

CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'] }} {{ m['content'] }} <eos> {% endfor %}"
                 "{% if add_generation_prompt %}assistant {% endif %}")
RANKED = {"prompt": "the movie was ", "completions": ["good fun", "bad", "awful"], "ranks": [0, 1, 2]}
PAIR = {"prompt": "the plot was ", "chosen": "good", "rejected": "boring"}
CHAT = {"prompt": [{"role": "user", "content": "the movie"}],
        "chosen": [{"role": "assistant", "content": "good"}], "rejected": [{"role": "assistant", "content": "bad"}]}

FILES = [
    ("ranked", [RANKED, RANKED], True, None),
    ("ranked then pairwise", [RANKED, PAIR, RANKED], True, None),
    ("pairwise then ranked", [PAIR, RANKED], True, None),
    ("chat rows", [CHAT, CHAT], True, None),
    ("blank lines before a bad row", [RANKED, "", "", {**PAIR, "prompt": ""}], False,
     "blank_lines_before_a_bad_row.jsonl, line 4, field 'prompt'"),
    ("one completion", [RANKED, {"prompt": "the film ", "completions": ["good"], "ranks": [0]}], False,
     "one_completion.jsonl, line 2, field 'completions'"),
    ("text and chat prompts mixed", [PAIR, CHAT], False, "text_and_chat_prompts_mixed.jsonl, line 2, field 'prompt'"),
    ("prompt merging into the completion", [RANKED, {"prompt": "the", "chosen": "movie", "rejected": "good"}], False,
     "prompt_merging_into_the_completion.jsonl, line 2, field 'prompt'"),
    ("no preference left", [{**PAIR, "rejected": "good"}] * 2, False, "no usable row"),
]


@pytest.fixture(scope="module")
def base(tokenizer, tmp_path_factory):
    folder = tmp_path_factory.mktemp("agree") / "base"
    make_model(tokenizer).save_pretrained(folder)
    tokenizer.chat_template = CHAT_TEMPLATE
    try:
        tokenizer.save_pretrained(folder)
    finally:
        tokenizer.chat_template = None  # the tokenizer is shared by the whole session
    return folder


@pytest.mark.parametrize("name, rows, accepted, fragment", FILES, ids=[f[0] for f in FILES])
def test_validate_and_train_accept_the_same_files(base, tmp_path, capsys, name, rows, accepted, fragment):
    path = tmp_path / f"{name.replace(' ', '_')}.jsonl"
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))

    validated = main(["validate", str(path), "--tokenizer", str(base)])
    validate_out = capsys.readouterr().out
    trained = main(["train", "--model_name_or_path", str(base), "--dataset_name", str(path), "--dataset_test_split",
                    "none", "--use_peft", "--lora_r", "4", "--lora_target_modules", "c_attn", "--max_steps", "1",
                    "--per_device_train_batch_size", "2", "--use_cpu", "--report_to",
                    "none", "--save_strategy", "no", "--output_dir", str(tmp_path / "out")])
    train_err = capsys.readouterr().err

    assert (validated, trained) == ((0, 0) if accepted else (1, 2)), (validate_out, train_err)
    if not accepted:
        assert fragment in validate_out
        assert fragment in train_err and "Traceback" not in train_err
        assert [line for line in train_err.splitlines() if line.startswith("dpo-ext")] == \
            [f"dpo-ext train: error: {train_err.split('dpo-ext train: error: ')[1].strip()}"]  # one line
