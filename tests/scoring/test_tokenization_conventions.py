"""The scorer's two tokenizations: TRL's (the default, the one models are trained with) and RewardBench's
(``tokenization="rewardbench"``), worked out by hand on tokenizers with a fixed vocabulary, and RewardBench rewards
checked against a naive computation (one forward per prompt + completion with RewardBench's ids)."""


import pytest
import torch
from fixtures import SCORING_LORA as LORA
from fixtures import make_model, perturbed_lora
from peft import LoraConfig, get_peft_model
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from dpo_ext.data.rows import PreferenceDataError
from dpo_ext.data.tokenize import tokenize_ranked, tokenize_rewardbench
from dpo_ext.scoring.inputs import token_groups
from dpo_ext.scoring.scorer import ImplicitRewardScorer
from dpo_ext.testing import tiny_model

WORDS = ["<pad>", "<eos>", "<bos>", "<unk>", "the", "movie", "was", "good", "bad", "fun", "i", "we"]
# ids:      0        1        2        3        4       5        6       7      8      9    10    11
PAD, EOS, BOS, THE, MOVIE, WAS, GOOD, BAD, FUN, I_, WE = 0, 1, 2, 4, 5, 6, 7, 8, 9, 10, 11  # I_: the word 'i'
# Merges "a" + "b": a prompt ending in "a" and a completion starting with "b" share their boundary token.
LETTERS = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "a": 3, "b": 4, "c": 5, "ab": 6}
A, B, C, AB = 3, 4, 5, 6
CHAT_TEMPLATE = ("{{ bos_token }} {% for m in messages %}{% if m['role'] == 'user' %}i {% else %}we {% endif %}"
                 "{{ m['content'] }} <eos> {% endfor %}{% if add_generation_prompt %}we {% endif %}")


def word_tokenizer(adds_bos=False):
    """Word-level over `WORDS`, with a BOS token it does not add (GPT-2 style), or adds itself (``adds_bos``)."""
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if adds_bos:
        tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", BOS)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                   unk_token="<unk>")


def letter_tokenizer():
    tok = Tokenizer(models.BPE(vocab=dict(LETTERS), merges=[("a", "b")]))
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")


def rewardbench(prompt, completions, tokenizer, **kwargs):
    return [tuple(pair) for pair in tokenize_rewardbench(prompt, completions, tokenizer, **kwargs)]


# -- each RewardBench rule, by hand ----------------------------------------------------------------------------------

def test_bos_is_prepended_even_when_the_tokenizer_adds_none():
    """'the movie was' + 'good': TRL (tokenizer as it is: no BOS) [the movie was] | [good <eos>];
    RewardBench [<bos> the movie was] | [good <eos>]."""
    tok = word_tokenizer()
    assert tokenize_ranked("the movie was ", ["good"], tok) == ([THE, MOVIE, WAS], [[GOOD, EOS]])
    assert rewardbench("the movie was ", ["good"], tok) == [([BOS, THE, MOVIE, WAS], [GOOD, EOS])]


def test_bos_is_not_doubled_when_the_tokenizer_adds_one():
    """RewardBench tokenizes without special tokens, then adds one BOS: the same ids as TRL's here."""
    tok = word_tokenizer(adds_bos=True)
    assert tokenize_ranked("the movie was ", ["good"], tok) == ([BOS, THE, MOVIE, WAS], [[GOOD, EOS]])
    assert rewardbench("the movie was ", ["good"], tok) == [([BOS, THE, MOVIE, WAS], [GOOD, EOS])]


def test_the_prompt_string_is_removed_from_completions_that_repeat_it():
    """Prompt 'the movie was '. 'the movie was good' -> 'good'; 'bad the movie was fun' -> 'bad fun' (every
    occurrence goes). TRL scores what it is given: [the movie was good <eos>]."""
    tok = word_tokenizer()
    completions = ["the movie was good", "bad the movie was fun"]
    assert tokenize_ranked("the movie was ", completions, tok) == (
        [THE, MOVIE, WAS], [[THE, MOVIE, WAS, GOOD, EOS], [BAD, THE, MOVIE, WAS, FUN, EOS]])
    prompt = [BOS, THE, MOVIE, WAS]
    assert rewardbench("the movie was ", completions, tok) == [(prompt, [GOOD, EOS]), (prompt, [BAD, FUN, EOS])]
    # so the completion alone and prompt + completion give the same ids
    assert rewardbench("the movie was ", ["the movie was " + c for c in completions], tok) == rewardbench(
        "the movie was ", completions, tok)


def test_eos_is_appended_even_when_the_completion_ends_in_eos():
    """'good<eos>': TRL keeps its one EOS [good <eos>]; RewardBench appends another [good <eos> <eos>]."""
    tok = word_tokenizer()
    assert tokenize_ranked("the movie was ", ["good<eos>"], tok) == ([THE, MOVIE, WAS], [[GOOD, EOS]])
    assert rewardbench("the movie was ", ["good<eos>"], tok) == [([BOS, THE, MOVIE, WAS], [GOOD, EOS, EOS])]


def test_a_merging_boundary_moves_the_completion_start_back_one_token():
    """Prompt 'ca' is [c a]; 'ca' + 'b' is [c ab], 'ca' + 'c' is [c a c].

    RewardBench, per completion: 'b' merges, so its completion starts one token earlier, at 'ab':
    [<bos> c] | [ab <eos>]; 'c' does not: [<bos> c a] | [c <eos>]. TRL cuts every completion where the prompt and
    *any* joint tokenization first differ: [c] | [ab <eos>], [a c <eos>] (the 'a' is scored as part of 'c')."""
    tok = letter_tokenizer()
    assert tokenize_ranked("ca", ["b", "c"], tok) == ([C], [[AB, EOS], [A, C, EOS]])
    assert rewardbench("ca", ["b", "c"], tok) == [([BOS, C], [AB, EOS]), ([BOS, C, A], [C, EOS])]


def test_a_prompt_that_merges_whole_keeps_only_the_bos():
    """Prompt 'a' + 'b' is the one token 'ab': TRL has no prompt token left and refuses; RewardBench's prompt is the
    BOS alone, which predicts [ab <eos>]."""
    tok = letter_tokenizer()
    with pytest.raises(PreferenceDataError, match="no token of its own"):
        tokenize_ranked("a", ["b"], tok)
    assert rewardbench("a", ["b"], tok) == [([BOS], [AB, EOS])]


def test_chat_rows_are_rendered_as_rewardbench_renders_them():
    """The template writes '<bos> ', then 'i <content> <eos> ' per user turn, 'we <content> <eos> ' per assistant turn,
    and 'we ' as the generation prompt. TRL: prompt with the generation prompt, [<bos> i the movie was <eos> we] |
    [good <eos>]. RewardBench: prompt without it, so 'we' is scored; its BOS is added to the template's own, and its
    EOS to the template's: [<bos> <bos> i the movie was <eos>] | [we good <eos> <eos>]."""
    tok = word_tokenizer()
    tok.chat_template = CHAT_TEMPLATE
    prompt, completion = [{"role": "user", "content": "the movie was"}], [{"role": "assistant", "content": "good"}]
    assert tokenize_ranked(prompt, [completion], tok) == ([BOS, I_, THE, MOVIE, WAS, EOS, WE], [[GOOD, EOS]])
    assert rewardbench(prompt, [completion], tok) == [([BOS, BOS, I_, THE, MOVIE, WAS, EOS], [WE, GOOD, EOS, EOS])]


def test_truncation_keeps_the_prompt_end_then_the_completion_start():
    """Prompt [<bos> the movie was the movie] (6 ids), completions [good bad fun <eos>] (4, the longest) and
    [good <eos>] (2). max_length=8, max_prompt_length=3: 6 + 4 > 8, so every prompt keeps its last 3 ids
    [was the movie] (the BOS goes); 3 + 4 fits. max_length=6: 3 + 4 > 6 still, so completions keep their first
    6 - 3 = 3 ids: [good bad fun] (its EOS goes), [good <eos>]."""
    tok = word_tokenizer()
    prompt, completions = "the movie was the movie ", ["good bad fun", "good"]
    assert rewardbench(prompt, completions, tok, max_length=10, max_prompt_length=3) == [  # 6 + 4 fits
        ([BOS, THE, MOVIE, WAS, THE, MOVIE], [GOOD, BAD, FUN, EOS]), ([BOS, THE, MOVIE, WAS, THE, MOVIE], [GOOD, EOS])]
    end = [WAS, THE, MOVIE]
    assert rewardbench(prompt, completions, tok, max_length=8, max_prompt_length=3) == [
        (end, [GOOD, BAD, FUN, EOS]), (end, [GOOD, EOS])]
    assert rewardbench(prompt, completions, tok, max_length=6, max_prompt_length=3) == [
        (end, [GOOD, BAD, FUN]), (end, [GOOD, EOS])]


def no_bos_tokenizer(chat_template=None):
    """`word_tokenizer` without a BOS token (as Qwen2.5's tokenizer has none)."""
    tok = word_tokenizer()
    tok.bos_token = None
    tok.chat_template = chat_template
    return tok


def test_a_tokenizer_without_bos_starts_with_its_eos_as_in_rewardbench():
    """RewardBench's run_dpo.py sets ``bos_token_id = eos_token_id`` for a tokenizer without BOS, before it renders
    the chat template. Text: 'the movie was ' + 'good' -> [<eos> the movie was] | [good <eos>]. Chat: the template's
    '{{ bos_token }}' renders as '<eos>' too, so [<eos> <eos> i the movie was <eos>] | [we good <eos> <eos>] (with
    BOS: [<bos> <bos> i ...], `test_chat_rows_are_rendered_as_rewardbench_renders_them`). The caller's tokenizer is
    left without BOS."""
    tok = no_bos_tokenizer()
    assert rewardbench("the movie was ", ["good", "bad fun"], tok) == [
        ([EOS, THE, MOVIE, WAS], [GOOD, EOS]), ([EOS, THE, MOVIE, WAS], [BAD, FUN, EOS])]
    tok = no_bos_tokenizer(CHAT_TEMPLATE)
    prompt, completion = [{"role": "user", "content": "the movie was"}], [{"role": "assistant", "content": "good"}]
    assert rewardbench(prompt, [completion], tok) == [([EOS, EOS, I_, THE, MOVIE, WAS, EOS], [WE, GOOD, EOS, EOS])]
    assert tok.bos_token is None and tok.bos_token_id is None
    assert tok.apply_chat_template(prompt, tokenize=False) == " i the movie was <eos> "


def test_a_tokenizer_without_bos_is_scored_as_rewardbench_scores_it():
    tok = no_bos_tokenizer()
    model, reference = perturbed_lora(tok)
    prompts, completions = ["the movie was ", "i "], [["good fun", "bad"], ["was good", "i was bad fun"]]
    naive = naive_rewardbench(model, reference, tok, prompts, completions)
    assert [[n for _, _, n in row] for row in naive] == [[3, 2], [3, 4]]  # 'i ' is removed from the last
    result = ImplicitRewardScorer(model, tok, tokenization="rewardbench").score(prompts, completions)
    assert_matches(result, naive, beta=0.1)
    assert tok.bos_token_id is None


def test_tokenizers_rewardbench_cannot_use_are_refused():
    no_eos = word_tokenizer()
    no_eos.eos_token = None
    with pytest.raises(ValueError, match="no EOS token"):
        tokenize_rewardbench("the movie was ", ["good"], no_eos)
    model = make_model(no_eos)
    with pytest.raises(ValueError, match="no EOS token"):
        ImplicitRewardScorer(model, no_eos, reference_free=True, tokenization="rewardbench")
    with pytest.raises(ValueError, match="tokenization must be one of"):
        ImplicitRewardScorer(model, no_eos, reference_free=True, tokenization="RewardBench")
    with pytest.raises(ValueError, match="above its 128 prompt tokens"):
        ImplicitRewardScorer(make_model(word_tokenizer()), word_tokenizer(), reference_free=True,
                             tokenization="rewardbench", max_length=128)
    # 'ab' + 'cd' merge into 'abcd': 'abc' + 'd' has fewer tokens than 'abc' alone (RewardBench stops there too)
    vocab = {**LETTERS, "d": 7, "cd": 8, "abcd": 9}
    merging = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.BPE(vocab=vocab, merges=[("a", "b"), ("c", "d"), ("ab", "cd")])),
        bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")
    with pytest.raises(PreferenceDataError, match=r"completions\[1\].*fewer than the prompt's 2"):
        tokenize_rewardbench("abc", ["a", "d"], merging)


# -- the scorer ------------------------------------------------------------------------------------------------------

@torch.no_grad()
def naive_rewardbench(policy, reference, tokenizer, prompts, completion_lists, **tokenize_kwargs):
    """One forward per prompt + completion with RewardBench's ids, summing the completion tokens' log-probs (the
    positions RewardBench's labels keep): [(pi, ref, n)] per prompt."""
    def completion_logp(model, prompt_ids, completion_ids):
        ids = torch.tensor([prompt_ids + completion_ids])  # (1, T)
        logps = model(input_ids=ids).logits[0, :-1].log_softmax(-1)  # (T - 1, V): position t predicts token t + 1
        targets = ids[0, len(prompt_ids):]  # (C,)
        return float(logps[len(prompt_ids) - 1:].gather(-1, targets[:, None]).sum())

    out = []
    for prompt, completions in zip(prompts, completion_lists):
        out.append([(completion_logp(policy, p, c), completion_logp(reference, p, c), len(c))
                    for p, c in tokenize_rewardbench(prompt, completions, tokenizer, **tokenize_kwargs)])
    return out


def assert_matches(result, naive, beta):
    for b, row in enumerate(naive):
        for k, (policy, ref, n) in enumerate(row):
            assert int(result.num_tokens[b, k]) == n
            assert float(result.policy_logps[b, k]) == pytest.approx(policy, abs=2e-5)
            if result.ref_logps is not None:
                assert float(result.ref_logps[b, k]) == pytest.approx(ref, abs=2e-5)
        assert torch.isnan(result.rewards[b, len(row):]).all()


LETTER_PROMPTS = ["ca", "abc", "a", "cab"]
# 'ca': 'b' and 'bab' merge with the prompt's 'a', 'c' and 'ab' do not (two prompt-id lists); 'abc': 'abcab' repeats
# the prompt, 'ab<eos>' ends in EOS; 'a': every completion merges (the prompt is the BOS alone).
LETTER_COMPLETIONS = [["b", "c", "bab", "ab"], ["a", "ab<eos>", "abcab"], ["b", "bb"], ["c"]]


def test_completions_share_a_prompt_where_their_prompt_ids_agree():
    tok = letter_tokenizer()
    pairs = [tokenize_rewardbench(p, cs, tok) for p, cs in zip(LETTER_PROMPTS, LETTER_COMPLETIONS)]
    groups, counts, slots = token_groups(None, [[c for _, c in row] for row in pairs], [make_model(tok)], None,
                                         [[p for p, _ in row] for row in pairs])
    assert [(g.prompt_ids, g.slots) for g in groups] == [
        ([BOS, C], [0, 2]), ([BOS, C, A], [1, 3]),  # 'ca': one group per prompt-id list
        ([BOS, AB, C], [4, 5, 6]), ([BOS], [7, 8]), ([BOS, C, AB], [9])]
    assert slots == [[0, 1, 2, 3], [4, 5, 6], [7, 8], [9]]
    # 'bab': [ab ab <eos>]; 'ab<eos>': [ab <eos> <eos>]; 'abcab' (prompt removed): [ab <eos>]; 'bb': [ab b <eos>]
    assert counts == [2, 2, 3, 2, 2, 3, 2, 2, 3, 2]


@pytest.mark.parametrize("options", [
    dict(),  # prefix sharing, policy then reference
    dict(mixed_adapter_batches=True),
    dict(prefix_sharing=False),
    dict(max_batch_tokens=8, max_row_tokens=2),
], ids=["shared", "shared-mixed", "plain", "tiny-budget"])
def test_rewardbench_rewards_equal_the_naive_computation(options):
    tok = letter_tokenizer()
    model, reference = perturbed_lora(tok)
    naive = naive_rewardbench(model, reference, tok, LETTER_PROMPTS, LETTER_COMPLETIONS)
    scorer = ImplicitRewardScorer(model, tok, beta=0.5, tokenization="rewardbench", **options)
    result = scorer.score(LETTER_PROMPTS, LETTER_COMPLETIONS)
    assert_matches(result, naive, beta=0.5)
    expected = [[0.5 * (policy - ref) for policy, ref, _ in row] for row in naive]
    assert result.tolist() == [pytest.approx(row, abs=2e-5) for row in expected]
    if options.get("prefix_sharing", True):
        assert scorer._prefix_problems[id(model)] is None  # the shared-prompt path really ran
    # reference-free, averaged per token: RewardBench's default reference-free score (--ref_free_type avg) at beta=1
    free = scorer.score(LETTER_PROMPTS, LETTER_COMPLETIONS, reference_free=True, normalize="mean", beta=1.0)
    assert free.tolist() == [pytest.approx([policy / n for policy, _, n in row], abs=2e-6) for row in naive]


def test_chat_rewards_equal_the_naive_computation():
    tok = word_tokenizer()
    tok.chat_template = CHAT_TEMPLATE
    model, reference = perturbed_lora(tok)
    prompts = [[{"role": "user", "content": "the movie was"}],
               [{"role": "user", "content": "i was"}, {"role": "assistant", "content": "bad"},
                {"role": "user", "content": "the movie"}]]
    completions = [["good fun", "bad"], ["good", "the movie was bad fun"]]
    as_messages = [[[{"role": "assistant", "content": c}] for c in row] for row in completions]
    naive = naive_rewardbench(model, reference, tok, prompts, as_messages)
    result = ImplicitRewardScorer(model, tok, tokenization="rewardbench").score(prompts, completions)
    assert_matches(result, naive, beta=0.1)


def test_the_two_conventions_on_the_same_rows():
    """Tokens scored per completion (hand-worked above): TRL 'ca' -> [ab <eos>], [a c <eos>], [a b a b <eos>]...;
    RewardBench moves the start back only where that completion merges, adds EOS, and drops repeated prompts."""
    tok = letter_tokenizer()
    model, _ = perturbed_lora(tok)
    prompts, completions = LETTER_PROMPTS[:2], LETTER_COMPLETIONS[:2]
    trl = ImplicitRewardScorer(model, tok).score(prompts, completions)
    same = ImplicitRewardScorer(model, tok, tokenization="trl").score(prompts, completions)
    rb = ImplicitRewardScorer(model, tok, tokenization="rewardbench").score(prompts, completions)
    assert torch.equal(trl.rewards.nan_to_num(), same.rewards.nan_to_num())  # "trl" is the default
    # TRL: 'ca' -> prompt [c]: [ab <eos>], [a c <eos>], [ab ab <eos>], [a ab <eos>];
    #      'abc' -> prompt [ab c]: [a <eos>], [ab <eos>], [ab c ab <eos>]
    assert trl.num_tokens.tolist() == [[2, 3, 3, 3], [2, 2, 4, 0]]
    # RewardBench: [ab <eos>], [c <eos>], [ab ab <eos>], [ab <eos>]; [a <eos>], [ab <eos> <eos>], [ab <eos>]
    assert rb.num_tokens.tolist() == [[2, 2, 3, 2], [2, 3, 2, 0]]
    assert not torch.allclose(trl.rewards[:, :3], rb.rewards[:, :3])
    # 'a' + 'b' merges whole: TRL refuses the prompt, RewardBench scores it after the BOS
    with pytest.raises(PreferenceDataError, match="prompt 0: .*no token of its own"):
        ImplicitRewardScorer(model, tok).score(["a"], [["b"]])
    merged = ImplicitRewardScorer(model, tok, tokenization="rewardbench").score(["a"], [["b"]])
    assert merged.num_tokens.tolist() == [[2]]


def test_rewardbench_truncation_in_the_scorer():
    """A 150-token prompt and max_length=140: prompt + longest completion is over, so the prompt keeps its last 128
    ids, and the completions fit (128 + 4 <= 140)."""
    tok = word_tokenizer()
    model = tiny_model(tok, n_positions=256).eval()
    prompt = " ".join(["the movie was"] * 50) + " "  # 150 words
    scorer = ImplicitRewardScorer(model, tok, reference_free=True, tokenization="rewardbench", max_length=140)
    result = scorer.score([prompt], [["good bad fun", "good"]])
    assert result.num_tokens.tolist() == [[4, 2]]
    prompt_ids = [THE, MOVIE, WAS] * 50
    naive = naive_rewardbench(model, model, tok, [prompt], [["good bad fun", "good"]], max_length=140)
    assert_matches(result, naive, beta=0.1)
    assert tokenize_rewardbench(prompt, ["good"], tok, max_length=140)[0][0] == prompt_ids[-128:]


def test_best_of_n_and_from_pretrained_take_the_convention(tmp_path):
    tok = word_tokenizer()
    model, _ = perturbed_lora(tok)
    scorer = ImplicitRewardScorer(model, tok, tokenization="rewardbench")
    torch.manual_seed(0)
    best = scorer.best_of_n(["the movie was "], n=3, generation_config={"max_new_tokens": 4})[0]
    texts = [c.completion for c in best.candidates]
    again = scorer.score(["the movie was "], [texts])  # sampled texts re-tokenized RewardBench's way
    assert [c.reward for c in best.candidates] == pytest.approx(again.rewards[0].tolist(), abs=1e-6)

    base = make_model(tok)
    base.save_pretrained(tmp_path / "base")
    from transformers import AutoModelForCausalLM

    adapter = get_peft_model(AutoModelForCausalLM.from_pretrained(tmp_path / "base"), LoraConfig(**LORA))
    with torch.no_grad():
        for name, param in adapter.named_parameters():
            if "lora_B" in name:
                param.fill_(0.05)
    adapter.save_pretrained(tmp_path / "adapter")
    tok.save_pretrained(tmp_path / "adapter")
    loaded = ImplicitRewardScorer.from_pretrained(str(tmp_path / "adapter"), device="cpu", tokenization="rewardbench")
    assert loaded.tokenization == "rewardbench"
    rows = (["the movie was "], [["good", "the movie was good<eos>"]])
    expected = ImplicitRewardScorer(adapter.eval(), tok, tokenization="rewardbench").score(*rows)
    assert torch.allclose(loaded.score(*rows).rewards, expected.rewards, atol=1e-6)
    assert expected.num_tokens.tolist() == [[2, 3]]
