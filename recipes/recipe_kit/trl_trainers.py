"""TRL's own trainers on a recipe's `dpo_ext.PLDPOConfig`, for the runs a recipe sets beside `PLDPOTrainer`'s: the
same DPO through `trl.DPOTrainer` (a parity check), and an RL baseline that optimises a ground-truth reward directly
(`trl.RLOOTrainer` or `trl.GRPOTrainer`, under a KL penalty to the starting policy). Their configs take the
`PLDPOConfig`'s values for every `transformers.TrainingArguments` field, so one YAML drives every run.
"""

import copy
from dataclasses import fields

# Fields trl.DPOConfig shares with PLDPOConfig, meaning the same thing in both.
DPO_SHARED = ("beta", "max_length", "precompute_ref_log_probs", "precompute_ref_batch_size", "disable_dropout",
              "dataset_num_proc")


def trl_config(config_class, training_args, **overrides):
    """A TRL trainer config with ``training_args``'s values for every `transformers.TrainingArguments` field, then
    ``overrides``. ``remove_unused_columns`` is left at the TRL default: PLDPOConfig's value is about its own columns.
    """
    from transformers import TrainingArguments

    generic = {f.name: getattr(training_args, f.name) for f in fields(TrainingArguments)
               if f.init and f.name != "remove_unused_columns"}
    return config_class(**{**generic, **overrides})


def trl_dpo_config(config):
    """`trl.DPOConfig` with ``config``'s (a `PLDPOConfig`'s) values, sigmoid loss."""
    from trl import DPOConfig

    return trl_config(DPOConfig, config, **{name: getattr(config, name) for name in DPO_SHARED}, loss_type=["sigmoid"])


def dpo_trainer(model, config, pairs: list[dict], tokenizer, peft_config, callbacks):
    """`trl.DPOTrainer` (sigmoid loss, `trl_dpo_config`) on ``{"prompt", "chosen", "rejected"}`` rows; the reference
    is ``model`` with the adapter disabled, as for `PLDPOTrainer`."""
    from datasets import Dataset
    from trl import DPOTrainer

    return DPOTrainer(model=model, ref_model=None, args=trl_dpo_config(config), train_dataset=Dataset.from_list(pairs),
                      processing_class=tokenizer, peft_config=peft_config, callbacks=callbacks)


def rl_trainer(method: str, model, config, prompts: list[str], reward, tokenizer, peft_config, callbacks, *,
               max_steps: int, beta: float, num_generations: int, max_completion_length: int):
    """TRL's ``"rloo"`` or ``"grpo"`` trainer on ``prompts``, maximising ``reward(texts) -> list[float]`` of each
    prompt + completion (EOS removed) under a KL penalty ``beta``; its config takes ``config``'s training settings,
    and samples from the untouched distribution (no temperature, top-k or top-p)."""
    from datasets import Dataset

    def ground_truth_reward(prompts, completions, **_):
        # The reward reads the whole text so far, prompt included.
        return reward([p + c.replace(tokenizer.eos_token, "") for p, c in zip(prompts, completions)])

    # Per-device batch counts completions; it must be a multiple of the completions per prompt.
    batch = config.per_device_train_batch_size
    overrides = {"max_steps": max_steps, "beta": beta,
                 "per_device_train_batch_size": max(num_generations, batch - batch % num_generations),
                 "num_generations": num_generations, "max_completion_length": max_completion_length,
                 "temperature": 1.0, "top_k": 0, "top_p": 1.0}
    if method == "rloo":
        from trl import RLOOConfig, RLOOTrainer

        args, trainer_class = trl_config(RLOOConfig, config, **overrides), RLOOTrainer
    else:
        from trl import GRPOConfig, GRPOTrainer

        args, trainer_class = trl_config(GRPOConfig, config, **overrides), GRPOTrainer
    return trainer_class(model=model, reward_funcs=ground_truth_reward, args=args,
                         train_dataset=Dataset.from_dict({"prompt": prompts}), processing_class=tokenizer,
                         peft_config=head_trained_in_full(peft_config), callbacks=callbacks)


def head_trained_in_full(peft_config):
    """TRL's RL trainers compute log-probs from ``lm_head.weight`` directly and refuse a LoRA adapter on the LM head.
    An adapter that cannot move the head can barely shift the probability of single words on a tiny model (see the
    sentiment recipe's README), so the RL run trains a full copy of the head instead (PEFT's ``modules_to_save``: its
    ``weight`` is the trained copy, and disabling the adapter gives back the starting head, the reference)."""
    config = copy.deepcopy(peft_config)
    if "lm_head" in config.target_modules:
        config.target_modules = {m for m in config.target_modules if m != "lm_head"}
        config.modules_to_save = sorted(set(config.modules_to_save or []) | {"lm_head"})
    return config
