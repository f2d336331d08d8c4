"""A sequence-classification reward model as a judge: the one place that loads such a model and scores
``prompt + completion`` with it (`dpo-ext label`, and the recipes' win rate).

The model is an ``AutoModelForSequenceClassification`` folder or Hub id with exactly one output (its score), loaded
from safetensors only with the checks of `dpo_ext.modeling.loading` (no pickle opened, truncated files and NaN
weights refused, every weight loaded). A text prompt is scored as ``prompt + completion``; a chat prompt as the
conversation (prompt + the assistant's reply) rendered by the reward model's own chat template, which writes its own
special tokens. Texts too long for the model lose their beginning, never the reply being judged.
"""

from dpo_ext.judges.base import Judge
from dpo_ext.modeling.loading import load_checked_model
from dpo_ext.modeling.models import position_limit
from dpo_ext.modeling.tokenizers import ensure_pad_token, load_tokenizer

# A tokenizer "limit" this large is transformers' placeholder for "unknown", not a real limit.
_NO_LIMIT = 1_000_000


def check_reward_model_config(config, name: str = "the reward model") -> None:
    """Refuse, before any weight is read, a model that is not a sequence classifier with exactly one output.

    Raises:
        `ValueError`: naming ``name``, its architecture or its number of outputs.
    """
    architectures = list(getattr(config, "architectures", None) or [])
    if architectures and not any(a.endswith("ForSequenceClassification") for a in architectures):
        raise ValueError(f"{name} is a {', '.join(architectures)}, not a sequence-classification reward model "
                         "(*ForSequenceClassification with one output); pass a reward model")
    if config.num_labels != 1:
        raise ValueError(f"{name} has {config.num_labels} outputs (num_labels={config.num_labels}); a reward model "
                         "has exactly one, its score: pass a reward model (num_labels=1), not a classifier")


def reward_text(prompt, completion, tokenizer) -> str:
    """What the reward model reads: ``prompt + completion``, or for a chat prompt the conversation rendered by the
    reward model's own chat template (``completion``: text, or the assistant's messages)."""
    if isinstance(prompt, str):
        return prompt + completion
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError("the prompts are chat messages but the reward model's tokenizer has no chat template: use a "
                         "reward model trained on chats, or give text prompts")
    reply = completion if isinstance(completion, list) else [{"role": "assistant", "content": completion}]
    return tokenizer.apply_chat_template(list(prompt) + reply, tokenize=False)


class RewardModelJudge(Judge):
    """A reward model's score of each ``(prompt, completion)``.

    Args:
        model (`PreTrainedModel`): a sequence classifier with one output (``num_labels == 1``).
        tokenizer (`PreTrainedTokenizerBase`): its tokenizer (a pad token is set to EOS when it has none).
        batch_size (`int`, defaults to 8): texts per forward.
        name (`str`, *optional*): how errors name the judge.
    """

    def __init__(self, model, tokenizer, *, batch_size: int = 8, name: str | None = None):
        self.name = name or f"rm:{model.name_or_path}"
        check_reward_model_config(model.config, f"reward model {self.name!r}")
        ensure_pad_token(tokenizer, f"the tokenizer of {self.name}")
        model.config.pad_token_id = tokenizer.pad_token_id  # where a decoder reward model finds each text's end
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.model, self.tokenizer, self.batch_size = model.eval(), tokenizer, batch_size
        # The model's position table, or the tokenizer's limit; neither known: no truncation
        limit = min(position_limit(model) or tokenizer.model_max_length, tokenizer.model_max_length)
        self.max_length = limit if limit < _NO_LIMIT else None

    @classmethod
    def from_pretrained(cls, source: str, *, batch_size: int = 8, device=None, dtype=None, revision=None,
                        name: str | None = None) -> "RewardModelJudge":
        """Load the reward model and tokenizer saved at ``source`` (a folder or Hub id) onto ``device`` (default:
        CUDA when available), in ``dtype`` (a `torch.dtype`; default: as saved).

        Raises:
            `ValueError`: not a reward model with one output, weights pickled only, damaged or not matching.
            `FileNotFoundError`: no such folder, or not in the cache offline.
        """
        model = load_checked_model(source, "AutoModelForSequenceClassification", check_reward_model_config,
                                   what="reward model", revision=revision,
                                   hint="pass a reward model's local folder or Hub id", dtype=dtype)
        tokenizer = load_tokenizer(source, "a reward model folder with its tokenizer", revision)
        import torch

        model = model.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        return cls(model, tokenizer, batch_size=batch_size, name=name or f"rm:{source}")

    def _token_ids(self, prompt, completion) -> list[int]:
        chat = not isinstance(prompt, str)  # a chat template writes its own special tokens
        self.tokenizer.truncation_side = "left"
        return self.tokenizer(reward_text(prompt, completion, self.tokenizer), add_special_tokens=not chat,
                              truncation=self.max_length is not None, max_length=self.max_length)["input_ids"]

    def score_flat(self, prompts: list, completions: list) -> list[float]:
        """One score per ``(prompts[i], completions[i])``, ``batch_size`` texts per forward."""
        import torch

        ids = [self._token_ids(p, c) for p, c in zip(prompts, completions)]
        device = next(self.model.parameters()).device
        scores = []
        with torch.inference_mode():
            for start in range(0, len(ids), self.batch_size):
                batch = self.tokenizer.pad({"input_ids": ids[start:start + self.batch_size]}, return_tensors="pt")
                scores += self.model(**batch.to(device)).logits[:, 0].float().tolist()  # (b,)
        return scores

    def __call__(self, prompts, completions):
        flat = self.score_flat([p for p, c in zip(prompts, completions) for _ in c],
                               [x for c in completions for x in c])
        out, start = [], 0
        for c in completions:  # back to one list per row
            out.append(flat[start:start + len(c)])
            start += len(c)
        return out
