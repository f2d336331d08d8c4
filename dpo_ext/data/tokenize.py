"""Tokenizing normalised rows the way `trl.DPOTrainer` does, and preparing a whole dataset by the row rules of
`dpo_ext.data`. Also RewardBench's DPO tokenization (`tokenize_rewardbench`), which only the scorer uses, on request,
to reproduce RewardBench's numbers.
"""

import logging
from collections import Counter

from dpo_ext.data.lengths import check_length_settings as check_length_settings  # its old home: keep importable
from dpo_ext.data.lengths import fit_max_length, keep_prompt_end
from dpo_ext.data.rows import (
    COMPLETION_IDS,
    COMPLETIONS,
    PROMPT,
    PROMPT_IDS,
    RANKS,
    REF_LOGPS,
    ROW_INDEX,
    SCORES,
    PreferenceDataError,
    normalize_row,
)
from dpo_ext.data.summary import summarize_counts

logger = logging.getLogger(__name__)


def _common_prefix_length(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def tokenize_ranked(prompt, completions, tokenizer) -> tuple[list[int], list[list[int]]]:
    """Tokenize a prompt and its K completions the way ``trl.DPOTrainer`` does, so rewards and losses line up.

    Plain text: EOS is appended to each completion that lacks it, and ``prompt + completion`` is tokenized as one
    string. Conversational: the chat template renders ``prompt`` (with the generation prompt) and
    ``prompt + completion``. In both cases the completion starts where the tokenized prompt and the tokenized
    ``prompt + completion`` first differ (over all K completions), since tokens may merge across the boundary.

    Returns:
        `(prompt_ids, completion_ids)`: a list of ints and a list of K lists of ints.

    Raises:
        `PreferenceDataError` (field ``prompt``): when no prompt token is left (the prompt merges into a completion's
            first token), or for chat messages and a tokenizer without a chat template.
    """
    if isinstance(prompt, list):
        if getattr(tokenizer, "chat_template", None) is None:
            raise PreferenceDataError("the prompt is a list of chat messages but the tokenizer has no chat template "
                                      "(set tokenizer.chat_template, or give text prompts)", field=PROMPT)
        prompt_ids = tokenizer.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True, return_dict=True)
        prompt_ids = list(prompt_ids["input_ids"])
        full = [
            list(tokenizer.apply_chat_template(prompt + c, tokenize=True, return_dict=True)["input_ids"])
            for c in completions
        ]
    else:
        eos = tokenizer.eos_token or ""
        prompt_ids = tokenizer(prompt)["input_ids"]
        full = [tokenizer(prompt + (c if c.endswith(eos) else c + eos))["input_ids"] for c in completions]
    prompt_len = min(_common_prefix_length(prompt_ids, ids) for ids in full)
    if prompt_len == 0:
        raise PreferenceDataError(
            "the prompt gives no token of its own: tokenized with a completion, it merges into the completion's first "
            "token, so nothing would predict that token. End the prompt where a token ends (with a space or a "
            "newline, say), or start it with the tokenizer's BOS token text", field=PROMPT)
    return prompt_ids[:prompt_len], [ids[prompt_len:] for ids in full]


# RewardBench's fixed settings (``DPOInference.__init__``: ``max_length``, ``max_prompt_length``, keeping the prompt's
# end)
REWARDBENCH_MAX_LENGTH = 2048
REWARDBENCH_MAX_PROMPT_LENGTH = 128


def _rewardbench_texts(prompt, completions, tokenizer) -> tuple[str, list[str]]:
    """The prompt string and the completion strings RewardBench gives its DPO tokenizer. Chat messages are rendered
    with the chat template as RewardBench renders them (``prepare_dialogue_from_tokenizer``): the prompt *without* a
    generation prompt, each completion as the whole conversation (its prompt is removed again afterwards)."""
    if not isinstance(prompt, list):
        return prompt, list(completions)
    if getattr(tokenizer, "chat_template", None) is None:
        raise PreferenceDataError("the prompt is a list of chat messages but the tokenizer has no chat template "
                                  "(set tokenizer.chat_template, or give text prompts)", field=PROMPT)
    # run_dpo.py sets the pad token (always) and a missing BOS token to EOS before it renders the template, so a
    # template that writes them writes EOS; the same values are passed here rather than set on the caller's tokenizer
    special = {"pad_token": tokenizer.eos_token}
    if tokenizer.bos_token is None:
        special["bos_token"] = tokenizer.eos_token
    return (tokenizer.apply_chat_template(prompt, tokenize=False, **special),
            [tokenizer.apply_chat_template(prompt + c, tokenize=False, **special) for c in completions])


def rewardbench_bos_id(tokenizer) -> int:
    """The id RewardBench puts before every prompt: the BOS token's, or for a tokenizer without one (Qwen2.5) the EOS
    token's, as ``scripts/run_dpo.py`` sets it (``tokenizer.bos_token_id = tokenizer.eos_token_id``)."""
    return tokenizer.eos_token_id if tokenizer.bos_token is None else tokenizer.bos_token_id


def check_rewardbench_tokenizer(tokenizer) -> None:
    """Raise a `ValueError` unless ``tokenizer`` has the EOS token RewardBench's tokenization adds after every
    completion (and before every prompt when the tokenizer has no BOS token)."""
    if getattr(tokenizer, "eos_token_id", None) is None:
        raise ValueError("RewardBench's tokenization puts the tokenizer's EOS token after every completion (and "
                         "before every prompt when there is no BOS token), and this tokenizer has no EOS token "
                         "(RewardBench cannot score with it either): set tokenizer.eos_token to the token that ends "
                         "the model's replies, or use TRL's tokenization")


def tokenize_rewardbench(prompt, completions, tokenizer, max_length: int = REWARDBENCH_MAX_LENGTH,
                         max_prompt_length: int = REWARDBENCH_MAX_PROMPT_LENGTH) -> list[tuple[list[int], list[int]]]:
    """Tokenize a prompt and its K completions the way RewardBench scores DPO models (``rewardbench`` 0.1.4,
    ``rewardbench/dpo.py``, ``DPOInference.tokenize_row`` and ``build_tokenized_answer``), so that log-probs sum over
    the tokens RewardBench sums over. Unlike `tokenize_ranked` (TRL's convention, the one models are trained with):

    1. The prompt string is removed from each completion wherever it occurs (``str.replace``). RewardBench's
       completion is the whole rendered conversation, and this is how it drops the prompt from it; passing the
       completion alone or ``prompt + completion`` gives the same ids.
    2. ``prompt`` and ``prompt + completion`` are tokenized without special tokens. The completion starts after as
       many tokens as the prompt alone has, or one token earlier when those are not the joint text's first tokens
       (a token merged across the boundary, which then counts as the completion's).
    3. The tokenizer's BOS id goes before the prompt, whether or not the tokenizer adds a BOS token itself; a
       tokenizer without a BOS token (Qwen2.5...) gets its EOS id there instead (`rewardbench_bos_id`).
    4. The EOS id goes after the completion, even when its text already ends in EOS.
    5. With L the longest completion of this prompt (EOS included; RewardBench pairs chosen and rejected): where
       prompt + L is longer than ``max_length``, the prompt keeps its last ``max_prompt_length`` ids (the BOS is
       among the first to go), and where that is still longer, the completion keeps its first
       ``max_length - max_prompt_length`` ids.

    Chat messages are rendered by the chat template as RewardBench renders them (see `_rewardbench_texts`): the
    generation prompt (``"<|assistant|>"``...) is then part of each completion, and scored. ``tokenizer`` is not
    changed.

    Returns:
        `list`: K ``(prompt_ids, completion_ids)`` pairs; the prompt ids may differ between completions (by the
        boundary token, or by truncation).

    Raises:
        `ValueError`: for a tokenizer without an EOS token (RewardBench cannot score with it either).
        `PreferenceDataError`: when ``prompt + completion`` has fewer tokens than the prompt alone (RewardBench stops
            on such a row too), or for chat messages and a tokenizer without a chat template.
    """
    if max_prompt_length < 1 or max_length <= max_prompt_length:
        raise ValueError(f"max_length ({max_length}) must be above max_prompt_length ({max_prompt_length}), which "
                         "must be at least 1")
    check_rewardbench_tokenizer(tokenizer)
    bos, eos = rewardbench_bos_id(tokenizer), tokenizer.eos_token_id
    prompt_text, texts = _rewardbench_texts(prompt, completions, tokenizer)
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    pairs = []
    for k, text in enumerate(texts):
        joint = tokenizer(prompt_text + text.replace(prompt_text, ""), add_special_tokens=False)["input_ids"]
        if len(joint) < len(prompt_ids):
            raise PreferenceDataError(
                f"prompt + completion is {len(joint)} tokens, fewer than the prompt's {len(prompt_ids)} alone, so "
                "RewardBench's tokenization cannot place the completion (RewardBench itself stops on such a row)",
                field=f"{COMPLETIONS}[{k}]", completion=k)
        start = len(prompt_ids) - (joint[: len(prompt_ids)] != prompt_ids)
        pairs.append(([bos] + joint[:start], joint[start:] + [eos]))
    completions = [ids for _, ids in pairs]
    longest = max(len(ids) for ids in completions)
    out = []
    for prompt_part, completion in pairs:
        # RewardBench's prompt cut is training's (`keep_prompt_end`, against the longest completion of the prompt);
        # only the completion cut after it is RewardBench's own
        prompt_part = keep_prompt_end(prompt_part, completions, max_length, max_prompt_length)
        if len(prompt_part) + longest > max_length:
            completion = completion[: max_length - max_prompt_length]
        out.append((prompt_part, completion))
    return out


def prepare_row(row: dict, index: int | None, tokenizer=None):
    """The one preparation of one row, for training (`prepare_ranked_dataset`) and for `dpo-ext validate`
    (`dpo_ext.data.validation.validate_rows`), so that both accept exactly the same rows: the row rules
    (`dpo_ext.data.rows.normalize_row`), then the token ids (`tokenize_ranked`; a tokenized row's own ids).

    Args:
        row (`dict`): one row, with every column of its dataset (`None` where the row has no value).
        index (`int`): its position in the dataset, for errors.
        tokenizer (*optional*): without one, text rows get no ids (the row rules alone are applied).

    Returns:
        `(NormalizedRow, ids)`: ``ids`` is ``(prompt_ids, completion_ids)``, or `None` for a text row and no tokenizer.

    Raises:
        `PreferenceDataError`: naming the row (``index``) and the field.
    """
    try:
        normalized = normalize_row(row, index)
        if normalized.tokenized:
            return normalized, (normalized.prompt, normalized.completions)
        if tokenizer is None:
            return normalized, None
        return normalized, tokenize_ranked(normalized.prompt, normalized.completions, tokenizer)
    except PreferenceDataError as error:
        raise error.located(row=index) from None


def prepare_ranked_dataset(dataset, tokenizer, max_length: int | None = None, num_proc=None, name="train",
                           max_prompt_length: int | None = None):
    """Check, normalise and tokenize a `datasets.Dataset` of preference rows (any format of this module, tokenized
    ones included) by the row rules of this module.

    Returns a dataset with columns ``prompt_ids``, ``completion_ids`` (K lists), ``ranks`` (K dense ranks),
    ``row_index`` (the row's index in ``dataset``, or a tokenized row's own ``row_index``, so that errors during
    training can name it) and, when the input had one, ``ref_logps``. With ``max_prompt_length``, a prompt that
    does not fit with its longest completion keeps its end (`keep_prompt_end`); this is the only place it is cut, so
    collators see the cut prompt. Rows with no preference and rows whose prompt alone reaches ``max_length`` are
    dropped; what was dropped, cut or collapsed is logged.

    Raises:
        `PreferenceDataError`: for the first invalid row, naming the dataset (``name``), the row and the field.
    """

    def prepare(row, index):
        try:
            normalized, (prompt_ids, completion_ids) = prepare_row(row, index, tokenizer)
        except PreferenceDataError as error:
            raise error.located(dataset=name) from None
        whole = len(prompt_ids)
        prompt_ids = keep_prompt_end(prompt_ids, completion_ids, max_length, max_prompt_length)
        own_index = row.get(ROW_INDEX) if normalized.tokenized else None
        out = {PROMPT_IDS: prompt_ids, COMPLETION_IDS: completion_ids, RANKS: normalized.ranks,
               ROW_INDEX: index if own_index is None else own_index, "_collapsed": normalized.num_collapsed,
               "_no_preference": normalized.no_preference or "", "_key": normalized.key(),
               "_cut": len(prompt_ids) < whole}
        out[SCORES] = normalized.scores  # None for rows given by rank: one schema for every row
        return out if normalized.ref_logps is None else {**out, REF_LOGPS: normalized.ref_logps}

    if len(dataset) == 0:  # map() of no rows adds no columns, and the counts below would fail on a missing one
        raise PreferenceDataError(f"{name} dataset is empty: give it at least one row with a preference")
    dataset = dataset.map(prepare, with_indices=True, remove_columns=dataset.column_names, num_proc=num_proc,
                          desc=f"Checking and tokenizing {name} preferences")
    num_rows, collapsed = len(dataset), sum(dataset["_collapsed"])
    no_preference = Counter(reason for reason in dataset["_no_preference"] if reason)
    dataset = dataset.filter(lambda reason: not reason, input_columns="_no_preference", num_proc=num_proc)
    keys = dataset["_key"]
    for line in summarize_counts(num_rows, no_preference, collapsed, len(keys) - len(set(keys))):
        logger.warning("%s: %s.", name, line)
    cut = sum(dataset["_cut"])
    if cut:
        logger.warning("%s: cut %d of %d prompts to their last max_prompt_length=%d tokens, to fit max_length=%d "
                       "with their longest completion.", name, cut, len(dataset), max_prompt_length, max_length)
    dataset = dataset.remove_columns(["_collapsed", "_no_preference", "_key", "_cut"])
    if max_length is not None:
        before = len(dataset)
        dataset = dataset.filter(lambda p: not fit_max_length(p, [], max_length).dropped, input_columns=PROMPT_IDS,
                                 num_proc=num_proc)
        if len(dataset) < before:
            logger.warning(
                "%s: dropped %d of %d rows whose prompt alone has max_length=%d tokens or more.",
                name, before - len(dataset), before, max_length,
            )
    if len(dataset) == 0:
        raise PreferenceDataError("no usable rows left after validation (see the warnings above)", dataset=name)
    return dataset
