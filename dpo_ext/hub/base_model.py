"""What a card says of the base model, found without the network: its parameter count and the license its own card
states. Both are read from the base model's files where they already are on this machine: the local folder the
adapter was trained from, or the Hugging Face cache. Nothing is downloaded (a dry run promises no network).
"""

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BaseModelFacts:
    parameters: int | None = None  # counted from the weights (or built from the config on the meta device)
    parameters_source: str | None = None  # "its weights" or "its config"
    license: str | None = None  # the `license:` of the base model's own card, when it has one


def base_model_facts(*sources: str | None) -> BaseModelFacts:
    """The facts of the first of `sources` (local folders or Hub ids, in order of preference) whose files are on this
    machine; empty facts when none is."""
    for source in sources:
        folder_file = _file_finder(source)
        if folder_file is None:
            continue
        parameters, how = _count_from_weights(folder_file)
        if parameters is None:
            parameters, how = _count_from_config(folder_file("config.json"))
        license = _stated_license(folder_file("README.md"))
        if parameters is not None or license is not None:
            return BaseModelFacts(parameters, how, license)
    return BaseModelFacts()


def _file_finder(source):
    """A function name -> local path (or None) for the files of `source`: a local folder, or a Hub id's cached files."""
    if not source:
        return None
    if Path(source).is_dir():
        folder = Path(source)
        return lambda name: folder / name if (folder / name).is_file() else None
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    def cached(name):
        try:
            path = try_to_load_from_cache(source, name)
        except (HFValidationError, ValueError):
            return None
        return Path(path) if isinstance(path, str) else None

    return cached if cached("config.json") is not None else None


def _count_from_weights(find) -> tuple[int | None, str | None]:
    """Sum of the tensor sizes in the safetensors headers (one file, or the shards an index names). Tied weights are
    stored once, so this counts what `model.parameters()` yields."""
    from dpo_ext.safe_files import verify_safetensors

    files = [find("model.safetensors")]
    index = find("model.safetensors.index.json")
    if files[0] is None and index is not None:
        try:
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError):
            return None, None
        files = [find(name) for name in shards]
    if not files or any(f is None for f in files):
        return None, None
    try:
        headers = [verify_safetensors(f) for f in files]
    except (OSError, ValueError) as error:
        logger.info("Not counting the base model's parameters from its weights: %s", error)
        return None, None
    return sum(math.prod(entry["shape"]) for header in headers for entry in header.values()), "its weights"


def _count_from_config(config_path) -> tuple[int | None, str | None]:
    """Build the model from its config on the meta device (no memory, no download) and count its parameters."""
    if config_path is None:
        return None, None
    try:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        config = AutoConfig.from_pretrained(config_path.parent)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
        return sum(p.numel() for p in model.parameters()), "its config"
    except Exception as error:  # an architecture this transformers does not know: say nothing rather than guess
        logger.info("Not counting the base model's parameters from %s: %s", config_path, error)
        return None, None


def _stated_license(readme) -> str | None:
    if readme is None:
        return None
    try:
        from huggingface_hub import ModelCard

        license = ModelCard.load(readme).data.license
    except Exception as error:  # a README without (valid) front matter states no license
        logger.info("No license read from %s: %s", readme, error)
        return None
    return license.lower() if isinstance(license, str) else None
