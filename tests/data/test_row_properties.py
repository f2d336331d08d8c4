"""Properties of the row rules (`dpo_ext.data.rows.normalize_row`), for any input hypothesis can think of."""

import dataclasses
import math

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from dpo_ext.data.rows import IDENTICAL, PreferenceDataError, check_scored, dense_ranks, normalize_row

FAST = settings(max_examples=100, deadline=None)  # per test: a global profile would change other modules' tests

TEXTS = st.sampled_from(["good", "bad", "fine", "great", "awful"])  # few texts, so identical completions happen
NUMBERS = st.one_of(st.integers(-1000, 1000), st.floats(allow_nan=False, allow_infinity=False, width=32))


@st.composite
def ranked_rows(draw, distinct=False, min_k=2):
    k = draw(st.integers(min_k, 6))
    texts = st.text("abcdefgh", min_size=1, max_size=6) if distinct else TEXTS
    completions = draw(st.lists(texts, min_size=k, max_size=k, unique=distinct))
    ranks = draw(st.lists(st.integers(0, 9), min_size=k, max_size=k))
    return {"prompt": "the movie", "completions": completions, "ranks": ranks}


def _pairs(normalized):
    return sorted(zip(normalized.completions, normalized.ranks))


@FAST
@given(st.lists(NUMBERS, min_size=1, max_size=12), st.booleans())
def test_dense_ranks_keep_order_and_ties(values, descending):
    dense = dense_ranks(values, descending=descending)
    assert sorted(set(dense)) == list(range(len(set(values))))  # 0..G-1, no gaps
    for a, da in zip(values, dense):
        for b, db in zip(values, dense):
            assert (a == b) == (da == db)
            assert (a < b) == ((da > db) if descending else (da < db))


@FAST
@given(st.lists(NUMBERS, min_size=2, max_size=6, unique=True), st.integers(0, 5), st.integers(1, 4))
def test_scored_and_equivalent_ranked_rows_normalise_alike(scores, offset, spread):
    completions = [f"c{i}" for i in range(len(scores))]
    # any ranks in the scores' order (best = highest score) are the same ranking, however sparse
    ranks = [offset + spread * r for r in dense_ranks(scores, descending=True)]
    scored = normalize_row({"prompt": "p", "completions": completions, "scores": scores})
    ranked = normalize_row({"prompt": "p", "completions": completions, "ranks": ranks})
    # the same row, and the scored one keeps its label values (for label-aware losses)
    assert dataclasses.replace(scored, scores=None) == ranked and ranked.scores is None
    assert scored.scores == [float(s) for s in scores]
    if len(scores) == 2:
        best, worst = (0, 1) if scores[0] > scores[1] else (1, 0)
        pair = normalize_row({"prompt": "p", "chosen": completions[best], "rejected": completions[worst]})
        assert _pairs(pair) == _pairs(ranked)


@FAST
@given(ranked_rows(distinct=True), st.randoms(use_true_random=False))
def test_permuting_completions_with_their_ranks_permutes_the_output(row, rng):
    row["ref_logps"] = [-float(i) for i in range(len(row["completions"]))]
    order = list(range(len(row["completions"])))
    rng.shuffle(order)
    permuted = {**row, **{key: [row[key][i] for i in order] for key in ("completions", "ranks", "ref_logps")}}
    before, after = normalize_row(row), normalize_row(permuted)
    assert after.completions == [before.completions[i] for i in order]
    assert after.ranks == [before.ranks[i] for i in order]
    assert after.ref_logps == [before.ref_logps[i] for i in order]


@FAST
@given(ranked_rows(), st.randoms(use_true_random=False))
def test_collapsing_identical_completions_does_not_depend_on_their_order(row, rng):
    order = list(range(len(row["completions"])))
    rng.shuffle(order)
    permuted = {**row, "completions": [row["completions"][i] for i in order], "ranks": [row["ranks"][i] for i in order]}
    before, after = normalize_row(row), normalize_row(permuted)
    assert _pairs(before) == _pairs(after)
    assert before.num_collapsed == after.num_collapsed == len(row["completions"]) - len(set(row["completions"]))
    assert before.no_preference == after.no_preference
    # each distinct completion keeps its best (lowest) rank
    best = {c: min(r for c2, r in zip(row["completions"], row["ranks"]) if c2 == c) for c in set(row["completions"])}
    assert dict(zip(before.completions, before.ranks)) == dict(zip(best, dense_ranks(list(best.values()))))


@FAST
@given(ranked_rows(), st.booleans())
def test_normalisation_is_idempotent_and_text_and_token_rows_agree(row, with_ref):
    if with_ref:
        row["ref_logps"] = [-1.5 * i for i in range(len(row["completions"]))]
    once = normalize_row(row)
    assume(once.no_preference != IDENTICAL)  # one completion left: the row is dropped, not a row to re-read
    twice = normalize_row(once.as_row())
    assert twice.as_row() == once.as_row() and twice.num_collapsed == 0
    ids = {text: [i + 3, 1] for i, text in enumerate(sorted(set(row["completions"])))}  # a bijective "tokenizer"
    tokens = {"prompt_ids": [5, 6], "completion_ids": [ids[c] for c in row["completions"]], "ranks": row["ranks"]}
    if with_ref:
        tokens["ref_logps"] = row["ref_logps"]
    tokenized = normalize_row(tokens)
    assert tokenized.completions == [ids[c] for c in once.completions]
    assert (tokenized.ranks, tokenized.ref_logps, tokenized.no_preference) == (once.ranks, once.ref_logps,
                                                                                once.no_preference)


# a float with a non-negative integral value (0.0) is a rank: Arrow stores a ranks column as floats once one row has one
BAD_RANKS = st.one_of(st.integers(max_value=-1), st.floats().filter(lambda x: not (x >= 0 and float(x).is_integer())),
                      st.booleans(), st.text(max_size=3), st.none())
BAD_NUMBERS = st.one_of(st.sampled_from([math.nan, math.inf, -math.inf]), st.booleans(), st.text(max_size=3),
                        st.none())
BLANK = st.text(" \t\n", max_size=4)


@pytest.mark.parametrize("field, bad", [
    ("ranks", BAD_RANKS),
    ("scores", BAD_NUMBERS),
    ("ref_logps", BAD_NUMBERS),
    ("completions", st.one_of(BLANK, st.integers(), st.none())),
    ("completion_ids", st.one_of(st.just([]), st.lists(st.integers(max_value=-1), min_size=1), st.text())),
])
@FAST
@given(data=st.data())
def test_an_invalid_value_always_raises_naming_its_field(field, bad, data):
    k = data.draw(st.integers(2, 5))
    if field == "completion_ids":
        row = {"prompt_ids": [5], "completion_ids": [[6 + i] for i in range(k)], "ranks": list(range(k))}
    else:
        key = "scores" if field == "scores" else "ranks"
        row = {"prompt": "p", "completions": [f"c{i}" for i in range(k)], key: list(range(k)),
               "ref_logps": [-1.0] * k}
    position = data.draw(st.integers(0, k - 1))
    row[field] = list(row[field])
    row[field][position] = data.draw(bad)
    with pytest.raises(PreferenceDataError) as info:
        normalize_row(row, 3)
    assert (info.value.row, info.value.field) == (3, f"{field}[{position}]")


@FAST
@given(st.one_of(BLANK, st.lists(st.fixed_dictionaries({"role": st.just("user"), "content": BLANK}), min_size=1,
                                 max_size=3)))
def test_a_blank_prompt_always_raises_naming_the_prompt(prompt):
    with pytest.raises(PreferenceDataError, match="empty prompt") as info:
        normalize_row({"prompt": prompt, "chosen": "a", "rejected": "b"}, 0)
    assert info.value.field == "prompt"


MESSAGE = st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant"]), "content": TEXTS})
BAD_MESSAGES = st.lists(st.one_of(MESSAGE, st.dictionaries(st.sampled_from(["role", "content"]),
                                                          st.one_of(st.none(), st.integers(), BLANK))),
                        min_size=1, max_size=3)


@FAST
@given(chat=st.booleans(), data=st.data())
def test_the_scorer_and_the_trainer_refuse_the_same_completion_alike(chat, data):
    """One definition of a valid completion: what `check_scored` (the scorer's and the CLI's check) says of a bad
    completion is what `normalize_row` (the trainer's) says, with the same field and completion position."""
    k = data.draw(st.integers(2, 4))
    prompt = [{"role": "user", "content": "the movie"}] if chat else "the movie"
    completions = [[{"role": "assistant", "content": f"c{i}"}] if chat else f"c{i}" for i in range(k)]
    position = data.draw(st.integers(0, k - 1))
    completions[position] = data.draw(st.one_of(BLANK, st.integers(), st.none(), BAD_MESSAGES) if not chat
                                      else st.one_of(BAD_MESSAGES, st.integers(), st.none()))
    row = {"prompt": prompt, "completions": completions, "ranks": list(range(k))}
    errors = []
    for check in (lambda: normalize_row(row, 5), lambda: check_scored(prompt, completions, 5)):
        try:
            check()
        except PreferenceDataError as error:
            errors.append(error)
    assume(errors)  # a drawn list of messages may be a valid completion
    assert len(errors) == 2, "one of the two checks accepted the completion"
    trainer, scorer = errors
    assert (scorer.row, scorer.field, scorer.completion, scorer.problem) == (
        trainer.row, trainer.field, trainer.completion, trainer.problem)
    assert (trainer.row, trainer.field, trainer.completion) == (5, f"completions[{position}]", position)
