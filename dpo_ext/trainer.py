"""PLDPOTrainer: glue between a Hugging Face Trainer and the pure pieces (log-probs -> reference -> loss -> metrics)."""

import json
import logging
import os
import shutil
from collections import defaultdict

import torch
from torch.utils.data import DataLoader
from transformers import AutoModelForCausalLM, Trainer, set_seed
from transformers.trainer_callback import ExportableState
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, SaveStrategy, rotate_checkpoints

from dpo_ext.checkpoints import (
    TRAINER_STATE,
    check_checkpoint,
    commit_staged,
    last_complete_checkpoint,
    remove_stale_staging,
    staging_dir,
)
from dpo_ext.config import PLDPOConfig
from dpo_ext.data.rows import REF_LOGPS
from dpo_ext.data.collate import RankedCollator
from dpo_ext.data.tokenize import prepare_ranked_dataset
from dpo_ext.modeling.batches import batch_token_logps
from dpo_ext.logps import sequence_logps, to_grid
from dpo_ext.losses import implicit_rewards, plackett_luce_loss, preferred_ft_loss, unlikelihood_loss
from dpo_ext.modeling.models import check_tokenizer_fits, load_tokenizer, position_limit, vocabulary_size
from dpo_ext.modeling.support import choose_collator
from dpo_ext.ranking_metrics import (
    best_and_worst,
    best_and_worst_slots,
    kendall_tau,
    pairwise_accuracy,
    top1_accuracy,
)
from dpo_ext.reference import (
    REFERENCE_RECORD,
    AdapterCopyReference,
    InitialPolicyReference,
    ModelReference,
    check_reference_model,
    choose_reference,
    is_peft_model,
)
from dpo_ext.setup_checks import check_output_dir, check_rows_fit, ensure_pad_token, rows_to_dataset

logger = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """The loss of a batch is NaN or infinite; raised before it can change the weights, naming the step and rows."""


def _disable_dropout(model) -> None:
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


class PLDPOTrainer(Trainer):
    """Train a causal LM on ranked preferences with the Plackett-Luce DPO loss (K = 2 is exactly DPO).

    Used like `trl.DPOTrainer`. Rows may be ranked, scored or pairwise (see `dpo_ext.data`); all K completions of a
    batch go through one forward pass of the policy and one of the reference. With `peft_config` (or a PeftModel)
    the reference is the same model with its adapters disabled whenever that is exactly the starting policy; see
    `dpo_ext.reference` for the other sources and for the check that refuses a wrong one.

    Args:
        model (`str` or `PreTrainedModel` or `PeftModel`): the policy, or a model id/path to load.
        ref_model (`PreTrainedModel`, *optional*): an explicit reference model.
        args ([`PLDPOConfig`], *optional*): training arguments.
        data_collator (*optional*): defaults to [`~dpo_ext.data.collate.RankedCollator`].
        train_dataset (`datasets.Dataset`): preference rows.
        eval_dataset (`datasets.Dataset` or `dict`, *optional*): preference rows for evaluation.
        processing_class (`PreTrainedTokenizerBase`, *optional*): the tokenizer (loaded from `model` if omitted).
        peft_config (`peft.PeftConfig`, *optional*): wraps `model` in a new adapter.
    """

    _tag_names = ["dpo_ext", "plackett-luce-dpo"]

    def __init__(self, model, ref_model=None, args=None, data_collator=None, train_dataset=None, eval_dataset=None,
                 processing_class=None, compute_metrics=None, callbacks=None, optimizers=(None, None),
                 peft_config=None):
        if args is None:
            args = PLDPOConfig(output_dir="pldpo-output")
        if not isinstance(args, PLDPOConfig):
            raise TypeError(f"args must be a PLDPOConfig, got {type(args).__name__}")
        if train_dataset is None:
            raise ValueError("train_dataset is required")
        check_output_dir(args)
        set_seed(args.seed)  # before the adapter is created, so its random init is reproducible (as in TRL)
        if isinstance(model, str):
            processing_class = processing_class or load_tokenizer(model, "processing_class")
            model = AutoModelForCausalLM.from_pretrained(model, use_safetensors=True)
        processing_class = processing_class or load_tokenizer(model.config._name_or_path, "processing_class")
        ensure_pad_token(processing_class)
        check_tokenizer_fits(model, processing_class, "the policy")
        if ref_model is not None:
            if ref_model is model:
                raise ValueError("model and ref_model must be different objects; omit ref_model to share weights")
            check_reference_model(model, ref_model, processing_class)

        if peft_config is not None:
            if is_peft_model(model):
                raise ValueError(
                    "model is already a PeftModel and a peft_config was given too: pass one of them (to train the "
                    "existing adapter further, pass the PeftModel alone)"
                )
            from peft import get_peft_model

            model = get_peft_model(model, peft_config)
        if args.gradient_checkpointing and is_peft_model(model):
            model.enable_input_require_grads()  # checkpointed blocks need an input that requires grad
        if args.disable_dropout:
            for m in (model, ref_model):
                if m is not None:
                    _disable_dropout(m)

        limits = [position_limit(m) for m in (model, ref_model) if m is not None]
        self._position_limit = min((n for n in limits if n is not None), default=None)
        self._vocab_size = vocabulary_size(model)
        train_dataset = self._prepare_dataset(train_dataset, "train", processing_class, args)
        eval_dataset = self._prepare_eval_datasets(eval_dataset, processing_class, args)
        collator = RankedCollator(pad_token_id=processing_class.pad_token_id, max_length=args.max_length)
        collator = choose_collator(collator, [model, ref_model], args.prefix_sharing)  # packed rows if supported
        data_collator = data_collator or collator

        has_ref_column = REF_LOGPS in train_dataset.column_names
        probe_batch = self._probe_batch(collator, train_dataset, model)
        self.reference = choose_reference(
            args.reference, model, ref_model, probe_batch, self._unwrap,
            precompute=args.precompute_ref_log_probs or has_ref_column,
        )

        super().__init__(model=model, args=args, data_collator=data_collator, train_dataset=train_dataset,
                         eval_dataset=eval_dataset, processing_class=processing_class,
                         compute_metrics=compute_metrics, callbacks=callbacks, optimizers=optimizers)
        # The loss is already a per-list mean: let Trainer scale it for gradient accumulation.
        self.model_accepts_loss_kwargs = False
        if isinstance(self.reference, ModelReference):
            self.reference.ref_model = self.accelerator.prepare_model(self.reference.ref_model, evaluation_mode=True)
        if hasattr(self.model, "add_model_tags"):
            self.model.add_model_tags(self._tag_names)

        self._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
        if args.precompute_ref_log_probs and not has_ref_column:
            self.train_dataset = self.precompute_ref_logps(self.train_dataset, "train")
            if isinstance(self.eval_dataset, dict):
                self.eval_dataset = {k: self.precompute_ref_logps(v, k) for k, v in self.eval_dataset.items()}
            elif self.eval_dataset is not None:
                self.eval_dataset = self.precompute_ref_logps(self.eval_dataset, "eval")

    # -- set-up helpers -------------------------------------------------------------------------------------------

    def _prepare_dataset(self, dataset, name, tokenizer, args):
        """Validated, tokenized rows whose lengths the model can take (raw rows, a list of dicts, or tokenized)."""
        if isinstance(dataset, list):
            dataset = rows_to_dataset(dataset, name)
        dataset = prepare_ranked_dataset(dataset, tokenizer, args.max_length, args.dataset_num_proc, name)
        check_rows_fit(dataset, name, self._position_limit, args.max_length, self._vocab_size)
        return dataset

    def _prepare_eval_datasets(self, eval_dataset, tokenizer, args):
        if isinstance(eval_dataset, dict):
            return {k: self._prepare_dataset(v, k, tokenizer, args) for k, v in eval_dataset.items()}
        return None if eval_dataset is None else self._prepare_dataset(eval_dataset, "eval", tokenizer, args)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
        """`Trainer.evaluate`, also for raw preference rows (they are validated and tokenized first)."""
        if eval_dataset is not None and not isinstance(eval_dataset, str):  # a str names one of self.eval_dataset
            eval_dataset = self._prepare_eval_datasets(eval_dataset, self.processing_class, self.args)
        return super().evaluate(eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)

    def _unwrap(self, model):
        return self.accelerator.unwrap_model(model) if hasattr(self, "accelerator") else model

    @staticmethod
    def _probe_batch(collator, dataset, model, size: int = 4) -> dict:
        device = next(model.parameters()).device
        batch = collator([dataset[i] for i in range(min(size, len(dataset)))])
        return {k: v.to(device) for k, v in batch.items()}

    def precompute_ref_logps(self, dataset, name: str):
        """Add a ``ref_logps`` column (K floats per row) computed once by the chosen reference source."""
        batch_size = self.args.precompute_ref_batch_size or self.args.per_device_eval_batch_size
        loader = DataLoader(dataset, batch_size=batch_size, collate_fn=self.data_collator, shuffle=False)
        rows = []
        self.model.eval()
        for batch in loader:
            batch = self._prepare_inputs(batch)
            ranks = batch["ranks"]
            grid = to_grid(self.reference.logps(self.model, batch), batch["slot_index"], *ranks.shape)
            for b in range(ranks.shape[0]):
                rows.append(grid[b, : int((ranks[b] >= 0).sum())].float().cpu().tolist())
        logger.info("Precomputed reference log-probs for %d %s rows (%s).", len(rows), name, self.reference.name)
        return dataset.add_column(REF_LOGPS, rows)

    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            self._signature_columns = ["prompt_ids", "completion_ids", "ranks", REF_LOGPS, "row_index"]

    # -- loss ------------------------------------------------------------------------------------------------------

    def _reference_logps(self, model, inputs, grid_shape) -> torch.Tensor:
        if REF_LOGPS in inputs:
            return inputs[REF_LOGPS]
        if isinstance(self.reference, InitialPolicyReference):
            raise ValueError(
                f"This dataset has no '{REF_LOGPS}' column, and the reference ({self.reference.name}) only exists "
                "before training. Pass it as eval_dataset when building the trainer so it is precomputed."
            )
        return to_grid(self.reference.logps(model, inputs), inputs["slot_index"], *grid_shape)

    def _preference_loss(self, policy, ref, ranks, row_logps, per_token, mask, slot_index) -> torch.Tensor:
        """The one place a loss is chosen. Returns per-list losses (B,)."""
        args = self.args
        if args.loss_type == "plackett_luce":
            return plackett_luce_loss(policy, ref, args.beta, ranks)
        if args.loss_type == "preferred_ft":
            row_loss = preferred_ft_loss(row_logps, mask.sum(-1))  # per-token NLL of every completion
            return best_and_worst(to_grid(row_loss, slot_index, *ranks.shape), ranks)[0]  # of the best group
        # unlikelihood: the first completion of the best group against the first of the worst group
        row_of_slot = torch.full((ranks.numel(),), -1, dtype=torch.long, device=ranks.device)
        row_of_slot[slot_index] = torch.arange(slot_index.numel(), device=ranks.device)
        best, worst = best_and_worst_slots(ranks)
        offsets = torch.arange(ranks.shape[0], device=ranks.device) * ranks.shape[1]
        best_rows, worst_rows = row_of_slot[offsets + best], row_of_slot[offsets + worst]
        return unlikelihood_loss(per_token[best_rows], mask[best_rows], per_token[worst_rows], mask[worst_rows],
                                 args.unlikelihood_alpha)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        ranks, slot_index = inputs["ranks"], inputs["slot_index"]
        per_token, mask = batch_token_logps(model, inputs)  # (N, T-1), or (N, C_max) for packed rows
        row_logps = sequence_logps(per_token, mask)  # (N,)
        policy = to_grid(row_logps, slot_index, *ranks.shape)  # (B, K)
        ref = self._reference_logps(model, inputs, ranks.shape).to(policy.dtype)  # (B, K)
        losses = self._preference_loss(policy, ref, ranks, row_logps, per_token, mask, slot_index)
        loss = losses.mean()
        if not torch.isfinite(loss):
            raise NonFiniteLossError(self._non_finite_message(loss, inputs))
        self._record_metrics(policy.detach(), ref, ranks)
        return (loss, {"losses": losses.detach()}) if return_outputs else loss

    def _non_finite_message(self, loss, inputs) -> str:
        # transformers' NaN filter would log this step as a normal number while the weights turn to NaN: stop here.
        rows = inputs.get("row_index")
        rows = "" if rows is None else f" (dataset rows {', '.join(str(int(r)) for r in rows)})"
        where = f"training step {self.state.global_step + 1}" if self.model.training else "evaluation"
        return (f"the loss is {loss.item()} at {where}{rows}; stopped before it could change the weights. Check "
                f"those rows (a non-finite or extreme '{REF_LOGPS}' value, an unusual completion) and the settings "
                "(learning_rate, beta); resume from the last checkpoint once fixed.")

    # -- metrics ---------------------------------------------------------------------------------------------------

    def _record_metrics(self, policy, ref, ranks) -> None:
        mode = "train" if self.model.training else "eval"
        rewards = implicit_rewards(policy, ref, self.args.beta)
        chosen, rejected = best_and_worst(rewards, ranks)
        logps_chosen, logps_rejected = best_and_worst(policy, ranks)
        per_list = {
            "rewards/chosen": chosen,
            "rewards/rejected": rejected,
            "rewards/margins": chosen - rejected,
            "rewards/accuracies": (chosen > rejected).float(),
            "rewards/top1_accuracy": top1_accuracy(rewards, ranks),
            "rewards/pairwise_accuracy": pairwise_accuracy(rewards, ranks),
            "rewards/kendall_tau": kendall_tau(rewards, ranks),
            "logps/chosen": logps_chosen,
            "logps/rejected": logps_rejected,
        }
        gathered = self.accelerator.gather_for_metrics(per_list)
        for key, values in gathered.items():
            self._metrics[mode][key].append(values.float().mean().item())

    def log(self, logs, start_time=None):
        mode = "train" if self.model.training else "eval"
        metrics = {k: sum(v) / len(v) for k, v in self._metrics[mode].items() if v}
        prefix = "eval_" if mode == "eval" else ""
        logs.update({f"{prefix}{k}": v for k, v in metrics.items()})
        super().log(logs, start_time)
        self._metrics[mode].clear()

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    # -- checkpoints (complete or absent; see dpo_ext.checkpoints) --------------------------------------------------

    def _checkpoint_requirements(self) -> dict:
        # DeepSpeed keeps weights and optimizer in its own layout; save_only_model writes no optimizer state.
        return {"require_weights": not self.is_deepspeed_enabled,
                "require_optimizer": not (self.args.save_only_model or self.is_deepspeed_enabled)}

    def train(self, resume_from_checkpoint=None, trial=None, ignore_keys_for_eval=None):
        """`Trainer.train`, resuming only from a complete checkpoint.

        With ``resume_from_checkpoint=True`` the newest complete ``checkpoint-N`` of ``output_dir`` is used (newer
        incomplete ones are skipped with a warning, leftover ``tmp-checkpoint-*`` folders removed); with a path, an
        incomplete checkpoint raises `~dpo_ext.checkpoints.IncompleteCheckpointError` naming the bad file.
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

        best_step = self.state.best_global_step
        if best_step and self.args.save_strategy in (SaveStrategy.STEPS, SaveStrategy.EPOCH, SaveStrategy.BEST):
            best_dir = os.path.join(run_dir, f"{PREFIX_CHECKPOINT_DIR}-{best_step}")
            if best_step == self.state.global_step or os.path.exists(best_dir):
                self.state.best_model_checkpoint = best_dir  # the final name, which this save creates at its end
        if not self.args.save_only_model:
            self._save_optimizer_and_scheduler(staging)
            self._save_scaler(staging)
            self._save_rng_state(staging)
        if self.args.should_save:
            for cb in self.callback_handler.callbacks + [self.control]:
                if isinstance(cb, ExportableState):
                    name = cb.__class__.__name__
                    if isinstance(self.state.stateful_callbacks[name], list):
                        self.state.stateful_callbacks[name].append(cb.state())
                    else:
                        self.state.stateful_callbacks[name] = cb.state()
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

    # -- saving ----------------------------------------------------------------------------------------------------

    def _save(self, output_dir=None, state_dict=None):
        """Save only the trained adapter (a frozen reference copy is an implementation detail, not a result), and
        record which reference it was trained against and the training settings (`training_config.json`)."""
        from dpo_ext.safe_files import scrub_config

        output_dir = output_dir or self.args.output_dir
        if not isinstance(self.reference, AdapterCopyReference):
            super()._save(output_dir, state_dict)
        elif self.args.should_save:
            os.makedirs(output_dir, exist_ok=True)
            self._unwrap(self.model).save_pretrained(
                output_dir, state_dict=state_dict, selected_adapters=[self.reference.trained_adapter]
            )
            self.processing_class.save_pretrained(output_dir)
            torch.save(self.args, os.path.join(output_dir, "training_args.bin"))
        if self.args.should_save:
            record = {"reference": self.reference.name, "beta": self.args.beta, "loss_type": self.args.loss_type}
            with open(os.path.join(output_dir, REFERENCE_RECORD), "w") as f:
                json.dump(record, f, indent=2)
            # What `dpo-ext push` publishes as the training config: training_args.bin is a pickle and is never read
            # back, so the settings are kept as JSON too, without the Hub token.
            with open(os.path.join(output_dir, "training_config.json"), "w") as f:
                json.dump(scrub_config(self.args.to_dict()), f, indent=2)
