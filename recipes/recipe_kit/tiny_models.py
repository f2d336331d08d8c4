"""Test-size stand-ins for a recipe's models, built offline: a byte-level BPE tokenizer trained on the recipe's data
files, a 2-layer GPT-2 policy and a 2-layer GPT-2 reward model (`GPT2ForSequenceClassification`, one output), both
randomly initialised from a config. The ``configs/test.yaml`` runs and the recipe tests use them.

    python recipes/recipe_kit/tiny_models.py --output_dir outputs/tiny-hh tests/recipes/data/hh_rlhf_sample.jsonl

writes ``outputs/tiny-hh/policy`` and ``outputs/tiny-hh/reward`` (each a model folder with its tokenizer). A byte-level
tokenizer spells any text, so no word of the data becomes an unknown token; ``--chat_template`` gives it a small chat
template (for recipes whose prompts are chat messages).
"""

import argparse
import json
import sys
from pathlib import Path

SPECIAL_TOKENS = ["<pad>", "<eos>", "<|user|>", "<|assistant|>"]
# One turn per line; an assistant turn ends with EOS, so a sampled reply stops where a trained one does.
CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% if m['role'] == 'assistant' %}<eos>"
                 "{% endif %}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}")


def texts_of(value) -> list[str]:
    """Every string inside a JSON value (any schema)."""
    if isinstance(value, str):
        return [value]
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return [text for item in items for text in texts_of(item)]


def bpe_tokenizer(texts: list[str], vocab_size: int = 512, chat_template: bool = False):
    """A byte-level BPE trained on ``texts``, with ``<pad>``, ``<eos>`` and the chat-turn markers."""
    from recipe_kit.bpe import train_byte_level_bpe

    wrapped = train_byte_level_bpe(texts, vocab_size, SPECIAL_TOKENS, eos_token="<eos>", pad_token="<pad>")
    if chat_template:
        wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


def reward_model(tokenizer, n_positions: int = 512, seed: int = 1):
    """A randomly initialised 2-layer `GPT2ForSequenceClassification` with one output (a reward model's score)."""
    import torch
    from transformers import GPT2Config, GPT2ForSequenceClassification

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=n_positions, n_embd=32, n_layer=2, n_head=2,
                        num_labels=1, bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id)
    return GPT2ForSequenceClassification(config)


def build(output_dir, data_files: list[str], chat_template: bool = False, n_positions: int = 512) -> dict:
    """Write ``policy/`` and ``reward/`` under ``output_dir``; returns their paths by name."""
    from dpo_ext.testing import tiny_model

    texts = [text for path in data_files for line in Path(path).read_text().splitlines() if line.strip()
             for text in texts_of(json.loads(line))]
    tokenizer = bpe_tokenizer(texts, chat_template=chat_template)
    paths = {name: Path(output_dir) / name for name in ("policy", "reward")}
    models = {"policy": tiny_model(tokenizer, n_positions=n_positions), "reward": reward_model(tokenizer, n_positions)}
    for name, model in models.items():
        model.save_pretrained(paths[name])
        tokenizer.save_pretrained(paths[name])
    return {name: str(path) for name, path in paths.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_files", nargs="+", help="JSON-lines files whose texts train the tokenizer")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--chat_template", action="store_true", help="give the tokenizer a small chat template")
    args = parser.parse_args(argv)
    print(json.dumps(build(args.output_dir, args.data_files, args.chat_template)))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: recipe_kit from recipes/
    sys.exit(main())
