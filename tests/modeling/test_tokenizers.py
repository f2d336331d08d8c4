"""The one tokenizer loader and the one pad-token rule (`dpo_ext.modeling.tokenizers`), shared by the trainer, the
scorer and the judges."""

import pytest

from dpo_ext.modeling.tokenizers import ensure_pad_token, load_tokenizer, padding_id
from dpo_ext.testing import tiny_model, tiny_tokenizer


def _without(pad=True, eos=True):
    tokenizer = tiny_tokenizer()
    if pad:
        tokenizer.pad_token = None
    if eos:
        tokenizer.eos_token = None
    return tokenizer


def test_pad_is_eos_when_missing_and_refused_without_either():
    assert padding_id(tiny_tokenizer()) == tiny_tokenizer().pad_token_id
    tokenizer = _without(eos=False)
    assert padding_id(tokenizer) == tokenizer.eos_token_id and tokenizer.pad_token is None  # asking changes nothing
    ensure_pad_token(tokenizer)
    assert tokenizer.pad_token == "<eos>"
    with pytest.raises(ValueError, match=r"neither a pad token nor an EOS token.*add_special_tokens"):
        padding_id(_without())
    with pytest.raises(ValueError, match=r"^the tokenizer of judge 'x' has neither"):
        ensure_pad_token(_without(), "the tokenizer of judge 'x'")


def test_the_scorer_follows_the_same_rule():
    from dpo_ext.scoring.scorer import ImplicitRewardScorer

    model = tiny_model(tiny_tokenizer())
    tokenizer = _without(eos=False)
    scorer = ImplicitRewardScorer(model, tokenizer, reference_free=True)
    assert scorer.pad_token_id == tokenizer.eos_token_id
    with pytest.raises(ValueError, match="neither a pad token nor an EOS token"):  # it used to pad with id 0
        ImplicitRewardScorer(model, _without(), reference_free=True)


def test_one_loader_tries_the_fallback_folder_and_names_what_to_pass(tmp_path):
    tiny_tokenizer().save_pretrained(tmp_path / "base")
    (tmp_path / "adapter").mkdir()  # a folder without a tokenizer (an adapter saved alone)
    tokenizer = load_tokenizer(str(tmp_path / "adapter"), "tokenizer", fallback=str(tmp_path / "base"))
    assert tokenizer.convert_tokens_to_ids("movie") == tiny_tokenizer().convert_tokens_to_ids("movie")
    with pytest.raises(ValueError, match=r"could not load a tokenizer from .*adapter.*; pass tokenizer="):
        load_tokenizer(str(tmp_path / "adapter"), "tokenizer", fallback=str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match=r"processing_class is required here: the model was built from a config"):
        load_tokenizer("", "processing_class")


def test_the_old_import_path_still_works_and_warns():
    import dpo_ext.modeling.models as models

    with pytest.warns(DeprecationWarning, match=r"dpo_ext\.modeling\.tokenizers\.load_tokenizer"):
        old = models.load_tokenizer
    assert old is load_tokenizer
