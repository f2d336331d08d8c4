"""`dpo-ext validate` and `dpo-ext train` accept exactly the same files: one table of files, both commands run on each.

Each row of `FILES` is ``(name, JSONL lines, accepted, fragment, lengths)``: ``validate`` (with the model's tokenizer)
must exit 0 for an accepted file and 1 otherwise, ``train`` (one step) 0 or 2, and for a rejected file both must print
the fragment (which names the file line and the field where there is one). For an accepted file, the rows validate
calls usable are the rows train trains on, and the prompts it says would be cut are the prompts train cuts. ``lengths``
are the length settings both run with (``max_length``, ``max_prompt_length``), as ``--max-length`` and
``--max-prompt-length`` for validate and ``--max_length`` and ``--max_prompt_length`` for train.
"""

import json
import logging
import re

import pytest
from fixtures import make_model

from dpo_ext.cli import main

CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'] }} {{ m['content'] }} <eos> {% endfor %}"
                 "{% if add_generation_prompt %}assistant {% endif %}")
RANKED = {"prompt": "the movie was ", "completions": ["good fun", "bad", "awful"], "ranks": [0, 1, 2]}
PAIR = {"prompt": "the plot was ", "chosen": "good", "rejected": "boring"}
LONG = {"prompt": "the movie was " * 6, "chosen": "good", "rejected": "bad"}  # an 18-token prompt
CHAT = {"prompt": [{"role": "user", "content": "the movie"}],
        "chosen": [{"role": "assistant", "content": "good"}], "rejected": [{"role": "assistant", "content": "bad"}]}

FILES = [
    ("ranked", [RANKED, RANKED], True, None, {}),
    ("ranked then pairwise", [RANKED, PAIR, RANKED], True, None, {}),
    ("pairwise then ranked", [PAIR, RANKED], True, None, {}),
    ("chat rows", [CHAT, CHAT], True, None, {}),
    ("blank lines before a bad row", [RANKED, "", "", {**PAIR, "prompt": ""}], False,
     "blank_lines_before_a_bad_row.jsonl, line 4, field 'prompt'", {}),
    ("one completion", [RANKED, {"prompt": "the film ", "completions": ["good"], "ranks": [0]}], False,
     "one_completion.jsonl, line 2, field 'completions'", {}),
    ("text and chat prompts mixed", [PAIR, CHAT], False, "text_and_chat_prompts_mixed.jsonl, line 2, field 'prompt'",
     {}),
    ("prompt merging into the completion", [RANKED, {"prompt": "the", "chosen": "movie", "rejected": "good"}], False,
     "prompt_merging_into_the_completion.jsonl, line 2, field 'prompt'", {}),
    ("no preference left", [{**PAIR, "rejected": "good"}] * 2, False, "no usable row", {}),
    # The same file both ways: a prompt that alone reaches max_length drops its row, unless max_prompt_length cuts it
    ("a long prompt dropped", [RANKED, LONG, PAIR], True, None, {"max_length": 12}),
    ("a long prompt cut", [RANKED, LONG, PAIR], True, None, {"max_length": 12, "max_prompt_length": 6}),
    ("only long prompts dropped", [LONG, LONG], False, "no usable row", {"max_length": 12}),
    ("only long prompts cut", [LONG, LONG], True, None, {"max_length": 12, "max_prompt_length": 6}),
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


@pytest.mark.parametrize("name, rows, accepted, fragment, lengths", FILES, ids=[f[0] for f in FILES])
def test_validate_and_train_accept_the_same_files(base, tmp_path, capsys, caplog, monkeypatch, name, rows, accepted,
                                                  fragment, lengths):
    import dpo_ext.training.setup as setup

    path = tmp_path / f"{name.replace(' ', '_')}.jsonl"
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    trained_rows = []

    def prepare(*args, **kwargs):  # the trainer's own preparation, counting the rows it returns
        dataset = prepare_ranked_dataset(*args, **kwargs)
        trained_rows.append(len(dataset))
        return dataset

    prepare_ranked_dataset = setup.prepare_ranked_dataset
    monkeypatch.setattr(setup, "prepare_ranked_dataset", prepare)

    validated = main(["validate", str(path), "--tokenizer", str(base)] +
                     [a for key, value in lengths.items() for a in (f"--{key.replace('_', '-')}", str(value))])
    validate_out = capsys.readouterr().out
    with caplog.at_level(logging.WARNING, logger="dpo_ext"):
        trained = main(["train", "--model_name_or_path", str(base), "--dataset_name", str(path), "--dataset_test_split",
                        "none", "--use_peft", "--lora_r", "4", "--lora_target_modules", "c_attn", "--max_steps", "1",
                        "--per_device_train_batch_size", "2", "--use_cpu", "--report_to", "none", "--save_strategy",
                        "no", "--output_dir", str(tmp_path / "out")] +
                       [a for key, value in lengths.items() for a in (f"--{key}", str(value))])
    train_err = capsys.readouterr().err

    assert (validated, trained) == ((0, 0) if accepted else (1, 2)), (validate_out, train_err)
    if accepted:
        assert trained_rows == [int(re.search(r"(\d+) usable for training", validate_out).group(1))], validate_out
        validate_cut = re.search(r"cut (\d+) prompts", validate_out)
        train_cut = re.search(r"cut (\d+) of \d+ prompts", caplog.text)
        assert (validate_cut and validate_cut.group(1)) == (train_cut and train_cut.group(1)), (validate_out,
                                                                                                caplog.text)
        assert ("max_prompt_length" in lengths) == bool(validate_cut)
    if not accepted:
        assert fragment in validate_out
        assert fragment in train_err and "Traceback" not in train_err
        assert [line for line in train_err.splitlines() if line.startswith("dpo-ext")] == \
            [f"dpo-ext train: error: {train_err.split('dpo-ext train: error: ')[1].strip()}"]  # one line
