"""The fused LM head inside the forward pass: for every model type it is used on, the log-probs and gradients equal the
model's own logits' log_softmax; heads it cannot stand in for (LoRA on the head, a soft-capped model) take the plain
path, and the model is left as it was."""

import pytest
import torch
import transformers
from peft import LoraConfig, get_peft_model

from dpo_ext.modeling import forward
from dpo_ext.modeling.forward import FUSED_HEAD_MODEL_TYPES, fusable_lm_head, plain_rows_logps

VOCAB = 97
SMALL = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64)
CONFIGS = {
    "gpt2": lambda: transformers.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64),
    "gpt_neox": lambda: transformers.GPTNeoXConfig(**{**SMALL, "num_key_value_heads": 4}),
    "llama": lambda: transformers.LlamaConfig(**SMALL),
    "mistral": lambda: transformers.MistralConfig(**SMALL),
    "qwen2": lambda: transformers.Qwen2Config(**SMALL),
    "qwen3": lambda: transformers.Qwen3Config(**SMALL, head_dim=8),
}


def build(config):
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    return model.eval()  # no dropout (GPT-2's is 0.1): both paths must see the same network


def batch():
    gen = torch.Generator().manual_seed(1)
    input_ids = torch.randint(0, VOCAB, (3, 12), generator=gen)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[2, 9:] = 0  # a right-padded row
    completion_mask = torch.zeros_like(input_ids)
    completion_mask[:, 5:] = 1
    completion_mask[2, 9:] = 0
    return input_ids, attention_mask, completion_mask


def own_forward_logps(model, input_ids, attention_mask, completion_mask):
    """The log-probs from the model's own (full) logits, (N, T - 1), 0 off the completion."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1].float()
    picked = torch.log_softmax(logits, -1).gather(-1, input_ids[:, 1:, None])[..., 0]
    return picked * completion_mask[:, 1:]


def gradients(model, logps):
    model.zero_grad()
    (logps * torch.linspace(-1, 1, logps.numel()).view_as(logps)).sum().backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def test_every_listed_model_type_is_checked_here():
    assert set(CONFIGS) == FUSED_HEAD_MODEL_TYPES


@pytest.mark.parametrize("model_type", sorted(CONFIGS))
def test_fused_head_equals_the_models_own_logits(model_type, monkeypatch):
    model = build(CONFIGS[model_type]())
    assert fusable_lm_head(model) is model.get_output_embeddings()
    inputs = batch()
    fused, mask = plain_rows_logps(model, *inputs)
    fused_grads = gradients(model, fused[0])
    own = own_forward_logps(model, *inputs)
    own_grads = gradients(model, own)
    torch.testing.assert_close(fused[0], own, rtol=0, atol=5e-6)
    assert set(fused_grads) == set(own_grads)
    for name, grad in own_grads.items():
        torch.testing.assert_close(fused_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)
    # and the model is left as it was: a plain call still returns logits at every position
    assert model(input_ids=inputs[0]).logits.shape == (3, 12, VOCAB)


def test_tiling_does_not_change_the_result(monkeypatch):
    """Tiles of a few positions by a slice of the vocabulary give what one tile gives."""
    model = build(CONFIGS["llama"]())
    inputs = batch()
    whole = plain_rows_logps(model, *inputs)[0]
    monkeypatch.setattr(forward, "MAX_UPCAST_ELEMENTS", 50)
    tiled = plain_rows_logps(model, *inputs)[0]
    torch.testing.assert_close(tiled, whole, rtol=0, atol=5e-6)


def test_a_forward_autocast_inside_the_model_reaches_the_fused_head(monkeypatch):
    """accelerate's mixed precision autocasts inside ``model.forward`` only: the plain head ran in bf16 there, and so
    must the fused one, which runs after the forward returns."""
    model = build(CONFIGS["llama"]())
    model.forward = torch.autocast("cpu", dtype=torch.bfloat16)(model.forward)
    inputs = batch()
    fused = plain_rows_logps(model, *inputs)[0][0]
    monkeypatch.setattr(forward, "fusable_lm_head", lambda model: None)
    plain = plain_rows_logps(model, *inputs)[0][0]
    with torch.no_grad():
        float32 = own_forward_logps(build(CONFIGS["llama"]()), *inputs)
    torch.testing.assert_close(fused, plain, rtol=0, atol=5e-6)
    assert (fused - float32).abs().max() > 1e-4  # the model did run in bf16


def test_lora_elsewhere_keeps_the_fused_head_and_adapters_switch_per_row():
    model = get_peft_model(build(CONFIGS["llama"]()), LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                                 init_lora_weights=False))
    assert fusable_lm_head(model) is not None
    model.eval()
    inputs = batch()
    with torch.no_grad():
        both = plain_rows_logps(model, *inputs, adapters=["__base__", "default"])[0]
        with model.disable_adapter():
            base = own_forward_logps(model, *inputs)
        policy = own_forward_logps(model, *inputs)
    torch.testing.assert_close(both[0], base, rtol=0, atol=5e-6)
    torch.testing.assert_close(both[1], policy, rtol=0, atol=5e-6)
    assert (both[0] - both[1]).abs().max() > 1e-3


def test_lora_on_the_head_takes_the_plain_path():
    """A LoRA head adds its low-rank term in its own forward, which the fused head would skip."""
    model = get_peft_model(build(CONFIGS["llama"]()), LoraConfig(r=4, target_modules=["q_proj", "lm_head"],
                                                                 init_lora_weights=False))
    assert fusable_lm_head(model) is None
    inputs = batch()
    torch.testing.assert_close(plain_rows_logps(model, *inputs)[0][0], own_forward_logps(model, *inputs),
                               rtol=0, atol=5e-6)


def test_a_soft_capped_model_takes_the_plain_path():
    """Gemma 2 soft-caps its logits after the head: fusing the bare head would be silently wrong."""
    config = transformers.Gemma2Config(**SMALL, head_dim=8, final_logit_softcapping=5.0)
    model = build(config)
    assert fusable_lm_head(model) is None
    inputs = batch()
    torch.testing.assert_close(plain_rows_logps(model, *inputs)[0][0], own_forward_logps(model, *inputs),
                               rtol=0, atol=5e-6)
