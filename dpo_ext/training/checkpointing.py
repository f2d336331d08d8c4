"""The Trainer side of `dpo_ext.training.checkpoint_files`: checkpoints written complete or not at all, and resuming
only from a complete one. A mixin, so that any `transformers.Trainer` subclass can use it (`PLDPOTrainer` does)."""

import os
import shutil

from transformers.trainer_callback import ExportableState
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, SaveStrategy, rotate_checkpoints

from dpo_ext.training.checkpoint_files import (
    TRAINER_STATE,
    check_checkpoint,
    commit_staged,
    last_complete_checkpoint,
    remove_stale_staging,
    staging_dir,
)


class CompleteCheckpointsMixin:
    """Put before `transformers.Trainer` in the bases: overrides `train` (resume) and `_save_checkpoint` (save)."""

    def _checkpoint_requirements(self) -> dict:
        # DeepSpeed keeps weights and optimizer in its own layout; save_only_model writes no optimizer state.
        return {"require_weights": not self.is_deepspeed_enabled,
                "require_optimizer": not (self.args.save_only_model or self.is_deepspeed_enabled)}

    def train(self, resume_from_checkpoint=None, trial=None, ignore_keys_for_eval=None):
        """`Trainer.train`, resuming only from a complete checkpoint.

        With ``resume_from_checkpoint=True`` the newest complete ``checkpoint-N`` of ``output_dir`` is used (newer
        incomplete ones are skipped with a warning, leftover ``tmp-checkpoint-*`` folders removed); with a path, an
        incomplete checkpoint raises `~dpo_ext.training.checkpoint_files.IncompleteCheckpointError` naming the bad file.
        """
        requirements = self._checkpoint_requirements()
        if resume_from_checkpoint is True:
            if self.args.should_save:
                remove_stale_staging(self.args.output_dir)
            resume_from_checkpoint = last_complete_checkpoint(self.args.output_dir, **requirements)
            if resume_from_checkpoint is None:
                raise ValueError(f"No complete checkpoint found in output directory ({self.args.output_dir})")
        elif isinstance(resume_from_checkpoint, str):
            check_checkpoint(resume_from_checkpoint, **requirements)
        return super().train(resume_from_checkpoint, trial, ignore_keys_for_eval)

    def _save_checkpoint(self, model, trial):
        """`Trainer._save_checkpoint` of transformers 5.24 (same files, same order), written to ``tmp-checkpoint-N``
        and renamed to ``checkpoint-N`` as the last step, by the main process once every process has written."""
        if self.hp_search_backend is None and trial is None:
            self.store_flos()
        run_dir = self._get_output_dir(trial=trial)
        final_dir = os.path.join(run_dir, f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
        staging = staging_dir(final_dir)
        if self.args.should_save:
            shutil.rmtree(staging, ignore_errors=True)  # left by a run killed while saving this same step
        self.accelerator.wait_for_everyone()  # before any process writes its part (rng_state_<i>.pth)
        self.save_model(staging, _internal_call=True)
        self._name_best_checkpoint(run_dir)
        if not self.args.save_only_model:
            self._save_optimizer_and_scheduler(staging)
            self._save_scaler(staging)
            self._save_rng_state(staging)
        if self.args.should_save:
            self._store_callback_states()
            self.state.save_to_json(os.path.join(staging, TRAINER_STATE))

        self.accelerator.wait_for_everyone()  # every process has finished writing into the staging folder
        if self.args.should_save:
            commit_staged(staging, final_dir)
        self.accelerator.wait_for_everyone()  # no process goes on before checkpoint-N exists
        if self.args.push_to_hub:
            self._push_from_checkpoint(final_dir)
        if self.args.should_save:  # only checkpoint-N names are counted: staging folders never are
            rotate_checkpoints(output_dir=run_dir, save_total_limit=self.args.save_total_limit,
                               best_model_checkpoint=self.state.best_model_checkpoint, use_mtime=True)

    def _name_best_checkpoint(self, run_dir) -> None:
        best_step = self.state.best_global_step
        if best_step and self.args.save_strategy in (SaveStrategy.STEPS, SaveStrategy.EPOCH, SaveStrategy.BEST):
            best_dir = os.path.join(run_dir, f"{PREFIX_CHECKPOINT_DIR}-{best_step}")
            if best_step == self.state.global_step or os.path.exists(best_dir):
                self.state.best_model_checkpoint = best_dir  # the final name, which this save creates at its end

    def _store_callback_states(self) -> None:
        for cb in self.callback_handler.callbacks + [self.control]:
            if isinstance(cb, ExportableState):
                name = cb.__class__.__name__
                if isinstance(self.state.stateful_callbacks[name], list):
                    self.state.stateful_callbacks[name].append(cb.state())
                else:
                    self.state.stateful_callbacks[name] = cb.state()
