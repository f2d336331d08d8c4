"""Publishing adapters and preference data: the real huggingface_hub client, over real HTTP, against the in-memory
Hub of `tests/hub_server.py` on 127.0.0.1 (the Hugging Face Hub cannot be reached from the test machines)."""

import hashlib
import json
import struct
import traceback
import zlib
from pathlib import Path

import pytest
import yaml
from fixtures import READ_TOKEN, TOKEN
from hub_server import FakeHub

BASE_MODEL = "dpo-ext-tests/tiny-gpt2"
EVAL = {"ground_truth_reward": 0.8125, "kl": 1.5, "preference_accuracy": 0.75, "win_rate": 0.625}
TRAINING_ARGS = {"beta": 0.1, "loss_type": "plackett_luce", "num_completions": 4, "learning_rate": 5e-6, "seed": 7,
                 "dataset_name": "dpo-ext-tests/imdb-ranked", "hub_token": TOKEN}
ADAPTER_FILES = {"README.md", "adapter_config.json", "adapter_model.safetensors", "eval_results.json",
                 "training_config.yaml", "plots/reward_curve.png"}
NEVER_PUBLISHED = ("optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin", "adapter_model.bin",
                   "checkpoint-", "ref/")


def png_bytes() -> bytes:
    """A valid 1x1 grey PNG, written by hand so the test needs no plotting library."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    pixels = zlib.compress(b"\x00\x80")  # one scanline: filter byte, one grey pixel
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    """See `make_adapter`."""
    return make_adapter(tmp_path_factory)


def make_adapter(tmp_path_factory):
    """A trained-adapter folder as the trainer leaves it: LoRA weights and config, tokenizer, and the files that
    must never be published. Returns (folder, names of the tokenizer files, PNG plot path)."""
    import peft
    import torch
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    folder = tmp_path_factory.mktemp("adapter")
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=100,
                                                                 bos_token_id=0, eos_token_id=0))
    peft.get_peft_model(model, peft.LoraConfig(r=4, target_modules=["c_attn"])).save_pretrained(folder)
    config = json.loads((folder / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = BASE_MODEL  # a model built from a config records None
    (folder / "adapter_config.json").write_text(json.dumps(config))

    before = set(p.name for p in folder.iterdir())
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel()
    bpe.train_from_iterator(["a good movie", "a bad film", "the plot was fine"] * 5,
                            trainers.BpeTrainer(vocab_size=100, special_tokens=["<unk>", "<eos>"]))
    transformers.PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<eos>").save_pretrained(folder)
    tokenizer_files = set(p.name for p in folder.iterdir()) - before

    (folder / "training_config.json").write_text(json.dumps(TRAINING_ARGS))  # as PLDPOTrainer writes it
    # Not pickles: were any of them opened with torch.load, the test would fail.
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin", "adapter_model.bin"):
        (folder / name).write_bytes(b"NEVER-PUBLISH " + name.encode())
    for sub in ("checkpoint-1", "ref"):
        (folder / sub).mkdir()
        (folder / sub / "adapter_model.safetensors").write_bytes((folder / "adapter_model.safetensors").read_bytes())
        (folder / sub / "adapter_config.json").write_text("{}")
    plot = tmp_path_factory.mktemp("plots") / "reward_curve.png"
    plot.write_bytes(png_bytes())
    return folder, tokenizer_files, plot


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def api_calls(hub: FakeHub) -> list[str]:
    # The agent-harness registry is fetched at most once per process, so whether it shows up depends on test order.
    return [f"{r.method} {r.path}" for r in hub.requests if r.path != "/api/agent-harnesses"]


def assert_no_token(*texts) -> None:
    for text in texts:
        text = text.decode(errors="replace") if isinstance(text, bytes) else str(text)
        assert TOKEN not in text and READ_TOKEN not in text


def push(adapter, hub, repo_id="alice/tiny-pl", **kwargs):
    from dpo_ext import push_adapter

    folder, _, plot = adapter
    kwargs = {"token": TOKEN, "endpoint": hub.url, "eval_results": EVAL, "plots": [plot], "retry_delay": 0.01,
              **kwargs}
    return push_adapter(folder, repo_id, **kwargs)


def test_push_sends_one_commit_with_exactly_the_publishable_files(adapter, hub, caplog, capsys):
    from huggingface_hub import ModelCard

    folder, tokenizer_files, plot = adapter
    before = snapshot(folder)
    result = push(adapter, hub)

    assert api_calls(hub) == ["GET /api/whoami-v2", "POST /api/repos/create", "POST /api/validate-yaml",
                              "POST /api/models/alice/tiny-pl/preupload/main",
                              "POST /api/models/alice/tiny-pl/commit/main"]
    assert len(hub.commits) == 1
    files = hub.files("alice/tiny-pl")
    assert set(files) == ADAPTER_FILES | tokenizer_files == {f.path for f in result.files}
    preuploaded = {f["path"] for r in hub.calls("POST", "/api/models/") if "preupload" in r.path
                   for f in json.loads(r.body)["files"]}
    for path in preuploaded | set(files):
        assert not any(excluded in path for excluded in NEVER_PUBLISHED), path
    assert not any(b"NEVER-PUBLISH" in r.body for r in hub.requests)
    assert files["adapter_model.safetensors"] == (folder / "adapter_model.safetensors").read_bytes()
    assert files["plots/reward_curve.png"] == plot.read_bytes()
    assert json.loads(files["adapter_config.json"])["base_model_name_or_path"] == BASE_MODEL
    assert json.loads(files["eval_results.json"]) == EVAL
    assert result.commit_url.startswith(f"{hub.url}/alice/tiny-pl/commit/")

    # The training config came from training_config.json, without the Hub token it held.
    training_config = yaml.safe_load(files["training_config.yaml"])
    assert training_config["beta"] == 0.1 and "hub_token" not in training_config

    card = ModelCard(files["README.md"].decode())
    assert card.data.base_model == BASE_MODEL
    assert card.data.library_name == "peft" and card.data.pipeline_tag == "text-generation"
    assert {"dpo", "plackett-luce", "trl", "peft", "dpo_ext"} <= set(card.data.tags)
    assert card.data.datasets == ["dpo-ext-tests/imdb-ranked"]
    assert {r.metric_type: r.metric_value for r in card.data.eval_results} == EVAL
    assert 'ImplicitRewardScorer.from_pretrained("alice/tiny-pl", beta=0.1)' in card.text
    assert "AutoPeftModelForCausalLM" in card.text and "adapter disabled" in card.text
    assert "](plots/reward_curve.png)" in card.text and "K = 4" in card.text

    assert snapshot(folder) == before  # the user's folder is only read
    assert_no_token(*files.values(), caplog.text, capsys.readouterr(), *(r.body for r in hub.requests))


def test_dry_run_writes_the_same_files_the_push_sends(adapter, hub, tmp_path):
    dry = push(adapter, hub, dry_run=tmp_path / "staged")
    assert hub.requests == []  # no network at all
    assert dry.commit_url is None and dry.staging_dir == (tmp_path / "staged").resolve()
    staged = {p.relative_to(dry.staging_dir).as_posix(): p.read_bytes()
              for p in dry.staging_dir.rglob("*") if p.is_file()}
    assert {f.path: f.size for f in dry.files} == {path: len(data) for path, data in staged.items()}
    assert "adapter_model.safetensors" in dry.summary() and "dry run" in dry.summary()

    push(adapter, hub)
    assert hub.files("alice/tiny-pl") == staged


def test_transient_errors_are_retried(adapter, hub, caplog):
    hub.fail("POST", "/api/repos/create", [500, 503])
    push(adapter, hub)
    assert len(hub.calls("POST", "/api/repos/create")) == 3
    assert len(hub.commits) == 1
    assert "retrying" in caplog.text
    assert_no_token(caplog.text)


def test_dropped_connections_are_retried(adapter, hub, caplog):
    """A connection closed without an answer is a transport error of huggingface_hub's HTTP library, not an HTTP
    status: it must be retried like a 503, not reported as a refused upload."""
    hub.fail("GET", "/api/whoami-v2", [FakeHub.DROP])
    hub.fail("POST", "/api/repos/create", [FakeHub.DROP])
    result = push(adapter, hub)
    assert len(hub.calls("GET", "/api/whoami-v2")) == 2 and len(hub.calls("POST", "/api/repos/create")) == 2
    assert len(hub.commits) == 1 and result.commit_url
    assert caplog.text.count("retrying") == 2


def test_persistent_errors_give_a_clear_error_and_rerunning_works(adapter, hub, caplog):
    from dpo_ext import HubUploadError

    folder = adapter[0]
    before = snapshot(folder)
    hub.fail("POST", "/api/repos/create", [500] * 4, message=f"backend exploded (Authorization: Bearer {TOKEN})")
    with pytest.raises(HubUploadError) as error:
        push(adapter, hub, max_attempts=4)
    message = str(error.value)
    assert "alice/tiny-pl" in message and "HTTP 500" in message and "after 4 attempts" in message
    assert "re-run" in message
    assert hub.commits == [] and snapshot(folder) == before
    assert_no_token(message, "".join(traceback.format_exception(error.value)), caplog.text)

    push(adapter, hub)  # the failures are over: the same call now simply works
    assert len(hub.commits) == 1


def test_missing_token_fails_before_any_request_or_work(hub, tmp_path):
    from dpo_ext import HubAccessError, push_adapter

    # A folder that does not exist: the token check must come first, or this would be a FileNotFoundError.
    with pytest.raises(HubAccessError, match="no Hugging Face token: run `hf auth login` or set HF_TOKEN"):
        push_adapter(tmp_path / "not-trained-yet", "alice/x", endpoint=hub.url)
    assert hub.requests == []


def test_read_only_token_fails_before_any_upload_request(hub, tmp_path, caplog):
    from dpo_ext import HubAccessError, check_hub_access, push_adapter

    with pytest.raises(HubAccessError, match="token has no write access") as error:
        push_adapter(tmp_path / "not-trained-yet", "alice/x", token=READ_TOKEN, endpoint=hub.url)
    assert api_calls(hub) == ["GET /api/whoami-v2"]
    with pytest.raises(HubAccessError, match="not a member of 'someone-else'"):
        check_hub_access("someone-else/x", TOKEN, endpoint=hub.url)
    assert check_hub_access("team/x", TOKEN, endpoint=hub.url) == "team/x"
    assert check_hub_access("x", TOKEN, endpoint=hub.url) == "alice/x"
    with pytest.raises(HubAccessError, match="token was rejected"):
        check_hub_access("alice/x", "not-a-known-token", endpoint=hub.url)
    assert_no_token(str(error.value), caplog.text)


def test_fine_grained_token_needs_repo_write_on_the_namespace(hub):
    from dpo_ext import HubAccessError, check_hub_access

    scoped = {"scoped": [{"entity": {"type": "user", "name": "alice"}, "permissions": ["repo.content.read"]},
                         {"entity": {"type": "model", "name": "alice/ok"}, "permissions": ["repo.write"]}]}
    hub.users["fine-grained"] = FakeHub.user("alice", role="fineGrained", fine_grained=scoped)
    assert check_hub_access("alice/ok", "fine-grained", endpoint=hub.url) == "alice/ok"
    with pytest.raises(HubAccessError, match="repo.write"):
        check_hub_access("alice/other", "fine-grained", endpoint=hub.url)


def test_folder_card_and_config_must_agree(adapter, tmp_path):
    from dpo_ext import push_adapter

    folder = adapter[0]
    with pytest.raises(ValueError, match="base model mismatch.*other/model"):
        push_adapter(folder, "alice/x", dry_run=tmp_path / "a", base_model="other/model")
    with pytest.raises(ValueError, match="beta mismatch"):
        push_adapter(folder, "alice/x", dry_run=tmp_path / "b", beta=0.5)
    with pytest.raises(ValueError, match="overlaps"):
        push_adapter(folder, "alice/x", dry_run=folder / "staged")

    bin_only = tmp_path / "bin-only"
    bin_only.mkdir()
    (bin_only / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": BASE_MODEL}))
    (bin_only / "adapter_model.bin").write_bytes(b"pickle")
    with pytest.raises(ValueError, match="adapter_model.bin but no adapter_model.safetensors"):
        push_adapter(bin_only, "alice/x", dry_run=tmp_path / "c", beta=0.1)


def test_training_config_sources(adapter, tmp_path):
    from dpo_ext.hub.adapter_files import read_training_config

    folder = adapter[0]
    assert read_training_config(folder)["num_completions"] == 4  # from training_config.json
    yaml_file = tmp_path / "config.yaml"
    yaml_file.write_text(f"beta: 0.2\noutput_dir: /runs/{TOKEN}\npush_to_hub_token: {TOKEN}\n")
    assert read_training_config(folder, yaml_file, secrets=[TOKEN]) == {"beta": 0.2, "output_dir": "/runs/<redacted>"}
    json_file = tmp_path / "config.json"
    json_file.write_text(json.dumps({"beta": 0.3, "hub_token": "hf_abcdefghijklmnop"}))
    assert read_training_config(folder, json_file) == {"beta": 0.3}
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        read_training_config(folder, tmp_path / "missing.yaml")


def test_method_named_from_the_training_config(adapter):
    from dpo_ext.hub.adapter_push import build_model_card
    from dpo_ext.hub.cards import describe_method

    assert describe_method({"loss_type": "plackett_luce", "num_completions": 4}) == ("Plackett-Luce DPO",
                                                                                     "plackett_luce", 4)
    assert describe_method({"loss_type": "plackett_luce"}, num_completions=2)[0] == "DPO"  # K = 2 is DPO
    assert describe_method({"loss_type": "plackett_luce"})[0] == "Plackett-Luce DPO"
    assert describe_method({"loss_type": ["sigmoid"]})[0] == "DPO"  # TRL's list form
    assert describe_method({"loss_type": "preferred_ft"})[0].startswith("Preferred-FT")
    # the listwise losses by their own names, whatever K (they were called Plackett-Luce DPO for K > 2)
    assert describe_method({"loss_type": "lipo_lambda", "num_completions": 4})[0] == "LiPO-lambda"
    assert describe_method({"loss_type": "all_pairs", "num_completions": 4})[0] == "DPO on all pairs"
    # an RL baseline is not DPO, and ranks nothing (its card called it "DPO, K = 2")
    rloo = {"trainer": "RLOOTrainer", "num_completions": 2, "num_generations": 4, "beta": 0.05}
    assert describe_method(rloo) == ("RLOO (reinforcement learning on a reward, TRL's RLOOTrainer)", None, None)
    card = build_model_card(adapter[0], "alice/rloo", training_config=rloo)
    assert "aligned with **RLOO" in card.text and "K = " not in card.text and "**DPO**" not in card.text
    assert "rloo" in card.data.tags and "dpo" not in card.data.tags

    card = build_model_card(adapter[0], "alice/dpo", training_config={"beta": 0.25, "loss_type": "plackett_luce"},
                            num_completions=2)
    assert "plackett-luce" not in card.data.tags and "**DPO**" in card.text and "beta=0.25" in card.text
    assert card.data.eval_results is None and "No evaluation results" in card.text


def test_cli_push_dry_run_then_push(adapter, hub, tmp_path, capsys, monkeypatch):
    from dpo_ext.cli import main

    folder, _, plot = adapter
    eval_file = tmp_path / "eval.json"
    eval_file.write_text(json.dumps(EVAL))
    args = ["push", str(folder), "--repo-id", "alice/cli", "--eval-results", str(eval_file), "--plot", str(plot),
            "--beta", "0.1", "--base-model", BASE_MODEL, "--endpoint", hub.url]

    assert main(args + ["--dry-run", str(tmp_path / "staged")]) == 0
    assert "adapter_model.safetensors" in capsys.readouterr().out and hub.requests == []
    staged = {p.relative_to(tmp_path / "staged").as_posix(): p.read_bytes()
              for p in (tmp_path / "staged").rglob("*") if p.is_file()}

    assert main(args) == 2  # no token anywhere
    assert "no Hugging Face token" in capsys.readouterr().err and hub.requests == []

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert main(args) == 0
    assert f"{hub.url}/alice/cli/commit/" in capsys.readouterr().out
    assert hub.files("alice/cli") == staged

    hub.fail("POST", "/api/repos/create", [500] * 4)
    monkeypatch.setattr("dpo_ext.hub.publish.time.sleep", lambda seconds: None)  # the CLI uses the default delays
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("dpo-ext push: error: could not push to alice/cli")
    assert_no_token(err)


def test_push_preference_dataset_with_card(hub, tmp_path, capsys):
    from huggingface_hub import DatasetCard

    from dpo_ext import push_preference_dataset
    from dpo_ext.cli import main

    data = tmp_path / "generated"
    data.mkdir()
    ranked = [{"prompt": "The movie was", "completions": [" great", " fine", " dull", " awful"],
               "scores": [3, 2, 1, 0]}]
    (data / "train.jsonl").write_text("\n".join(json.dumps(row) for row in ranked * 3) + "\n")
    pairs = [{"prompt": "The plot", "chosen": " was clever", "rejected": " was a mess"}]
    (data / "test.jsonl").write_text(json.dumps(pairs[0]) + "\n")
    (data / "notes.txt").write_text("not data")

    result = push_preference_dataset(data, "alice/prefs", token=TOKEN, endpoint=hub.url, retry_delay=0.01,
                                     source_model="alice/tiny-sft", reward_model="tf-idf sentiment classifier")
    files = hub.files("alice/prefs", repo_type="dataset")
    assert set(files) == {"README.md", "ranked/train.jsonl", "pairwise/test.jsonl"} == {f.path for f in result.files}
    assert files["ranked/train.jsonl"] == (data / "train.jsonl").read_bytes()
    assert len(hub.commits) == 1 and api_calls(hub)[-1] == "POST /api/datasets/alice/prefs/commit/main"
    card = DatasetCard(files["README.md"].decode())
    assert {c["config_name"]: c["data_files"] for c in card.data.configs} == {
        "ranked": [{"split": "train", "path": ["ranked/train.jsonl"]}],
        "pairwise": [{"split": "test", "path": ["pairwise/test.jsonl"]}]}
    assert {"dpo", "plackett-luce"} <= set(card.data.tags)
    assert "best first" in card.text and 'load_dataset("alice/prefs", "ranked")' in card.text
    assert "| `ranked` | JSONL | train | `ranked/train.jsonl` | 3 |" in card.text

    assert main(["push-dataset", str(data), "--repo-id", "alice/prefs", "--dry-run", str(tmp_path / "dry")]) == 0
    assert "ranked/train.jsonl" in capsys.readouterr().out

    (data / "broken.jsonl").write_text('{"prompt": "x", "completions": ["a", "b"], "ranks": [0, 1]}\n{"prompt": "y"}\n')
    with pytest.raises(ValueError, match=r"broken.jsonl, line 2: ranked row without completions"):
        push_preference_dataset(data, "alice/prefs", dry_run=tmp_path / "dry2")


def test_parquet_preference_data(tmp_path):
    import pyarrow
    import pyarrow.parquet

    from dpo_ext import push_preference_dataset

    data = tmp_path / "generated"
    data.mkdir()
    rows = [{"prompt": "p", "completions": ["a", "b", "c"], "scores": [0.5, 0.25, 0.0]},
            {"prompt": "q", "completions": ["a", "b"], "scores": [1.0, 0.0]}]
    pyarrow.parquet.write_table(pyarrow.Table.from_pylist(rows), data / "train.parquet")
    result = push_preference_dataset(data, "alice/prefs", dry_run=tmp_path / "dry")
    assert {f.path for f in result.files} == {"README.md", "ranked/train.parquet"}
    assert "list `completions` of 2 or 3 completions" in (tmp_path / "dry" / "README.md").read_text()

    (data / "more.jsonl").write_text(json.dumps(rows[0]) + "\n")
    with pytest.raises(ValueError, match="mixes JSONL and Parquet"):
        push_preference_dataset(data, "alice/prefs", dry_run=tmp_path / "dry2")


@pytest.mark.parametrize("row, accepted", [
    ({"prompt": [{"role": "user", "content": "Hi"}], "completions": [[{"role": "assistant", "content": "Hello"}],
                                                                     [{"role": "assistant", "content": "Go"}]],
      "ranks": [0, 1]}, True),
    ({"prompt": "p", "completions": ["a", "a"], "scores": [1, 1]}, True),  # no preference: dropped, not refused
    ({"prompt": "p", "completions": ["a", "b"]}, False),  # a list without its ranking
    ({"prompt": "p", "responses": ["a", "b"], "ranks": [0, 1]}, False),  # not a column the trainer reads
    ({"prompt": "p", "completions": ["a", "b"], "ranks": [0, 1], "ref_logps": [-1.0, float("nan")]}, False),
], ids=["chat", "identical", "no-ranking", "responses", "nan-ref-logps"])
def test_published_rows_are_exactly_the_rows_training_accepts(tmp_path, row, accepted):
    """One definition of a valid row: the publisher accepts a row exactly when `normalize_row` does."""
    from dpo_ext import normalize_row, push_preference_dataset

    data = tmp_path / "generated"
    data.mkdir()
    (data / "train.jsonl").write_text(json.dumps(row) + "\n")

    def accepts(call) -> bool:
        try:
            call()
        except ValueError:
            return False
        return True

    assert accepts(lambda: normalize_row(row)) == accepted
    assert accepts(lambda: push_preference_dataset(data, "alice/prefs", dry_run=tmp_path / "dry")) == accepted


def test_ranked_row_without_ranking_names_the_field(tmp_path):
    from dpo_ext import push_preference_dataset

    data = tmp_path / "generated"
    data.mkdir()
    (data / "train.jsonl").write_text(json.dumps({"prompt": "p", "completions": ["a", "b"]}) + "\n")
    with pytest.raises(ValueError, match=r"train.jsonl, line 1, field 'ranks': missing .*'scores'.*training would "
                                         r"refuse this row"):
        push_preference_dataset(data, "alice/prefs", dry_run=tmp_path / "dry")


class CreatesMarker:
    """Unpickling this creates the file `path`: stands for any code a malicious pickle could run."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def publishable_copy(adapter, folder: Path) -> Path:
    """The adapter's weights and config alone, in `folder`: no training config, no tokenizer."""
    folder.mkdir()
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        (folder / name).write_bytes((adapter[0] / name).read_bytes())
    return folder


def test_training_args_bin_is_never_unpickled(adapter, tmp_path, capsys, caplog):
    import torch

    from dpo_ext.cli import main

    folder = publishable_copy(adapter, tmp_path / "downloaded")
    marker = tmp_path / "code-ran"
    torch.save(CreatesMarker(marker), folder / "training_args.bin")
    args = ["push", str(folder), "--repo-id", "alice/x", "--dry-run"]

    assert main(args + [str(tmp_path / "a")]) == 2  # beta is recorded nowhere we read
    err = capsys.readouterr().err
    assert not marker.exists()
    assert "training_args.bin is never read (it is a pickle" in err
    assert "--config FILE.yaml" in err and "--beta" in err

    assert main(args + [str(tmp_path / "b"), "--beta", "0.1"]) == 0
    assert not marker.exists()
    assert "training_args.bin is never read" in caplog.text
    assert not (tmp_path / "b" / "training_config.yaml").exists()


def test_truncated_weights_are_never_staged(adapter, tmp_path, capsys):
    from dpo_ext.cli import main

    folder = publishable_copy(adapter, tmp_path / "interrupted")
    weights = folder / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-64])  # the header is intact: only the data is cut short
    assert main(["push", str(folder), "--repo-id", "alice/x", "--beta", "0.1", "--dry-run",
                 str(tmp_path / "staged")]) == 2
    err = capsys.readouterr().err
    assert f"{weights} is not a complete safetensors file" in err and "truncated: 64 bytes missing" in err
    assert "save it again" in err
    assert not (tmp_path / "staged").exists() or not any((tmp_path / "staged").iterdir())


@pytest.mark.parametrize("init_lora_weights", [True, False], ids=["disabled_adapters", "adapter_copy"])
def test_trainer_saves_the_training_config_that_push_publishes(tokenizer, tmp_path, init_lora_weights):
    """Every save (checkpoints too, and the adapter-copy branch) writes training_config.json without the token."""
    import datasets
    from fixtures import make_model, ranked_rows
    from peft import LoraConfig

    from dpo_ext import PLDPOConfig, PLDPOTrainer, push_adapter

    secret = "hf_trainertokenabcdef"
    args = PLDPOConfig(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, max_steps=1, save_steps=1,
                       save_strategy="steps", report_to="none", use_cpu=True, max_length=32, beta=0.25,
                       hub_token=secret, logging_steps=1)
    lora = LoraConfig(r=4, target_modules=["c_attn"], fan_in_fan_out=True, init_lora_weights=init_lora_weights,
                      task_type="CAUSAL_LM")
    trainer = PLDPOTrainer(make_model(tokenizer), args=args, train_dataset=datasets.Dataset.from_list(ranked_rows(4)),
                           processing_class=tokenizer, peft_config=lora)
    assert trainer.reference.name == ("disabled_adapters" if init_lora_weights else "adapter_copy")
    trainer.train()
    trainer.save_model(str(tmp_path / "adapter"))

    for folder in (tmp_path / "out" / "checkpoint-1", tmp_path / "adapter"):
        text = (folder / "training_config.json").read_text()
        config = json.loads(text)
        assert config["beta"] == 0.25 and config["loss_type"] == "plackett_luce"
        assert "hub_token" not in config and secret not in text

    result = push_adapter(tmp_path / "adapter", "alice/x", base_model=BASE_MODEL, dry_run=tmp_path / "staged")
    staged = yaml.safe_load((result.staging_dir / "training_config.yaml").read_text())
    assert staged["beta"] == 0.25 and "beta=0.25" in (result.staging_dir / "README.md").read_text()


@pytest.mark.parametrize("repo_id", ["alice/a--b", "alice/name.", "alice/" + "x" * 97, "a/b/c", "alice/modèle"])
def test_repo_id_the_hub_would_refuse_is_named(repo_id):
    from dpo_ext.hub.publish import check_repo_id

    with pytest.raises(ValueError, match="is not a valid Hub model repository id"):
        check_repo_id(repo_id)
    check_repo_id("alice/tiny-pl_v1.0")
