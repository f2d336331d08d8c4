"""`dpo-ext train`: TrlParser flags and YAML, a LoRA run on a saved tiny model, the end-of-training evaluation (checked
against the scorer, an independent computation), the staged push and its card, and the errors raised before any
training."""

import json

import pytest
import yaml
from fixtures import make_model, ranked_rows

from dpo_ext.cli import main
from dpo_ext.scoring.evaluation import evaluate_preferences
from dpo_ext.scoring.scorer import ImplicitRewardScorer


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture(scope="module")
def files(tokenizer, tmp_path_factory):
    root = tmp_path_factory.mktemp("train_cli")
    make_model(tokenizer).save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")
    write_jsonl(root / "train.jsonl", ranked_rows(16, k=3))
    write_jsonl(root / "test.jsonl", ranked_rows(8, k=3, seed=1))
    config = {  # one target module: TRL's ModelConfig turns it into a string (a regex to PEFT); it must still match
        "model_name_or_path": str(root / "base"), "dataset_name": str(root / "train.jsonl"),
        "eval_dataset_name": str(root / "test.jsonl"), "use_peft": True, "lora_r": 4,
        "lora_target_modules": ["c_attn"], "learning_rate": 0.01, "beta": 0.5, "max_steps": 4,
        "per_device_train_batch_size": 4, "per_device_eval_batch_size": 3, "report_to": "none", "use_cpu": True,
        "save_strategy": "no", "output_dir": str(root / "out"), "logging_steps": 1,
    }
    (root / "config.yaml").write_text("# dpo-ext train --config config.yaml\n" + yaml.safe_dump(config))
    return root


@pytest.fixture(scope="module")
def trained(files):
    code = main(["train", "--config", str(files / "config.yaml"), "--push_to_hub", "--hub_model_id", "me/tiny-pl",
                 "--hub_dry_run", str(files / "staged")])
    assert code == 0
    return files


def test_yaml_run_trains_a_lora_adapter_and_evaluates_it(trained):
    out = trained / "out"
    assert (out / "adapter_model.safetensors").is_file()
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["r"] == 4 and adapter["target_modules"] == ["c_attn"]
    record = json.loads((out / "training_config.json").read_text())
    assert record["beta"] == 0.5 and record["max_steps"] == 4  # YAML keys reach PLDPOConfig
    results = json.loads((out / "eval_results.json").read_text())
    assert results["epoch"] == pytest.approx(1.0)


def test_end_of_training_evaluation_matches_the_scorer_on_the_saved_adapter(trained):
    """The trainer's eval (batches of 3, 3 and 2 rows) and the scorer (prompt cache, no batching by rows) compute
    the rewards independently; means over rows must agree, so the short last batch must not weigh like a full one."""
    results = json.loads((trained / "out" / "eval_results.json").read_text())
    scorer = ImplicitRewardScorer.from_pretrained(str(trained / "out"), beta=0.5)
    expected = evaluate_preferences(scorer, ranked_rows(8, k=3, seed=1))
    assert results["eval_rewards/accuracies"] == pytest.approx(expected["accuracy"], abs=1e-6)
    assert results["eval_rewards/kendall_tau"] == pytest.approx(expected["kendall_tau"], abs=1e-6)
    assert results["eval_rewards/chosen"] == pytest.approx(expected["rewards/chosen"], abs=1e-5)
    assert results["eval_rewards/margins"] == pytest.approx(expected["rewards/margins"], abs=1e-5)
    assert results["eval_rewards/margins"] != 0


def test_staged_push_carries_the_adapter_and_the_evaluation_in_its_card(trained):
    staged = trained / "staged"
    results = json.loads((trained / "out" / "eval_results.json").read_text())
    assert (staged / "adapter_model.safetensors").read_bytes() == \
        (trained / "out" / "adapter_model.safetensors").read_bytes()
    card = (staged / "README.md").read_text()
    head = yaml.safe_load(card.split("---")[1])
    reported = {m["type"]: m["value"] for m in head["model-index"][0]["results"][0]["metrics"]}
    assert reported["preference_accuracy"] == pytest.approx(results["eval_rewards/accuracies"])
    assert reported["kendall_tau"] == pytest.approx(results["eval_rewards/kendall_tau"])
    assert head["base_model"] == str(trained / "base")
    # Which reference it was trained against, with the fingerprint: published, and named on the card
    record = json.loads((trained / "out" / "dpo_ext_reference.json").read_text())
    assert json.loads((staged / "dpo_ext_reference.json").read_text()) == record
    assert "- **Reference:** `disabled_adapters`" in card
    assert f"reference_weights `{record['reference_fingerprint']['reference_weights']}`" in card


def test_columns_are_renamed_to_the_row_format(files, tmp_path):
    rows = [{"question": r["prompt"], "answers": r["completions"], "order": r["ranks"]} for r in ranked_rows(8, k=3)]
    write_jsonl(tmp_path / "renamed.jsonl", rows)
    code = main(["train", "--config", str(files / "config.yaml"), "--dataset_name", str(tmp_path / "renamed.jsonl"),
                 "--dataset_columns", "prompt=question", "completions=answers", "ranks=order",
                 "--dataset_test_split", "none",
                 "--max_steps", "1", "--output_dir", str(tmp_path / "out")])
    assert code == 0 and (tmp_path / "out" / "adapter_model.safetensors").is_file()
    assert json.loads((tmp_path / "out" / "eval_results.json").read_text()) == {}


def test_a_single_training_file_is_never_evaluated_on(files, tmp_path, caplog):
    code = main(["train", "--config", str(files / "config.yaml"), "--eval_dataset_name", "", "--max_steps", "1",
                 "--output_dir", str(tmp_path / "out")])
    assert code == 0
    assert json.loads((tmp_path / "out" / "eval_results.json").read_text()) == {}
    assert "is a single file (the training split): no evaluation" in caplog.text


def test_the_process_group_is_closed_after_training(files, tmp_path):
    """A launcher's process group must not outlive the command: left to interpreter shutdown, gloo aborted a rank at
    exit (SIGABRT) in about one two-process run in three. Here a one-process group stands in for the launcher's."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        code = main(["train", "--config", str(files / "config.yaml"), "--max_steps", "1", "--eval_dataset_name", "",
                     "--output_dir", str(tmp_path / "out")])
        assert code == 0
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


@pytest.mark.parametrize("flags, message", [
    (["--dataset_columns", "prompt=nothing"], "train.jsonl: no column 'nothing' to rename"),
    (["--dataset_columns", "prompt"], "--dataset_columns 'prompt': give ours=theirs"),
    (["--push_to_hub"], "--push_to_hub needs --hub_model_id"),
    (["--load_in_4bit"], "need a CUDA GPU"),
    (["--model_name_or_path", ""], "--model_name_or_path is required"),
])
def test_refused_before_training_with_a_message(files, tmp_path, capsys, flags, message):
    code = main(["train", "--config", str(files / "config.yaml"), "--output_dir", str(tmp_path / "out"), *flags])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out" / "adapter_model.safetensors").exists()


def test_a_launch_that_cannot_work_is_refused_before_the_model_loads(files, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_CPU_RAM_EFFICIENT_LOADING", "true")
    code = main(["train", "--config", str(files / "config.yaml"), "--output_dir", str(tmp_path / "out"),
                 "--model_name_or_path", str(tmp_path / "not-loaded")])  # would fail to load if it got that far
    assert code == 2
    assert "set fsdp_cpu_ram_efficient_loading: false" in capsys.readouterr().err


def test_rows_given_in_python_need_no_dataset_name(files, tmp_path):
    """A recipe passes its converted rows; with no dataset named there is nothing to evaluate on, and no error."""
    from dpo_ext.cli.train import make_parser, run_training

    script_args, training_args, model_args = make_parser().parse_args_and_config(
        ["--config", str(files / "config.yaml"), "--eval_dataset_name", "", "--max_steps", "1",
         "--output_dir", str(tmp_path / "out")])
    script_args.dataset_name = None
    assert run_training(script_args, training_args, model_args, train_rows=ranked_rows(8, k=3)) == {}
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()


def test_precompute_ref_then_train_reuses_the_cache_and_records_its_fingerprint(files, tmp_path, monkeypatch, capsys):
    from dpo_ext.training.trainer import PLDPOTrainer

    cache = tmp_path / "ref_cache"
    assert main(["precompute-ref", "--config", str(files / "config.yaml"), "--ref_cache_dir", str(cache),
                 "--output_dir", str(tmp_path / "unused")]) == 0
    assert sorted(p.name for p in cache.iterdir()) == ["eval.json", "train.json"]
    assert not (tmp_path / "unused" / "adapter_model.safetensors").exists()  # nothing trained
    monkeypatch.setattr(PLDPOTrainer, "_compute_ref_logps", lambda *a: pytest.fail("recomputed"))
    train = ["train", "--config", str(files / "config.yaml"), "--precompute_ref_log_probs", "true",
             "--ref_cache_dir", str(cache), "--output_dir", str(tmp_path / "out")]
    capsys.readouterr()
    assert main(train) == 0
    out = capsys.readouterr().out  # the run says where everything went and which reference it used
    assert f"adapter: {tmp_path / 'out'}" in out
    assert f"reference: disabled_adapters (train rows: read from the reference cache {cache / 'train.json'}" in out
    assert f"evaluation ({tmp_path / 'out' / 'eval_results.json'}): loss=" in out and "rewards/accuracies=" in out
    record = json.loads((tmp_path / "out" / "dpo_ext_reference.json").read_text())
    assert record["reference_fingerprint"] == json.loads((cache / "train.json").read_text())["fingerprint"]
    assert main([*train, "--max_length", "48"]) == 2
    assert "changed since then: max_length. Reusing them would train against the wrong reference" in \
        capsys.readouterr().err
