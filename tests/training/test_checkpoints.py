"""Checkpoints are complete or absent, and resuming picks a complete one: runs SIGKILLed after and during a save.

The runs come from tests/scripts/train_checkpoints.py, a server that pays the heavy imports once and runs each tiny
training in a forked child (6 steps, a checkpoint every 2 steps), killing it with SIGKILL where a test asks.
"""

import json
import os
import select
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dpo_ext.training.checkpoint_files import IncompleteCheckpointError, check_checkpoint, last_complete_checkpoint

TESTS = Path(__file__).resolve().parents[1]  # tests/: fixtures.py and scripts/


class TrainingServer:
    def __init__(self, log_path):
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen([sys.executable, str(TESTS / "scripts" / "train_checkpoints.py"), str(TESTS)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True,
                                     env=env)

    def run(self, run_dir, resume=False, stop=None, timeout=180) -> dict:
        self.proc.stdin.write(json.dumps({"run_dir": str(run_dir), "resume": resume, "stop": stop}) + "\n")
        self.proc.stdin.flush()
        while select.select([self.proc.stdout], [], [], timeout)[0]:
            line = self.proc.stdout.readline()
            if not line:
                break
            if line.startswith("@@"):
                return json.loads(line[2:])
        raise AssertionError(f"the training server gave no answer; its log:\n{self.log_text()[-4000:]}")

    def log_text(self) -> str:
        self.log.flush()
        return Path(self.log_path).read_text()

    def close(self):
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = TrainingServer(tmp_path_factory.mktemp("server") / "log.txt")
    yield server
    server.close()


@pytest.fixture(scope="module")
def reference(server, tmp_path_factory):
    """An uninterrupted run."""
    run_dir = tmp_path_factory.mktemp("reference")
    assert server.run(run_dir) == {"exitcode": 0, "killed": False}, server.log_text()[-4000:]
    return run_dir


def _summary(run_dir):
    return json.loads((run_dir / "summary.json").read_text())


def _assert_same_result(run_dir, reference):
    """Bit-identical: every logged value of every step, and every adapter weight."""
    assert _summary(run_dir)["logs"] == _summary(reference)["logs"]
    ours, theirs = (load_file(d / "final" / "adapter_model.safetensors") for d in (run_dir, reference))
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert torch.equal(ours[name], theirs[name]), name


def _checkpoints(run_dir):
    return sorted(p.name for p in run_dir.iterdir() if p.name.startswith("checkpoint-"))


def _load_everything(folder):
    """Load every file resuming reads, the way it reads it (independently of dpo_ext.training.checkpoint_files)."""
    from transformers.trainer_callback import TrainerState
    from transformers.trainer_pt_utils import safe_globals

    TrainerState.load_from_json(str(folder / "trainer_state.json"))
    for path in folder.iterdir():
        if path.suffix == ".safetensors":
            load_file(path)
        elif path.suffix in (".pt", ".pth"):  # optimizer, scheduler, RNG state (training_args.bin is never read)
            with safe_globals():
                torch.load(path, weights_only=True)
        elif path.suffix == ".json":
            json.loads(path.read_text())


def test_resume_after_a_kill_matches_an_uninterrupted_run(server, reference, tmp_path):
    """SIGKILL right after checkpoint-2 is complete, resume: same losses and metrics, same adapter, to the bit."""
    run_dir = tmp_path / "run"
    assert server.run(run_dir, stop="saved:2") == {"exitcode": -9, "killed": True}
    assert _checkpoints(run_dir) == ["checkpoint-2"]
    assert server.run(run_dir, resume=True) == {"exitcode": 0, "killed": False}, server.log_text()[-4000:]
    assert _summary(run_dir)["steps_run"] == 4  # it did resume: only steps 3-6 ran
    _assert_same_result(run_dir, reference)


def test_a_kill_during_a_save_leaves_no_incomplete_checkpoint(server, reference, tmp_path):
    """SIGKILL while checkpoint-4 is half written: there is no checkpoint-4, and resuming continues from step 2."""
    run_dir = tmp_path / "run"
    assert server.run(run_dir, stop="mid_save:4") == {"exitcode": -9, "killed": True}
    assert _checkpoints(run_dir) == ["checkpoint-2"]
    for name in _checkpoints(run_dir):
        _load_everything(run_dir / name)
    assert (run_dir / "tmp-checkpoint-4" / "adapter_model.safetensors").exists()  # the kill came mid-save

    assert server.run(run_dir, resume=True) == {"exitcode": 0, "killed": False}, server.log_text()[-4000:]
    assert _summary(run_dir)["steps_run"] == 4
    assert _checkpoints(run_dir) == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]
    assert not list(run_dir.glob("tmp-*"))
    _assert_same_result(run_dir, reference)


def _copy_checkpoints(reference, run_dir, names):
    run_dir.mkdir()
    for name in names:
        shutil.copytree(reference / name, run_dir / name)


def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_resume_skips_an_incomplete_checkpoint_with_a_warning(server, reference, tmp_path):
    """A checkpoint-6 left incomplete by plain transformers: resume=True warns, uses checkpoint-4 and finishes."""
    run_dir = tmp_path / "run"
    _copy_checkpoints(reference, run_dir, ["checkpoint-2", "checkpoint-4", "checkpoint-6"])
    _truncate(run_dir / "checkpoint-6" / "adapter_model.safetensors")
    assert server.run(run_dir, resume=True) == {"exitcode": 0, "killed": False}, server.log_text()[-4000:]
    assert _summary(run_dir)["steps_run"] == 2
    _assert_same_result(run_dir, reference)
    assert f"Skipping checkpoint {run_dir / 'checkpoint-6'}: adapter_model.safetensors" in server.log_text()


@pytest.mark.parametrize("damage, named", [
    pytest.param(lambda d: _truncate(d / "trainer_state.json"), "trainer_state.json is truncated", id="state"),
    pytest.param(lambda d: _truncate(d / "adapter_model.safetensors", 0.9), "adapter_model.safetensors is truncated",
                 id="weights"),
    pytest.param(lambda d: _truncate(d / "optimizer.pt"), "optimizer.pt is truncated", id="optimizer"),
    pytest.param(lambda d: (d / "scheduler.pt").unlink(), "scheduler.pt is missing", id="no-scheduler"),
    pytest.param(lambda d: (d / "adapter_model.safetensors").unlink(), "no model weights", id="no-weights"),
])
def test_an_incomplete_checkpoint_is_named_with_its_bad_file(reference, tmp_path, damage, named):
    run_dir = tmp_path / "run"
    _copy_checkpoints(reference, run_dir, ["checkpoint-2", "checkpoint-4"])
    damage(run_dir / "checkpoint-4")
    with pytest.raises(IncompleteCheckpointError, match=named):
        check_checkpoint(str(run_dir / "checkpoint-4"))
    assert last_complete_checkpoint(str(run_dir)) == str(run_dir / "checkpoint-2")
    check_checkpoint(str(run_dir / "checkpoint-2"))


def test_an_explicit_corrupt_checkpoint_raises_a_clear_error(tokenizer, reference, tmp_path):
    """resume_from_checkpoint=<a checkpoint with a truncated trainer_state.json> names the file and the way out."""
    import datasets
    from fixtures import make_model, ranked_rows
    from peft import LoraConfig

    from dpo_ext import PLDPOConfig, PLDPOTrainer

    run_dir = tmp_path / "run"
    _copy_checkpoints(reference, run_dir, ["checkpoint-2", "checkpoint-4"])
    _truncate(run_dir / "checkpoint-4" / "trainer_state.json")
    args = PLDPOConfig(output_dir=str(run_dir), per_device_train_batch_size=2, max_steps=6, report_to=[],
                       use_cpu=True, bf16=False, gradient_checkpointing=False, max_length=32, seed=0)
    trainer = PLDPOTrainer(make_model(tokenizer), args=args, train_dataset=datasets.Dataset.from_list(ranked_rows(4)),
                           processing_class=tokenizer,
                           peft_config=LoraConfig(r=4, target_modules=["c_attn"], task_type="CAUSAL_LM"))
    with pytest.raises(IncompleteCheckpointError) as error:
        trainer.train(resume_from_checkpoint=str(run_dir / "checkpoint-4"))
    message = str(error.value)
    assert str(run_dir / "checkpoint-4") in message
    assert "trainer_state.json is truncated" in message
    assert f"Resume from {run_dir / 'checkpoint-2'} instead" in message


def test_same_checkpoints_and_bookkeeping_as_the_plain_trainer(tokenizer, tmp_path):
    """Rotation and best-model bookkeeping as in transformers' own _save_checkpoint, with checkpoints renamed last.

    The best model is the first evaluation's (loss 'greater is better' on a run whose loss goes down): the best
    checkpoint is named once when it is the one being saved, then kept by rotation beside the newest.
    """
    import datasets
    from fixtures import make_model, ranked_rows
    from peft import LoraConfig
    from transformers import Trainer

    from dpo_ext import PLDPOConfig, PLDPOTrainer

    class PlainCheckpoints(PLDPOTrainer):
        _save_checkpoint = Trainer._save_checkpoint

    data = datasets.Dataset.from_list(ranked_rows(4, k=3))
    folders = {}
    for cls in (PLDPOTrainer, PlainCheckpoints):
        run_dir = tmp_path / cls.__name__
        args = PLDPOConfig(output_dir=str(run_dir), per_device_train_batch_size=2, learning_rate=1e-2, max_steps=6,
                           save_strategy="steps", save_steps=2, eval_strategy="steps", eval_steps=2,
                           save_total_limit=2, load_best_model_at_end=True, metric_for_best_model="loss",
                           greater_is_better=True, report_to=[], use_cpu=True, bf16=False,
                           gradient_checkpointing=False, max_length=32, seed=0, disable_tqdm=True)
        trainer = cls(make_model(tokenizer), args=args, train_dataset=data, eval_dataset=data,
                      processing_class=tokenizer,
                      peft_config=LoraConfig(r=4, target_modules=["c_attn"], task_type="CAUSAL_LM"))
        trainer.train()
        assert trainer.state.best_model_checkpoint == str(run_dir / "checkpoint-2")
        folders[cls] = {}
        for name in sorted(os.listdir(run_dir)):
            state = json.loads((run_dir / name / "trainer_state.json").read_text())
            folders[cls][name] = (sorted(os.listdir(run_dir / name)),
                                  state["best_model_checkpoint"].replace(str(run_dir), "RUN"), state["best_metric"],
                                  state["stateful_callbacks"])
    assert list(folders[PLDPOTrainer]) == ["checkpoint-2", "checkpoint-6"]  # no staging folder left
    assert folders[PLDPOTrainer] == folders[PlainCheckpoints]
