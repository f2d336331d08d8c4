"""The package's one sampler (`dpo_ext.sampling`): prompt kinds, EOS, settings, determinism, and the vLLM glue
(checked against a stand-in `vllm` module: vLLM itself is not installed here)."""

import sys
import types

import pytest
import torch

from dpo_ext.sampling import (
    DEFAULT_GENERATION,
    encode_prompt,
    generation_config,
    plan_calls,
    plan_shards,
    sample_completions,
    sample_shard,
    sample_token_ids,
    shard_seed,
    until_eos,
)
from dpo_ext.testing import tiny_model, tiny_tokenizer

TEXTS = ["the movie was", "i liked it", "the plot", "a film", "it was a great", "bad", "the acting was very", "wow"]
CHAT_TEMPLATE = "{% for m in messages %}{{ m['content'] }} {% endfor %}{% if add_generation_prompt %}we{% endif %}"


@pytest.fixture(scope="module")
def pair():
    tokenizer = tiny_tokenizer()
    return tiny_model(tokenizer).eval(), tokenizer


def _ids(tokenizer, texts=TEXTS):
    return [tokenizer(text)["input_ids"] for text in texts]


def test_default_generation_is_the_untouched_distribution_and_any_field_overrides(pair):
    _, tokenizer = pair
    config = generation_config(tokenizer)
    assert (config.do_sample, config.temperature, config.top_k, config.top_p, config.max_new_tokens) == \
        (True, 1.0, 0, 1.0, 64) == tuple(DEFAULT_GENERATION[k] for k in ("do_sample", "temperature", "top_k",
                                                                           "top_p", "max_new_tokens"))
    assert config.eos_token_id == tokenizer.eos_token_id and config.pad_token_id == tokenizer.pad_token_id
    changed = generation_config(tokenizer, {"top_k": 5, "repetition_penalty": 1.3, "max_new_tokens": 3})
    assert (changed.top_k, changed.repetition_penalty, changed.max_new_tokens, changed.temperature) == (5, 1.3, 3, 1.0)


def test_completions_end_at_the_first_eos_included_else_at_max_new_tokens(pair):
    model, tokenizer = pair
    eos = tokenizer.eos_token_id
    samples = sample_completions(model, tokenizer, TEXTS, 4, {"max_new_tokens": 30}, seed=1)
    rows = [c for s in samples for c in s.completion_ids]
    ended = [c for c in rows if c[-1] == eos]
    assert ended and len(ended) < len(rows)  # both kinds occur, so the test checks both
    assert all(c.count(eos) == 1 for c in ended)
    assert all(len(c) == 30 and eos not in c for c in rows if c[-1] != eos)
    # Several EOS ids: a completion ends at the first of any of them.
    the = tokenizer.convert_tokens_to_ids("the")
    two = sample_completions(model, tokenizer, TEXTS, 4, {"max_new_tokens": 30, "eos_token_id": [eos, the]}, seed=1)
    rows = [c for s in two for c in s.completion_ids]
    assert any(c[-1] == the for c in rows)
    assert all(sum(t in (eos, the) for t in c) == (c[-1] in (eos, the)) for c in rows)


def test_text_chat_and_token_id_prompts_are_the_same_prompt(pair):
    model, tokenizer = pair
    chat = [[{"role": "user", "content": text}] for text in TEXTS[:3]]
    with pytest.raises(ValueError, match="no chat template"):
        encode_prompt(chat[0], tokenizer)
    chat_tokenizer = tiny_tokenizer()  # the fixture's tokenizer stays without a template
    chat_tokenizer.chat_template = CHAT_TEMPLATE
    rendered = [encode_prompt(m, chat_tokenizer) for m in chat]
    assert rendered == [chat_tokenizer(f"{text} we")["input_ids"] for text in TEXTS[:3]]
    by_ids = sample_completions(model, chat_tokenizer, rendered, 2, {"max_new_tokens": 5}, seed=3)
    by_chat = sample_completions(model, chat_tokenizer, chat, 2, {"max_new_tokens": 5}, seed=3)
    by_text = sample_completions(model, chat_tokenizer, [f"{t} we" for t in TEXTS[:3]], 2, {"max_new_tokens": 5},
                                 seed=3)
    assert [s.completion_ids for s in by_ids] == [s.completion_ids for s in by_chat] == \
        [s.completion_ids for s in by_text]
    assert by_chat[0].texts == [chat_tokenizer.decode(c, skip_special_tokens=True) for c in by_chat[0].completion_ids]


def test_the_callers_random_state_is_untouched_and_a_seed_fixes_the_samples(pair):
    model, tokenizer = pair
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = sample_completions(model, tokenizer, TEXTS, 3, {"max_new_tokens": 6}, seed=9)
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(456)  # another global state: the samples do not move
    again = sample_completions(model, tokenizer, TEXTS, 3, {"max_new_tokens": 6}, seed=9)
    other = sample_completions(model, tokenizer, TEXTS, 3, {"max_new_tokens": 6}, seed=10)
    assert [s.completion_ids for s in first] == [s.completion_ids for s in again]
    assert [s.completion_ids for s in first] != [s.completion_ids for s in other]
    assert model.training is False
    model.train()
    sample_completions(model, tokenizer, TEXTS[:1], 1, {"max_new_tokens": 2})
    assert model.training is True  # sampled in eval mode, then put back as it was
    model.eval()


@pytest.mark.parametrize("layout", ["padded", "by_length"])
def test_samples_do_not_depend_on_the_workers_or_on_batches_of_a_shard_or_more(pair, layout):
    """Shards are fixed by the data and seeded on their own: two workers taking every other shard, in any order,
    write what one worker writes; a shard's samples are those of its prompts sampled alone with its seed; and any
    number of sequences per call from one shard up gives the same samples."""
    model, tokenizer = pair
    prompts = _ids(tokenizer) * 2  # 16 prompts
    config = generation_config(tokenizer, {"max_new_tokens": 7})
    assert [len(s) for s in plan_shards(len(prompts), 3, shard_sequences=12)] == [4, 4, 4, 4]
    one = sample_token_ids(model, prompts, 3, config, seed=2, shard_sequences=12, layout=layout)
    worker_b = sample_token_ids(model, prompts, 3, config, seed=2, shard_sequences=12, shards=[3, 1], layout=layout)
    worker_a = sample_token_ids(model, prompts, 3, config, seed=2, shard_sequences=12, shards=[0, 2], layout=layout)
    merged = [a if a is not None else b for a, b in zip(worker_a, worker_b)]
    assert merged == one and all(len(row) == 3 and all(row) for row in one)
    assert worker_a[4:8] == [None] * 4
    assert one[8:12] == sample_shard(model, prompts[8:12], 3, config, shard_seed(2, 2), layout=layout)
    wide = sample_token_ids(model, prompts, 3, config, seed=2, shard_sequences=12, batch_sequences=12 * 16,
                            layout=layout)
    assert wide == one == sample_token_ids(model, prompts, 3, config, seed=2, shard_sequences=12, batch_sequences=12,
                                           layout=layout)


def test_bad_arguments_are_refused(pair):
    model, tokenizer = pair
    with pytest.raises(ValueError, match="k must be at least 1"):
        sample_completions(model, tokenizer, TEXTS, 0)
    with pytest.raises(ValueError, match="prompt 1: no tokens"):
        sample_completions(model, tokenizer, ["the movie", ""], 2)
    with pytest.raises(ValueError, match="backend must be one of"):
        sample_completions(model, tokenizer, TEXTS, 2, backend="tgi")


class _StandInVLLM:
    """A stand-in `vllm` package: records what we pass and answers like vLLM's documented ``LLM.generate``."""

    def __init__(self, eos):
        self.calls, self.eos = [], eos
        vllm = types.ModuleType("vllm")
        stand_in = self

        class SamplingParams:
            def __init__(self, **kwargs):
                self.kwargs = kwargs

        class LLM:
            def __init__(self, **kwargs):
                stand_in.calls.append(("LLM", kwargs))

            def generate(self, prompts, sampling_params, lora_request=None, use_tqdm=True):
                stand_in.calls.append(("generate", prompts, sampling_params, lora_request))
                completion = types.SimpleNamespace
                # sample j of every prompt: j + 1 tokens "4", the last ending at EOS (token ids keep it)
                return [types.SimpleNamespace(outputs=[
                    completion(token_ids=[4] * (j + 1) + ([stand_in.eos, 4] if j == p.kwargs["n"] - 1 else []),
                               finish_reason="stop", stop_reason=None) for j in range(p.kwargs["n"])])
                    for p in sampling_params]

        class LoRARequest:
            def __init__(self, *args):
                self.args = args

        vllm.LLM, vllm.SamplingParams = LLM, SamplingParams
        lora, request = types.ModuleType("vllm.lora"), types.ModuleType("vllm.lora.request")
        request.LoRARequest = LoRARequest
        self.modules = {"vllm": vllm, "vllm.lora": lora, "vllm.lora.request": request}


def test_vllm_glue_passes_documented_arguments(pair, monkeypatch):
    _, tokenizer = pair
    stand_in = _StandInVLLM(tokenizer.eos_token_id)
    for name, module in stand_in.modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    from dpo_ext.sampling.vllm_backend import load_vllm

    llm, lora = load_vllm("runs/adapter", base_model="org/base", seed=4, gpu_memory_utilization=0.5)
    assert stand_in.calls[0] == ("LLM", {"model": "org/base", "enable_lora": True, "seed": 4,
                                         "gpu_memory_utilization": 0.5})
    assert lora.args == ("policy", 1, "runs/adapter")
    samples = sample_completions(llm, tokenizer, TEXTS[:2], 3, {"max_new_tokens": 5}, seed=4, lora_request=lora)
    _, prompts, params, lora_request = stand_in.calls[1]
    assert prompts == [{"prompt_token_ids": ids} for ids in _ids(tokenizer, TEXTS[:2])]
    assert lora_request is lora
    assert [p.kwargs for p in params] == [
        {"n": 3, "temperature": 1.0, "top_p": 1.0, "top_k": -1, "seed": shard_seed(4, i), "max_tokens": 5,
         "stop_token_ids": [tokenizer.eos_token_id]} for i in range(2)]
    assert samples[1].completion_ids == [[4], [4, 4], [4, 4, 4, tokenizer.eos_token_id]]
    greedy = sample_completions(llm, tokenizer, TEXTS[:1], 1, {"do_sample": False, "max_new_tokens": 2})
    assert stand_in.calls[2][2][0].kwargs["temperature"] == 0.0 and len(greedy) == 1


def _llama_style(tokenizer):
    """A tiny Llama (rotary positions, unlike GPT-2's learned table), seeded."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return LlamaForCausalLM(config).eval()


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_padded_layout_samples_each_prompt_as_if_it_were_alone(pair, arch):
    """Every token the padded layout samples was drawn from the logits `generate` computed in the padded call;
    those give the same log-probs as one unpadded forward of the prompt and its completion (position ids come from
    the attention mask). The calls really were padded, so the check is not vacuous."""
    model, tokenizer = pair
    model = model if arch == "gpt2" else _llama_style(tokenizer)
    prompts = _ids(tokenizer)  # 1 to 4 tokens
    steps = []  # (input_ids, attention_mask, last logits) of every forward that generate runs

    def record(module, args, kwargs, output):
        steps.append((kwargs["input_ids"], kwargs.get("attention_mask"), output.logits[:, -1].float()))

    hook = model.register_forward_hook(record, with_kwargs=True)
    try:
        samples = sample_token_ids(model, prompts, 2, generation_config(tokenizer, {"max_new_tokens": 6}), seed=5,
                                   layout="padded")
    finally:
        hook.remove()
    prefill_ids, prefill_mask, _ = steps[0]
    assert len(steps) > 1 and prefill_ids.shape[1] == 4 and (prefill_mask == 0).any()  # one padded call
    eos = tokenizer.eos_token_id
    checked = 0
    for row in range(prefill_ids.shape[0]):
        prompt = prefill_ids[row][prefill_mask[row] == 1].tolist()
        sampled = [int(step[0][row, 0]) for step in steps[1:]]  # the token drawn at step t is fed at step t + 1
        completion = until_eos(sampled, {eos})
        index = prompts.index(prompt)
        assert completion == samples[index][row % 2][: len(completion)]  # what the sampler returned
        padded = torch.stack([torch.log_softmax(steps[t][2][row], -1)[token] for t, token in enumerate(completion)])
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([prompt + completion])).logits[0].float()  # (T, V), no padding
        alone = torch.log_softmax(logits[len(prompt) - 1 : -1], -1).gather(-1, torch.tensor(completion)[:, None])
        torch.testing.assert_close(padded, alone[:, 0], atol=1e-5, rtol=1e-5)
        checked += len(completion)
    assert checked > 20


def test_padded_layout_is_exact_in_distribution_on_an_enumerable_case():
    """A 6-token vocabulary and 2 new tokens: every completion's probability is enumerable from unpadded forwards.
    4000 samples of a short and a long prompt, drawn in one padded call, fit those probabilities (Pearson chi-square),
    while the long prompt's distribution read without its position shift would not."""
    from scipy.stats import chi2
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(3)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=6, n_positions=16, n_embd=16, n_layer=1, n_head=2,
                                       eos_token_id=1, pad_token_id=0)).eval()
    with torch.no_grad():
        model.transformer.wpe.weight.mul_(50)  # make positions matter, so a wrong shift would show
    short, long = [2, 3], [4, 5, 2, 3, 4]
    config = generation_config(None, {"max_new_tokens": 2, "eos_token_id": 1, "pad_token_id": 0})
    k = 20
    samples = sample_token_ids(model, [short, long] * 100, k, config, seed=0, shard_sequences=4000,
                               batch_sequences=4000, layout="padded")

    def exact(prompt, position_offset=0):
        """{completion: probability} from unpadded forwards (positions shifted by ``position_offset``)."""
        def logps(ids):
            positions = torch.arange(len(ids))[None] + position_offset
            with torch.no_grad():
                return torch.log_softmax(model(input_ids=torch.tensor([ids]), position_ids=positions).logits[0, -1],
                                         -1)
        first = logps(prompt).exp()
        table = {(1,): float(first[1])}
        for t1 in (0, 2, 3, 4, 5):
            second = logps(prompt + [t1]).exp()
            table.update({(t1, t2): float(first[t1] * second[t2]) for t2 in range(6)})
        return table

    def p_value(prompt_rows, table):
        counts = {}
        for rows in prompt_rows:
            for completion in rows:
                counts[tuple(completion)] = counts.get(tuple(completion), 0) + 1
        n = sum(counts.values())
        assert set(counts) <= set(table)
        kept = [c for c in table if table[c] * n >= 5]  # the chi-square approximation needs >= 5 expected
        rest = n - sum(counts.get(c, 0) for c in kept)
        expected = [table[c] * n for c in kept] + [n * (1 - sum(table[c] for c in kept))]
        observed = [counts.get(c, 0) for c in kept] + [rest]
        statistic = sum((o - e) ** 2 / e for o, e in zip(observed, expected) if e > 0)
        return chi2.sf(statistic, len(kept))

    assert p_value(samples[0::2], exact(short)) > 1e-3
    assert p_value(samples[1::2], exact(long)) > 1e-3
    # the short prompt sat behind 3 pads: read from position 3 its distribution is another one, which the test sees
    assert p_value(samples[0::2], exact(short, position_offset=3)) < 1e-6


def test_the_layouts_agree_on_prompts_of_one_length_and_padded_is_the_default(pair):
    model, tokenizer = pair
    config = generation_config(tokenizer, {"max_new_tokens": 5})
    same = [ids for ids in _ids(tokenizer) if len(ids) == 2] * 3
    assert len(same) >= 6
    by_length = sample_token_ids(model, same, 3, config, seed=1, batch_sequences=6, layout="by_length")
    assert by_length == sample_token_ids(model, same, 3, config, seed=1, batch_sequences=6, layout="padded")
    mixed = _ids(tokenizer)
    assert [s.completion_ids for s in sample_completions(model, tokenizer, mixed, 3, {"max_new_tokens": 5}, seed=1)] \
        == sample_token_ids(model, mixed, 3, config, seed=1, layout="padded") \
        != sample_token_ids(model, mixed, 3, config, seed=1, layout="by_length")
    assert plan_calls(mixed, 3, batch_sequences=9, layout="by_length") == [[5, 7], [2, 3], [0, 1], [4, 6]]
    assert plan_calls(mixed, 3, batch_sequences=9, layout="padded") == [[5, 7, 2], [3, 0, 1], [4, 6]]
    with pytest.raises(ValueError, match="layout must be one of padded, by_length, got 'ragged'"):
        sample_completions(model, tokenizer, mixed, 2, layout="ragged")
