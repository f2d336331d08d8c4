"""The RL baseline: optimise the ground-truth classifier reward directly with TRL's RLOO (or GRPO) trainer under a
KL penalty (``rl_beta``) to the SFT policy (adapters disabled). It stands in for the paper's PPO-GT, which TRL no
longer ships. On-policy sampling makes it the costliest run per step on CPU, so it gets its own step budget
(``rl_max_steps``).
"""


def make_trainer(method, run, model, tokenizer, prefs, config, peft_config, callbacks, reward):
    """TRL's RLOO or GRPO trainer; its config takes ``config``'s (the run's `PLDPOConfig`) training settings."""
    from datasets import Dataset
    from train_methods import trl_config

    prompts = [row["prompt"] for row in prefs["ranked"]]
    dataset = Dataset.from_dict({"prompt": prompts})
    num_generations = max(2, len(prefs["ranked"][0]["completions"]))  # K, as in the preference data

    def ground_truth_reward(prompts, completions, **_):
        # The classifier reads the whole review so far, as everywhere else in the recipe.
        return reward([p + c.replace(tokenizer.eos_token, "") for p, c in zip(prompts, completions)])

    # Per-device batch counts completions; it must be a multiple of the completions per prompt.
    batch = config.per_device_train_batch_size
    overrides = {"max_steps": run["max_steps"], "beta": run["beta"],
                 "per_device_train_batch_size": max(num_generations, batch - batch % num_generations),
                 "num_generations": num_generations, "max_completion_length": run["max_new_tokens"],
                 "temperature": 1.0, "top_k": 0, "top_p": 1.0}
    if method == "rloo":
        from trl import RLOOConfig, RLOOTrainer

        args, trainer_class = trl_config(RLOOConfig, config, **overrides), RLOOTrainer
    else:
        from trl import GRPOConfig, GRPOTrainer

        args, trainer_class = trl_config(GRPOConfig, config, **overrides), GRPOTrainer
    return trainer_class(model=model, reward_funcs=ground_truth_reward, args=args, train_dataset=dataset,
                         processing_class=tokenizer, peft_config=head_trained_in_full(peft_config), callbacks=callbacks)


def head_trained_in_full(peft_config):
    """TRL's RL trainers compute log-probs from ``lm_head.weight`` directly and refuse a LoRA adapter on the LM head.
    An adapter that cannot move the head can barely shift the probability of single words on this tiny model (see
    the recipe README), so the RL run trains a full copy of the head instead (PEFT's ``modules_to_save``: its
    ``weight`` is the trained copy, and disabling the adapter gives back the SFT head, the reference)."""
    import copy

    config = copy.deepcopy(peft_config)
    if "lm_head" in config.target_modules:
        config.target_modules = {m for m in config.target_modules if m != "lm_head"}
        config.modules_to_save = sorted(set(config.modules_to_save or []) | {"lm_head"})
    return config
