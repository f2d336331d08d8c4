"""Anthropic HH (``Anthropic/hh-rlhf``) as preference rows, the way the DPO paper uses it (section 6.2).

Each published row is two whole transcripts, ``{"chosen": str, "rejected": str}``, written as
``"\\n\\nHuman: ...\\n\\nAssistant: ...\\n\\nHuman: ...\\n\\nAssistant: ..."``; the two share every turn but the last
assistant reply. The prompt is their common beginning up to and including its last ``"\\n\\nAssistant:"`` (for a
multi-turn dialogue, the whole history), and the responses are what follows it.

What the paper trains and evaluates on (its repository, ``eric-mitchell/direct-preference-optimization``,
``preference_datasets.py: get_hh``): SFT and DPO use every dialogue of the train split, multi-turn included; the
evaluation uses the single-turn dialogues of the test split (``single_turn=True`` here).

Left out, and counted by reason (`to_rows`):

- ``diverged_before_last_turn``: the two transcripts part before the last assistant turn, so each "response" would
  hold a ``"\\n\\nHuman: ..."`` turn and the model would learn to write the human's lines. Such a pair is dropped,
  not split: nothing in it says which of the two different histories the preference is about. (The paper's code
  takes the prompt from the chosen transcript alone and keeps such a pair with a misaligned rejected text.)
- ``multi_turn`` (with ``single_turn`` only): more than one human turn. Whitespace before the first turn
  (``" \\n\\nHuman: ..."``) does not count as a turn.
- ``empty_response`` and ``identical_responses``: there is no preference to learn.

A malformed record (not an object, a missing field, a value that is not a string) raises
`dpo_ext.PreferenceDataError` naming the file and its 1-based line (local files) or the record's row, and the field.
"""

import os
from pathlib import Path

from dpo_ext import PreferenceDataError

HUMAN = "\n\nHuman:"
ASSISTANT = "\n\nAssistant:"
DATASET = "Anthropic/hh-rlhf"
FIELDS = ("chosen", "rejected")
LEFT_OUT = ("multi_turn", "diverged_before_last_turn", "empty_response", "identical_responses")


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


def diverges_before_last_turn(row: dict) -> bool:
    """Whether a response of a `split_pair` row holds a human turn: the transcripts parted before their last turn."""
    return HUMAN in row["chosen"] or HUMAN in row["rejected"]


def is_single_turn(prompt: str) -> bool:
    """One human turn, then the assistant's: the dialogues the paper evaluates on. Whitespace before the first turn
    is not a turn."""
    body = prompt.lstrip()
    # Stripped, the first turn starts "Human:" without its "\n\n": any HUMAN left is a second human turn
    return body.startswith(HUMAN.lstrip()) and HUMAN not in body and body.count(ASSISTANT) == 1


def check_record(record, where: str) -> None:
    """Raise `PreferenceDataError` (message starting with ``where``) unless ``record`` is an object whose ``chosen``
    and ``rejected`` are strings."""
    schema = 'each row of Anthropic/hh-rlhf is {"chosen": transcript, "rejected": transcript}, both strings'
    if not isinstance(record, dict):
        raise PreferenceDataError(f"{where}: expected a JSON object, got {type(record).__name__}; {schema}")
    for name in FIELDS:
        if name not in record:
            raise PreferenceDataError(f"{where}, field {name!r}: missing; {schema}")
        value = record[name]
        if not isinstance(value, str):
            kind = "null" if value is None else type(value).__name__
            raise PreferenceDataError(f"{where}, field {name!r}: expected a string (the whole transcript), got "
                                      f"{kind}; {schema}")


def to_rows(records: list, single_turn: bool = False, where: list[str] | None = None) -> tuple[list[dict], dict]:
    """Preference rows from published records, and counts of what was kept and left out (by reason, see the
    module docstring). ``single_turn``: keep single-turn dialogues only (the paper's evaluation set).

    Args:
        where (`list[str]`, *optional*): how to name each record in an error (``"train.jsonl, line 3"``); default
            ``"row i"``.

    Raises:
        `PreferenceDataError`: for a malformed record, or one whose transcripts cannot be split, naming it (``where``)
            and the field.
    """
    rows, left_out = [], dict.fromkeys(LEFT_OUT, 0)
    for index, record in enumerate(records):
        place = where[index] if where is not None else f"row {index}"
        check_record(record, place)
        try:
            row = split_pair(record["chosen"], record["rejected"])
        except PreferenceDataError as error:
            raise PreferenceDataError(f"{place}, field {error.field!r}: {error.problem}") from None
        if diverges_before_last_turn(row):
            left_out["diverged_before_last_turn"] += 1
        elif single_turn and not is_single_turn(row["prompt"]):
            left_out["multi_turn"] += 1
        elif not row["chosen"].strip() or not row["rejected"].strip():
            left_out["empty_response"] += 1
        elif row["chosen"] == row["rejected"]:
            left_out["identical_responses"] += 1
        else:
            rows.append(row)
    return rows, {"records": len(records), "kept": len(rows), "left_out": left_out}


def read_records(path: str) -> tuple[list, list[str]]:
    """The records of a local JSON Lines file and how to name each (``"PATH, line N"``, 1-based, blank lines
    counted)."""
    from dpo_ext.data.jsonl import iter_jsonl

    path = Path(path)
    try:
        with path.open(encoding="utf-8") as lines:
            numbered = list(iter_jsonl(path, lines))
    except ValueError as error:  # not JSON, or not an object: already names the file and line
        raise PreferenceDataError(f"{error}; each line holds one row, {{\"chosen\": str, \"rejected\": str}}") from None
    return [record for _, record in numbered], [f"{path}, line {number}" for number, _ in numbered]


def load_rows(split: str = "train", data_files: str | None = None, data_dir: str | None = None,
              single_turn: bool = False) -> tuple[list[dict], dict]:
    """`to_rows` of ``split`` of ``Anthropic/hh-rlhf`` (``data_dir``: one subset, e.g. ``"helpful-base"``), or of a
    local JSON Lines file in its published schema (``data_files``: one ``{"chosen", "rejected"}`` object a line).
    ``single_turn``: the paper's evaluation set (use it for the test split); training uses every dialogue."""
    if data_files is not None:
        records, where = read_records(data_files)
    else:
        from datasets import load_dataset

        records = list(load_dataset(DATASET, data_dir=data_dir, split=split))
        where = [f"{DATASET}[{split}], row {index}" for index in range(len(records))]
    return to_rows(records, single_turn, where)
