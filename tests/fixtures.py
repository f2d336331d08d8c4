"""Helpers the tests share (imported as `fixtures`; pytest fixtures themselves are in conftest.py): tiny models,
preference rows with a learnable pattern, and the tokens of the loopback Hub."""

import importlib.util
import random
import sys
from pathlib import Path

import yaml

from dpo_ext.testing import TOY_WORDS as WORDS
from dpo_ext.testing import tiny_model

# Deliberately not shaped like a real "hf_..." token: redaction must rely on knowing the token, not on its format.
TOKEN = "dpo-ext-test-secret-7f3a9c"
READ_TOKEN = "dpo-ext-read-only-secret-91bd"


def make_model(tokenizer, seed=0, n_layer=2, n_embd=32):
    return tiny_model(tokenizer, seed=seed, n_layer=n_layer, n_embd=n_embd)


def sentence(rng, n):
    return " ".join(rng.choice(WORDS) for _ in range(n))


def ranked_rows(n_rows=8, k=4, seed=0, variable_k=False):
    """Ranked rows with a learnable pattern: completions with more 'good' words rank higher."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n_rows):
        kk = rng.randint(2, k) if variable_k else k
        completions = [" ".join(["good"] * (kk - j) + [rng.choice(WORDS)]) for j in range(kk)]
        order = list(range(kk))
        rng.shuffle(order)
        rows.append({"prompt": sentence(rng, 3) + " ", "completions": [completions[j] for j in order],
                     "ranks": order})
    return rows


def pairwise_rows(n_rows=8, seed=0):
    rng = random.Random(seed)
    return [{"prompt": sentence(rng, 3) + " ", "chosen": "good great " + sentence(rng, 2),
             "rejected": "bad awful " + sentence(rng, 3)} for _ in range(n_rows)]


def train_settings(tmp_path, **values) -> dict:
    """Keyword arguments of a trainer config for a test run: on CPU, reporting and saving nothing unless asked, a
    log line every step; ``values`` add to or override them."""
    return {"output_dir": str(tmp_path / "out"), "report_to": "none", "use_cpu": True, "save_strategy": "no",
            "logging_steps": 1, **values}


def load_recipe(name: str):
    """``recipes/<name>/run.py`` as a module named ``<name>_run`` (every recipe script is called run.py)."""
    module_name = f"{name}_run"
    if module_name not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "recipes" / name / "run.py"
        spec = importlib.util.spec_from_file_location(module_name, path)
        sys.modules[module_name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[module_name])
    return sys.modules[module_name]


def card_metrics(readme) -> dict:
    """``{metric type: value}`` of the ``model-index`` in a model card's front matter (README.md path)."""
    head = yaml.safe_load(Path(readme).read_text().split("---")[1])
    return {m["type"]: m["value"] for result in head["model-index"][0]["results"] for m in result["metrics"]}


def launch_commands(config) -> list[str]:
    """The commands in the leading comment lines of a recipe config (each config starts with how to launch it)."""
    commands = []
    for line in Path(config).read_text().splitlines():
        if not line.startswith("# "):
            break
        if line.startswith(("# python ", "# accelerate launch ", "# HF_HUB_OFFLINE=1 ")):
            commands.append(line[2:])
    return commands


def parse_recipe_config(recipe: str, name: str):
    """A recipe's config ``recipes/<recipe>/configs/<name>``, checked to start with its launch commands (``python
    recipes/<recipe>/run.py --config ...``, then, except for ``test.yaml``, the same under
    ``accelerate launch --config_file recipes/accelerate/ddp.yaml``) and parsed by the recipe's parser on a CPU.
    Returns the parsed run."""
    config = f"recipes/{recipe}/configs/{name}"
    path = Path(__file__).resolve().parents[1] / config
    commands = launch_commands(path)
    assert commands and commands[0].endswith(f"python recipes/{recipe}/run.py --config {config}")
    if name != "test.yaml":
        assert commands[1].startswith("accelerate launch --config_file recipes/accelerate/ddp.yaml "
                                      f"recipes/{recipe}/run.py --config {config}")
    return load_recipe(recipe).parse(["--config", str(path), "--use_cpu", "true"])


def run_sft_dpo_recipe(recipe: str, fixture, root):
    """``recipes/<recipe>/run.py`` with ``configs/test.yaml`` on ``fixture`` (train and test split alike): SFT, DPO,
    evaluation, the win rate and a push staged in ``root/staged``, with a tiny policy and reward model built in
    ``root/tiny``. Returns ``(models, results)``."""
    recipes = Path(__file__).resolve().parents[1] / "recipes"
    sys.path.insert(0, str(recipes))
    from recipe_kit import tiny_models

    models = tiny_models.build(root / "tiny", [str(fixture)])
    results = load_recipe(recipe).main([
        "--config", str(recipes / recipe / "configs" / "test.yaml"), "--model_name_or_path", models["policy"],
        "--reward_model_name", models["reward"], "--data_files", f"train={fixture}", f"test={fixture}",
        "--sft_output_dir", str(root / "sft"), "--output_dir", str(root / "dpo"),
        "--push_to_hub", "--hub_model_id", f"me/{recipe}-tiny", "--hub_dry_run", str(root / "staged")])
    return models, results


# A LoRA on every linear layer, with the fan-in/fan-out of GPT-2's Conv1D
SCORING_LORA = dict(r=4, lora_alpha=8, target_modules=["c_attn", "c_proj", "c_fc"], fan_in_fan_out=True,
                    lora_dropout=0.0)


def perturbed_lora(tokenizer, seed=0, attn="sdpa", lora_seed=1):
    """(PeftModel with a non-zero LoRA, deep copy of its base): policy and reference differ."""
    import copy

    import torch
    from peft import LoraConfig, get_peft_model

    base = make_model(tokenizer, seed=seed)
    base.config._attn_implementation = attn
    reference = copy.deepcopy(base).eval()
    model = get_peft_model(base, LoraConfig(**SCORING_LORA))
    generator = torch.Generator().manual_seed(lora_seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    return model.eval(), reference


def save_base_and_adapter(tokenizer, root, target_modules=("c_attn",), lora_scale=None, seed=None,
                          adapter_tokenizer=False, **lora_kwargs):
    """``root/base`` (a model with its tokenizer) and ``root/adapter`` (a LoRA on it), as `save_pretrained` writes
    them. ``lora_scale``: its B matrices drawn from N(0, lora_scale) (seeded by ``seed`` when given), so that it is
    not a no-op."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    make_model(tokenizer).save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(root / "base"),
                           LoraConfig(r=4, target_modules=list(target_modules), fan_in_fan_out=True, **lora_kwargs))
    if lora_scale is not None:
        if seed is not None:
            torch.manual_seed(seed)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.normal_(0, lora_scale)
    model.save_pretrained(root / "adapter")
    if adapter_tokenizer:
        tokenizer.save_pretrained(root / "adapter")
    return root


def save_reward_model(tokenizer, folder, num_labels=1):
    """A 2-layer `GPT2ForSequenceClassification` (``num_labels`` outputs) built from a config, saved to ``folder``
    (weights only: save a tokenizer beside it)."""
    import torch
    from transformers import GPT2Config, GPT2ForSequenceClassification

    torch.manual_seed(3)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=2, n_head=2,
                        num_labels=num_labels, bos_token_id=tokenizer.eos_token_id,
                        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    GPT2ForSequenceClassification(config).save_pretrained(folder)
    return folder
