"""Anthropic HH (``Anthropic/hh-rlhf``) as preference rows, the way the DPO paper uses it (section 6.2).

Each published row is two whole transcripts, ``{"chosen": str, "rejected": str}``, written as
``"\\n\\nHuman: ...\\n\\nAssistant: ...\\n\\nHuman: ...\\n\\nAssistant: ..."``; the two share every turn but the last
assistant reply. The prompt is their common beginning up to and including its last ``"\\n\\nAssistant:"``, and the
responses are what follows it. The paper keeps single-turn dialogues (one human turn); `load_rows` does the same
and counts every row it leaves out, and why.
"""

import os

from dpo_ext import PreferenceDataError

HUMAN = "\n\nHuman:"
ASSISTANT = "\n\nAssistant:"
DATASET = "Anthropic/hh-rlhf"


def split_pair(chosen: str, rejected: str, row: int | None = None) -> dict:
    """``{"prompt", "chosen", "rejected"}`` from one published row's two transcripts.

    Raises:
        `PreferenceDataError` naming ``row`` when the transcripts share no ``"\\n\\nAssistant:"`` turn, so that no
        prompt can be told apart from the responses.
    """
    common = os.path.commonprefix([chosen, rejected])
    cut = common.rfind(ASSISTANT)
    if cut < 0:
        raise PreferenceDataError(
            "the chosen and rejected transcripts share no '\\n\\nAssistant:' turn, so the prompt cannot be split from "
            "the responses; each transcript must be the same dialogue up to its last '\\n\\nAssistant:'.",
            row, "rejected")
    end = cut + len(ASSISTANT)
    return {"prompt": chosen[:end], "chosen": chosen[end:], "rejected": rejected[end:]}


def is_single_turn(prompt: str) -> bool:
    """One human turn, then the assistant's: the dialogues the paper trains on."""
    return prompt.startswith(HUMAN) and prompt.count(HUMAN) == 1 and prompt.count(ASSISTANT) == 1


def to_rows(records: list[dict], single_turn: bool = True) -> tuple[list[dict], dict]:
    """Preference rows from published records, and counts of what was kept and left out (by reason).

    Left out: multi-turn dialogues (with ``single_turn``), and pairs whose responses are empty or identical (no
    preference to learn). A record whose transcripts cannot be split raises `PreferenceDataError` with its row.
    """
    rows, left_out = [], {"multi_turn": 0, "empty_response": 0, "identical_responses": 0}
    for index, record in enumerate(records):
        row = split_pair(record["chosen"], record["rejected"], index)
        if single_turn and not is_single_turn(row["prompt"]):
            left_out["multi_turn"] += 1
        elif not row["chosen"].strip() or not row["rejected"].strip():
            left_out["empty_response"] += 1
        elif row["chosen"] == row["rejected"]:
            left_out["identical_responses"] += 1
        else:
            rows.append(row)
    return rows, {"records": len(records), "kept": len(rows), "left_out": left_out}


def load_rows(split: str = "train", data_files: str | None = None, data_dir: str | None = None,
              single_turn: bool = True) -> tuple[list[dict], dict]:
    """`to_rows` of ``Anthropic/hh-rlhf`` (``data_dir``: one subset, e.g. ``"helpful-base"``), or of local files in
    its published schema (``data_files``: JSON lines with ``chosen`` and ``rejected``)."""
    from datasets import load_dataset

    if data_files is not None:
        records = load_dataset("json", data_files=data_files, split="train")
    else:
        records = load_dataset(DATASET, data_dir=data_dir, split=split)
    return to_rows(list(records), single_turn)
