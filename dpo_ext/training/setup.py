"""What `PLDPOTrainer` builds before training starts: the policy and tokenizer made ready and checked against each
other and the reference model, and datasets turned into validated, tokenized rows the models can take (the checks
themselves are in `dpo_ext.training.checks`)."""

from dataclasses import dataclass

import torch

from dpo_ext.data.tokenize import prepare_ranked_dataset
from dpo_ext.modeling.loading import load_causal_lm
from dpo_ext.modeling.models import check_tokenizer_fits, position_limit, vocabulary_size
from dpo_ext.modeling.tokenizers import ensure_pad_token, load_tokenizer
from dpo_ext.reference import check_reference_model, is_peft_model
from dpo_ext.training.checks import check_rows_fit, check_weights_present, rows_to_dataset


def prepare_models(model, ref_model, tokenizer, peft_config, args):
    """The policy (loaded when given as a name or folder, wrapped in a new adapter with ``peft_config``) and its
    tokenizer, checked against each other and against ``ref_model``; dropout off when ``args.disable_dropout``.

    Returns:
        `(model, tokenizer)`.
    """
    if isinstance(model, str):
        tokenizer = tokenizer or load_tokenizer(model, "processing_class")
        model = load_causal_lm(model, hint="pass a causal LM's local folder or Hub id, or the model itself")
    tokenizer = tokenizer or load_tokenizer(model.name_or_path, "processing_class")
    ensure_pad_token(tokenizer)
    check_weights_present(model, "the policy")
    check_tokenizer_fits(model, tokenizer, "the policy")
    if ref_model is not None:
        if ref_model is model:
            raise ValueError("model and ref_model must be different objects; omit ref_model to share weights")
        check_weights_present(ref_model, "ref_model")
        check_reference_model(model, ref_model, tokenizer)
    if peft_config is not None:
        if is_peft_model(model):
            raise ValueError(
                "model is already a PeftModel and a peft_config was given too: pass one of them (to train the "
                "existing adapter further, pass the PeftModel alone)"
            )
        from peft import get_peft_model

        model = get_peft_model(model, peft_config)
    if args.gradient_checkpointing and is_peft_model(model):
        model.enable_input_require_grads()  # checkpointed blocks need an input that requires grad
    if args.disable_dropout:
        for module in (m for net in (model, ref_model) if net is not None for m in net.modules()):
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
    return model, tokenizer


@dataclass
class DatasetPreparer:
    """Turns what the trainer is given (a `datasets.Dataset` of raw or tokenized rows, a list of dicts, a dict of
    those, or None) into validated, tokenized rows whose ids and lengths the models can take."""

    tokenizer: object
    max_length: int | None
    num_proc: int | None
    position_limit: int | None
    vocab_size: int | None
    max_prompt_length: int | None = None

    @classmethod
    def for_models(cls, tokenizer, args, model, ref_model=None) -> "DatasetPreparer":
        limits = [position_limit(m) for m in (model, ref_model) if m is not None]
        return cls(tokenizer, args.max_length, args.dataset_num_proc,
                   min((n for n in limits if n is not None), default=None), vocabulary_size(model),
                   args.max_prompt_length)

    def __call__(self, dataset, name: str = "eval"):
        """One dataset named ``name``, a dict of datasets named by their keys, or None."""
        if isinstance(dataset, dict):
            return {key: self(value, key) for key, value in dataset.items()}
        if dataset is None:
            return None
        if isinstance(dataset, list):
            dataset = rows_to_dataset(dataset, name)
        dataset = prepare_ranked_dataset(dataset, self.tokenizer, self.max_length, self.num_proc, name,
                                         self.max_prompt_length)
        check_rows_fit(dataset, name, self.position_limit, self.max_length, self.vocab_size)
        return dataset
