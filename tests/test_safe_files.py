"""No code runs from untrusted files: a safetensors file is verified in full before it is loaded or published, and
the scorer loader reads weights from safetensors only (a pickle-only adapter or model is refused, never opened)."""

import json
import math
import shutil
import struct
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from fixtures import save_base_and_adapter
from safetensors.torch import save_file

from dpo_ext.safe_files import (
    NonFiniteWeightsError,
    WeightsFileError,
    check_finite_weights,
    scrub_config,
    verify_finite_safetensors,
    verify_safetensors,
)
from dpo_ext.scoring import loading as scoring_load
from dpo_ext.scoring.scorer import ImplicitRewardScorer

TENSORS = {"a.weight": torch.arange(12, dtype=torch.float32).reshape(3, 4),
           "b.bias": torch.ones(5, dtype=torch.bfloat16), "empty": torch.zeros(0)}


class CreatesMarker:
    """Unpickling this creates the file `path`: stands for any code a malicious pickle could run."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def header_length(data: bytes) -> int:
    return struct.unpack("<Q", data[:8])[0]


def with_header(header, data: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


@pytest.fixture
def weights(tmp_path) -> Path:
    path = tmp_path / "adapter_model.safetensors"
    save_file(TENSORS, str(path), metadata={"format": "pt"})
    return path


def test_a_complete_file_passes_and_its_header_is_returned(weights):
    header = verify_safetensors(weights)
    assert set(header) == set(TENSORS)  # __metadata__ left out
    assert header["a.weight"] == {"dtype": "F32", "shape": [3, 4], "data_offsets": [0, 48]}


# Each damaged file: what is done to a good one, and what the error must say.
DAMAGE = {
    "truncated after the header": (lambda d: d[:8 + header_length(d)], "holds 0 bytes after its header"),
    "truncated mid-data": (lambda d: d[:-7], "truncated: 7 bytes missing"),
    "garbage header": (lambda d: d[:8] + b"\xff{" * (header_length(d) // 2) + d[8 + 2 * (header_length(d) // 2):],
                       "header is not valid JSON"),
    "header length larger than the file": (lambda d: struct.pack("<Q", len(d)) + d[8:], "header length says"),
    "trailing junk": (lambda d: d + b"junk", "4 bytes follow the last tensor"),
    "shorter than the length field": (lambda d: d[:5], "shorter than the 8-byte header length"),
    "empty": (lambda d: b"", "0 bytes long"),
    "header is a list": (lambda d: with_header([1, 2]), "JSON list, not an object"),
    "overlapping tensors": (lambda d: with_header({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                                                   "y": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}},
                                                  bytes(12)), "overlaps the tensor before it"),
    "a gap between tensors": (lambda d: with_header({"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                                                     "y": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}},
                                                    bytes(12)), "leaves a gap of 4 bytes"),
    "offsets that disagree with dtype and shape": (
        lambda d: with_header({"x": {"dtype": "F16", "shape": [3], "data_offsets": [0, 8]}}, bytes(8)),
        "needs 6 bytes but its data_offsets [0, 8] hold 8"),
    "an unknown dtype": (lambda d: with_header({"x": {"dtype": "F33", "shape": [1], "data_offsets": [0, 4]}},
                                               bytes(4)), "unknown dtype 'F33'"),
    "negative offsets": (lambda d: with_header({"x": {"dtype": "U8", "shape": [0], "data_offsets": [-1, -1]}}),
                         "invalid data_offsets"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_file_is_named_with_what_is_wrong_and_what_to_do(weights, damage):
    corrupt, problem = DAMAGE[damage]
    weights.write_bytes(corrupt(weights.read_bytes()))
    with pytest.raises(WeightsFileError) as error:
        verify_safetensors(weights)
    message = str(error.value)
    assert str(weights) in message and problem in message and "save it again" in message


def test_scrub_config_keeps_plain_values_and_drops_tokens():
    config = {"beta": torch.tensor(0.5), "hub_token": "secret", "output_dir": Path("/runs/hf_abcdefghijkl"),
              "nested": {"push_to_hub_token": "x", "steps": (1, 2)}, "note": "token=s3cret"}
    assert scrub_config(config, secrets=["s3cret"]) == {
        "beta": 0.5, "output_dir": "/runs/<redacted>", "nested": {"steps": [1, 2]}, "note": "token=<redacted>"}


# -- the scorer loader -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved(tokenizer, tmp_path_factory):
    """A base model folder and a LoRA adapter saved on it, as `save_pretrained` writes them (safetensors)."""
    return save_base_and_adapter(tokenizer, tmp_path_factory.mktemp("safe_load"), init_lora_weights=False)


def pickle_only_copy(adapter: Path, dest: Path) -> Path:
    """`adapter` with its weights converted to a pickled adapter_model.bin (what older PEFT releases wrote)."""
    from safetensors.torch import load_file

    dest.mkdir(parents=True)
    shutil.copy(adapter / "adapter_config.json", dest)
    torch.save(load_file(adapter / "adapter_model.safetensors"), dest / "adapter_model.bin")
    return dest


def test_pickle_only_adapter_is_refused_with_how_to_convert(saved, tmp_path, capsys):
    from dpo_ext.cli import main

    folder = pickle_only_copy(saved / "adapter", tmp_path / "bin_adapter")
    with pytest.raises(WeightsFileError) as error:
        ImplicitRewardScorer.from_pretrained(str(folder), device="cpu")
    message = str(error.value)
    assert f"{folder} has adapter_model.bin but no adapter_model.safetensors" in message
    assert "safetensors.torch.save_file(torch.load(" in message and "can run any code" in message

    (tmp_path / "in.jsonl").write_text(json.dumps({"prompt": "the movie was", "completion": " good"}) + "\n")
    assert main(["score", str(folder), "-i", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.jsonl")]) == 2
    assert "adapter_model.bin but no adapter_model.safetensors" in capsys.readouterr().err


def test_pickled_files_are_never_opened(saved, tmp_path):
    folder = tmp_path / "malicious"
    folder.mkdir()
    shutil.copy(saved / "adapter" / "adapter_config.json", folder)
    marker = tmp_path / "code-ran"
    torch.save(CreatesMarker(marker), folder / "adapter_model.bin")
    with pytest.raises(WeightsFileError, match="adapter_model.bin but no adapter_model.safetensors"):
        ImplicitRewardScorer.from_pretrained(str(folder), device="cpu")
    assert not marker.exists()


def test_pickle_only_reference_adapters_are_refused(saved, tmp_path):
    adapter = tmp_path / "with_ref"
    shutil.copytree(saved / "adapter", adapter)
    pickle_only_copy(saved / "adapter", adapter / "ref")  # TRL's frozen reference copy, as an old pickle
    with pytest.raises(WeightsFileError, match=r"with_ref/ref has adapter_model.bin but no adapter_model.safetensors"):
        ImplicitRewardScorer.from_pretrained(str(adapter), device="cpu")

    ref_dir = pickle_only_copy(saved / "adapter", tmp_path / "starting_adapter")
    with pytest.raises(WeightsFileError, match=r"starting_adapter has adapter_model.bin but no"):
        ImplicitRewardScorer.from_pretrained(str(saved / "adapter"), ref_adapter=str(ref_dir), device="cpu")


def adapter_copies(saved, tmp_path):
    """Copies of the saved adapter, one plain and one with a TRL-style ``ref/`` copy: (folder, weights file to damage),
    the adapter's own weights and the ref copy's."""
    for where in ("adapter", "ref"):
        adapter = tmp_path / where
        shutil.copytree(saved / "adapter", adapter)
        if where == "ref":
            shutil.copytree(saved / "adapter", adapter / "ref")
        yield adapter, adapter / ("ref" if where == "ref" else "") / "adapter_model.safetensors"


def test_a_truncated_adapter_is_named_before_loading(saved, tmp_path):
    for adapter, weights in adapter_copies(saved, tmp_path):
        weights.write_bytes(weights.read_bytes()[:-100])
        with pytest.raises(WeightsFileError, match=r"truncated: 100 bytes missing") as error:
            ImplicitRewardScorer.from_pretrained(str(adapter), device="cpu")
        assert str(weights) in str(error.value)


def test_pickle_only_base_model_is_refused(saved, tmp_path):
    from safetensors.torch import load_file

    base = tmp_path / "bin_base"
    base.mkdir()
    for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        if (saved / "base" / name).exists():
            shutil.copy(saved / "base" / name, base)
    torch.save(load_file(saved / "base" / "model.safetensors"), base / "pytorch_model.bin")
    with pytest.raises(WeightsFileError) as error:
        ImplicitRewardScorer.from_pretrained(str(saved / "adapter"), base_model=str(base), device="cpu")
    message = str(error.value)
    assert f"{base} has pytorch_model.bin but no model.safetensors" in message
    assert "save_pretrained(NEW_FOLDER)" in message
    with pytest.raises(WeightsFileError, match="pytorch_model.bin but no model.safetensors"):
        ImplicitRewardScorer.from_pretrained(str(base), reference_free=True, device="cpu")


def test_hub_adapter_without_safetensors_is_refused(monkeypatch):
    listed = {"adapter_config.json", "adapter_model.bin"}
    monkeypatch.setattr(scoring_load, "_has_file", lambda model_id, name, revision=None: name in listed)
    monkeypatch.setattr(scoring_load, "adapter_config",
                        lambda model_id, revision=None: SimpleNamespace(base_model_name_or_path="org/base"))
    with pytest.raises(WeightsFileError, match="org/adapter has adapter_model.bin but no adapter_model.safetensors"):
        ImplicitRewardScorer.from_pretrained("org/adapter", device="cpu")


def test_models_are_loaded_with_safetensors_only_and_no_remote_code(monkeypatch):
    """A Hub model without safetensors: transformers raises (use_safetensors=True), and we say what to do."""
    from transformers import AutoConfig, AutoModelForCausalLM, GPT2Config

    calls = []

    def from_pretrained(source, **kwargs):
        calls.append(kwargs)
        raise OSError(f"{source} does not appear to have a file named model.safetensors or "
                      "model.safetensors.index.json and thus cannot be loaded with `safetensors`.")

    # the repo's config (read first, to refuse a model that is not a causal LM) is a causal LM's
    monkeypatch.setattr(AutoConfig, "from_pretrained",
                        lambda source, **kwargs: GPT2Config(architectures=["GPT2LMHeadModel"]))
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", from_pretrained)
    with pytest.raises(WeightsFileError, match="org/model has no model.safetensors") as error:
        ImplicitRewardScorer.from_pretrained("org/model", reference_free=True, device="cpu")
    assert "use_safetensors=False).save_pretrained(NEW_FOLDER)" in str(error.value)
    assert calls[0]["use_safetensors"] is True and "trust_remote_code" not in calls[0]


# -- values: NaN or infinite weights are named where they enter, by file and tensor ---------------------------------

def test_finite_values_pass_and_integer_tensors_are_not_inspected(weights, tmp_path):
    assert verify_finite_safetensors(weights) is None
    ints = tmp_path / "ints.safetensors"
    save_file({"ids": torch.tensor([0, 2**31 - 1], dtype=torch.int64), "w": torch.ones(2)}, str(ints))
    assert verify_finite_safetensors(ints) is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("value, shown", [(math.nan, "NaN"), (math.inf, "infinite"), (-math.inf, "infinite")])
def test_a_non_finite_value_is_named_by_file_and_tensor(tmp_path, dtype, value, shown):
    path = tmp_path / "adapter_model.safetensors"
    bad = torch.zeros(3, 4, dtype=dtype)
    bad[2, 1] = value
    save_file({"a.weight": torch.ones(2), "b.lora_B.weight": bad}, str(path))
    with pytest.raises(NonFiniteWeightsError) as error:
        verify_finite_safetensors(path)
    message = str(error.value)
    assert str(path) in message and "tensor 'b.lora_B.weight'" in message and f"{shown} values (1 of 12)" in message
    assert isinstance(error.value, WeightsFileError)  # refused wherever a damaged weights file is


def test_a_model_with_a_non_finite_weight_is_named(tokenizer):
    from fixtures import make_model

    model = make_model(tokenizer)
    assert check_finite_weights(model, "the policy") is None
    with torch.no_grad():
        model.transformer.h[1].mlp.c_fc.bias[3] = math.nan
    with pytest.raises(NonFiniteWeightsError, match="the policy's weight 'transformer.h.1.mlp.c_fc.bias' holds NaN "
                                                    "values \\(1 of 128\\)"):
        check_finite_weights(model, "the policy")


def _nan_lora_b(path: Path) -> None:
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    name = next(n for n in tensors if "lora_B" in n)
    tensors[name] = torch.full_like(tensors[name], math.nan)
    save_file(tensors, str(path))


def test_nan_adapter_weights_are_refused_when_loading_a_scorer(saved, tmp_path):
    """They gave `dpo-ext eval` an accuracy of 0.0 with no warning."""
    for adapter, weights in adapter_copies(saved, tmp_path):
        _nan_lora_b(weights)
        with pytest.raises(NonFiniteWeightsError, match=r"lora_B.* holds NaN") as error:
            ImplicitRewardScorer.from_pretrained(str(adapter), device="cpu")
        assert str(weights) in str(error.value)


def test_a_base_model_with_an_infinite_weight_is_refused_when_loading_a_scorer(saved, tmp_path):
    from safetensors.torch import load_file

    base = tmp_path / "base"
    shutil.copytree(saved / "base", base)
    tensors = load_file(str(base / "model.safetensors"))
    tensors["transformer.wte.weight"][5, 0] = math.inf
    save_file(tensors, str(base / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(NonFiniteWeightsError, match="tensor 'transformer.wte.weight' holds infinite"):
        ImplicitRewardScorer.from_pretrained(str(saved / "adapter"), base_model=str(base), device="cpu")


def test_resuming_from_a_checkpoint_with_nan_adapter_weights_is_refused(tokenizer, tmp_path):
    import datasets
    from fixtures import make_model, ranked_rows, train_settings
    from peft import LoraConfig

    from dpo_ext import PLDPOConfig, PLDPOTrainer

    def trainer(steps):
        args = PLDPOConfig(**train_settings(tmp_path, max_steps=steps, save_strategy="steps", save_steps=1,
                                            per_device_train_batch_size=2, max_length=32))
        return PLDPOTrainer(make_model(tokenizer), args=args, train_dataset=datasets.Dataset.from_list(ranked_rows(4)),
                            processing_class=tokenizer,
                            peft_config=LoraConfig(r=4, target_modules=["c_attn"], task_type="CAUSAL_LM"))

    trainer(1).train()
    weights = tmp_path / "out" / "checkpoint-1" / "adapter_model.safetensors"
    _nan_lora_b(weights)
    with pytest.raises(NonFiniteWeightsError, match="lora_B.* holds NaN values") as error:
        trainer(2).train(resume_from_checkpoint=str(weights.parent))
    assert str(weights) in str(error.value)
