"""The Anthropic HH data path (recipes/hh): published rows -> prompt / chosen / rejected, single-turn filter.

The fixture holds rows in the dataset's published schema (``{"chosen": transcript, "rejected": transcript}``),
including the awkward ones: a multi-turn dialogue, an empty response, identical responses.
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "recipes" / "hh"))

import hh_data  # noqa: E402
from dpo_ext import PreferenceDataError  # noqa: E402

FIXTURE = Path(__file__).resolve().parent / "data" / "hh_rlhf_sample.jsonl"


def test_split_is_at_the_last_shared_assistant_turn():
    # The two replies share their first letter ("Y"): the split must still fall at the marker, not after the "Y".
    row = hh_data.split_pair("\n\nHuman: Is the sky blue?\n\nAssistant: Yes, on a clear day.",
                             "\n\nHuman: Is the sky blue?\n\nAssistant: Yellow.")
    assert row == {"prompt": "\n\nHuman: Is the sky blue?\n\nAssistant:", "chosen": " Yes, on a clear day.",
                   "rejected": " Yellow."}
    assert row["prompt"] + row["chosen"] == "\n\nHuman: Is the sky blue?\n\nAssistant: Yes, on a clear day."


def test_multi_turn_prompt_keeps_every_earlier_turn():
    chosen = "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Name a fruit.\n\nAssistant: An apple."
    rejected = "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Name a fruit.\n\nAssistant: No."
    row = hh_data.split_pair(chosen, rejected)
    assert row["prompt"] == "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Name a fruit.\n\nAssistant:"
    assert (row["chosen"], row["rejected"]) == (" An apple.", " No.")
    assert not hh_data.is_single_turn(row["prompt"])
    assert hh_data.is_single_turn("\n\nHuman: Hi\n\nAssistant:")


def test_transcripts_without_a_shared_assistant_turn_are_refused_with_their_row():
    with pytest.raises(PreferenceDataError, match="row 7, field 'rejected': .*share no"):
        hh_data.split_pair("\n\nHuman: A\n\nAssistant: B", "\n\nHuman: C\n\nAssistant: D", row=7)


def test_fixture_in_the_published_schema_keeps_single_turn_pairs_and_counts_the_rest():
    rows, stats = hh_data.load_rows(data_files=str(FIXTURE))
    assert [r["prompt"] for r in rows] == ["\n\nHuman: What is a good movie for a rainy day?\n\nAssistant:",
                                           "\n\nHuman: Is the sky blue?\n\nAssistant:"]
    assert stats == {"records": 5, "kept": 2,
                     "left_out": {"multi_turn": 1, "empty_response": 1, "identical_responses": 1}}
    multi, _ = hh_data.load_rows(data_files=str(FIXTURE), single_turn=False)
    assert len(multi) == 3 and multi[1]["chosen"] == " An apple."
