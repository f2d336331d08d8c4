"""`load_causal_lm`, the one loader of policy, base and reference models: causal LMs only, and every weight loaded
(tied weights are not missing)."""

import pytest
import torch
from fixtures import make_model

from dpo_ext.modeling.loading import check_loading_info, load_causal_lm


def test_models_with_tied_weights_load_and_match(tokenizer, tmp_path):
    """GPT-2 ties its LM head to the embeddings; a tied Llama too: neither saves the head, and neither is refused."""
    from transformers import LlamaConfig, LlamaForCausalLM

    make_model(tokenizer).save_pretrained(tmp_path / "gpt2")
    torch.manual_seed(0)
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                                         tie_word_embeddings=True))
    llama.save_pretrained(tmp_path / "llama")
    for folder, original in (("gpt2", make_model(tokenizer)), ("llama", llama)):
        loaded = load_causal_lm(str(tmp_path / folder))
        assert loaded.get_output_embeddings().weight.data_ptr() == loaded.get_input_embeddings().weight.data_ptr()
        for (name, a), (_, b) in zip(original.state_dict().items(), loaded.state_dict().items()):
            assert torch.equal(a, b), name


def test_a_bert_built_as_a_decoder_of_its_family_but_left_bidirectional_is_refused(tmp_path):
    from transformers import BertConfig, BertLMHeadModel

    BertLMHeadModel(BertConfig(vocab_size=40, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=64)).save_pretrained(tmp_path / "bert")
    with pytest.raises(ValueError, match="BertLMHeadModel with is_decoder=False: it attends to later tokens"):
        load_causal_lm(str(tmp_path / "bert"), what="base model")


def test_loading_info_names_a_few_weights_and_counts_the_rest():
    info = {"missing_keys": {f"h.{i}.w" for i in range(6)}, "unexpected_keys": set(), "mismatched_keys": set(),
            "error_msgs": []}
    with pytest.raises(ValueError, match=r"^model 'x' does not match its weights: 6 weights missing from the "
                                         r"checkpoint .*: h\.0\.w, h\.1\.w, h\.2\.w, h\.3\.w and 2 more\. The"):
        check_loading_info(info, "model 'x'")
    check_loading_info({"missing_keys": set(), "unexpected_keys": set(), "mismatched_keys": set(), "error_msgs": []})
