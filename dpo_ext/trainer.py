"""PLDPOTrainer: glue between a Hugging Face Trainer and the pure pieces (log-probs -> reference -> loss -> metrics)."""

import json
import logging
import os
from collections import defaultdict

import torch
from torch.utils.data import DataLoader
from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, set_seed

from .config import PLDPOConfig
from .data import REF_LOGPS, RankedCollator, prepare_ranked_dataset
from .forward import batch_token_logps
from .logps import sequence_logps, to_grid
from .losses import implicit_rewards, plackett_luce_loss, preferred_ft_loss, unlikelihood_loss
from .prefix_sharing import choose_collator
from .ranking_metrics import best_and_worst, best_and_worst_slots, kendall_tau, pairwise_accuracy, top1_accuracy
from .reference import (
    REFERENCE_RECORD,
    AdapterCopyReference,
    InitialPolicyReference,
    ModelReference,
    choose_reference,
    is_peft_model,
)

logger = logging.getLogger(__name__)

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
        data_collator (*optional*): defaults to [`~dpo_ext.data.RankedCollator`].
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
        set_seed(args.seed)  # before the adapter is created, so its random init is reproducible (as in TRL)
        if isinstance(model, str):
            processing_class = processing_class or AutoTokenizer.from_pretrained(model)
            model = AutoModelForCausalLM.from_pretrained(model)
        if processing_class is None:
            processing_class = AutoTokenizer.from_pretrained(model.config._name_or_path)
        if processing_class.pad_token is None:
            processing_class.pad_token = processing_class.eos_token
        if ref_model is not None and ref_model is model:
            raise ValueError("model and ref_model must be different objects; omit ref_model to share weights")

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

        train_dataset = prepare_ranked_dataset(
            train_dataset, processing_class, args.max_length, args.dataset_num_proc, "train"
        )
        if isinstance(eval_dataset, dict):
            eval_dataset = {
                k: prepare_ranked_dataset(v, processing_class, args.max_length, args.dataset_num_proc, k)
                for k, v in eval_dataset.items()
            }
        elif eval_dataset is not None:
            eval_dataset = prepare_ranked_dataset(
                eval_dataset, processing_class, args.max_length, args.dataset_num_proc, "eval"
            )
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
        self._record_metrics(policy.detach(), ref, ranks)
        return (loss, {"losses": losses.detach()}) if return_outputs else loss

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

    # -- saving ----------------------------------------------------------------------------------------------------

    def _save(self, output_dir=None, state_dict=None):
        """Save only the trained adapter (a frozen reference copy is an implementation detail, not a result), and
        record which reference it was trained against and the training settings (`training_config.json`)."""
        from .safe_files import scrub_config

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
