"""PLDPOTrainer: glue between a Hugging Face Trainer and the pure pieces (log-probs -> reference -> loss -> metrics).

What it glues: `dpo_ext.training.setup` (models, tokenizer and rows made ready), `dpo_ext.reference` (where reference
log-probs come from), `dpo_ext.losses` and `dpo_ext.ranking_metrics` (the math), `dpo_ext.training.checkpointing`
(checkpoints complete or absent).
"""

import logging
import math
import os
from collections import defaultdict

import torch
from accelerate.utils import gather_object
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import Trainer, set_seed

from dpo_ext.data.collate import RankedCollator
from dpo_ext.data.rows import REF_LOGPS, SCORES
from dpo_ext.logps import sequence_logps, to_grid
from dpo_ext.losses import (
    all_pairs_loss,
    implicit_rewards,
    lipo_lambda_loss,
    plackett_luce_loss,
    preferred_ft_loss,
    unlikelihood_loss,
)
from dpo_ext.modeling.batches import batch_token_logps
from dpo_ext.modeling.models import on_device
from dpo_ext.modeling.support import choose_collator
from dpo_ext.ranking_metrics import (
    best_and_worst,
    best_and_worst_slots,
    kendall_tau,
    pairwise_accuracy,
    top1_accuracy,
)
from dpo_ext.reference import choose_reference
from dpo_ext.reference.cache import ReferenceCache
from dpo_ext.reference.fingerprint import model_digests, reference_fingerprint
from dpo_ext.reference.record import write_training_record
from dpo_ext.safe_files import check_finite_weights, scrub_config, verify_finite_safetensors
from dpo_ext.training.checkpointing import CompleteCheckpointsMixin
from dpo_ext.training.checks import check_output_dir
from dpo_ext.training.config import PLDPOConfig
from dpo_ext.training.setup import DatasetPreparer, prepare_models

logger = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """The loss of a batch is NaN or infinite; raised before it can change the weights, naming the step and rows."""


class NonFiniteReferenceError(ValueError):
    """The reference gives a NaN or infinite log-prob for a row while they are precomputed (nothing is cached)."""


def preference_metrics(policy_logps, ref_logps, ranks, beta: float) -> dict:
    """Per-list metrics (B,) of a batch, under TRL's keys where TRL has them (``rewards/chosen`` is the best group,
    ``rewards/rejected`` the worst, so K = 2 gives exactly TRL's values)."""
    rewards = implicit_rewards(policy_logps, ref_logps, beta)  # (B, K)
    chosen, rejected = best_and_worst(rewards, ranks)
    logps_chosen, logps_rejected = best_and_worst(policy_logps, ranks)
    return {
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


def _first_rows_batch(collator, dataset, model, size: int = 4) -> dict:
    device = next(model.parameters()).device
    batch = collator([dataset[i] for i in range(min(size, len(dataset)))])
    return {k: v.to(device) for k, v in batch.items()}


class PLDPOTrainer(CompleteCheckpointsMixin, Trainer):
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
        # A cache path that cannot be a folder fails here, not after the whole precompute pass.
        self._ref_cache = ReferenceCache(args.ref_cache_dir) if args.ref_cache_dir else None
        self.reference_origins = {}  # dataset name -> where its precomputed reference log-probs came from
        set_seed(args.seed)  # before the adapter is created, so its random init is reproducible (as in TRL)
        model, processing_class = prepare_models(model, ref_model, processing_class, peft_config, args)
        # NaN weights would first show as a NaN loss blamed on a batch; one aminmax per tensor, ~0.25 s/GB on a CPU
        check_finite_weights(model, "the policy")
        if ref_model is not None:
            check_finite_weights(ref_model, "ref_model")
        self._prepare_rows = DatasetPreparer.for_models(processing_class, args, model, ref_model)
        train_dataset = self._prepare_rows(train_dataset, "train")
        eval_dataset = self._prepare_rows(eval_dataset)
        collator = RankedCollator(pad_token_id=processing_class.pad_token_id, max_length=args.max_length)
        collator = choose_collator(collator, [model, ref_model], args.prefix_sharing)  # packed rows if supported

        has_ref_column = REF_LOGPS in train_dataset.column_names
        self.reference = choose_reference(
            args.reference, model, ref_model, _first_rows_batch(collator, train_dataset, model), self._unwrap,
            precompute=args.precompute_ref_log_probs or has_ref_column,
        )
        # Digests of what the reference is, recorded with the adapter and checked against a reference cache
        self._reference_weights = model_digests(*self.reference.weights(model))
        self.reference_fingerprint = reference_fingerprint(self._reference_weights, processing_class,
                                                           args.max_length, train_dataset, args.max_prompt_length)
        super().__init__(model=model, args=args, data_collator=data_collator or collator, train_dataset=train_dataset,
                         eval_dataset=eval_dataset, processing_class=processing_class,
                         compute_metrics=compute_metrics, callbacks=callbacks, optimizers=optimizers)
        # The loss is already a per-list mean: let Trainer scale it for gradient accumulation.
        self.model_accepts_loss_kwargs = False
        self.reference.prepare(self.accelerator)
        if hasattr(self.model, "add_model_tags"):
            self.model.add_model_tags(self._tag_names)
        self._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
        if args.precompute_ref_log_probs and not has_ref_column:
            self.train_dataset = self.precompute_ref_logps(self.train_dataset, "train")
            if isinstance(self.eval_dataset, dict):
                self.eval_dataset = {k: self.precompute_ref_logps(v, k) for k, v in self.eval_dataset.items()}
            elif self.eval_dataset is not None:
                self.eval_dataset = self.precompute_ref_logps(self.eval_dataset, "eval")

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        """`Trainer._load_from_checkpoint`, refusing NaN or infinite weights: an adapter file is checked before it is
        loaded (named by file and tensor), a full model once loaded."""
        for name in sorted(os.listdir(resume_from_checkpoint)):
            if name.startswith("adapter_model") and name.endswith(".safetensors"):
                verify_finite_safetensors(os.path.join(resume_from_checkpoint, name))
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        check_finite_weights(self.model, f"the model loaded from {resume_from_checkpoint}")

    def _unwrap(self, model):
        # accelerate's unwrap removes exactly the wrappers it added (DDP, FSDP, DeepSpeed, torch.compile) and keeps
        # the PeftModel, whose adapter switches the reference sources and `_save` need.
        return self.accelerator.unwrap_model(model)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
        """`Trainer.evaluate`, also for raw preference rows (they are validated and tokenized first)."""
        if eval_dataset is not None and not isinstance(eval_dataset, str):  # a str names one of self.eval_dataset
            eval_dataset = self._prepare_rows(eval_dataset)
        return super().evaluate(eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)

    def precompute_ref_logps(self, dataset, name: str):
        """Add a ``ref_logps`` column (K floats per row) computed once by the chosen reference source, or read from
        ``args.ref_cache_dir`` when the rows cached there under ``name`` have this run's fingerprint.

        Under a multi-process launch each process computes one contiguous share of the rows and the shares are
        gathered back in dataset order. It runs before any engine shards the model (see `dpo_ext.training.engines`),
        with the model on this process's device."""
        cache, rows = self._ref_cache, None
        if cache is not None:
            fingerprint = (self.reference_fingerprint if dataset is self.train_dataset else
                           reference_fingerprint(self._reference_weights, self.processing_class, self.args.max_length,
                                                 dataset, self.args.max_prompt_length))
            rows = cache.load(name, fingerprint, [len(ids) for ids in dataset["completion_ids"]])
            if rows is not None:
                self.reference_origins[name] = f"read from the reference cache {cache.path(name)}"
                logger.warning("Reference log-probs of the %s dataset: %s (its fingerprint matches).", name,
                               self.reference_origins[name])
        if rows is None:
            rows = self._compute_ref_logps(dataset, name)
            self._check_finite_ref_logps(rows, name)  # before they are cached or trained on
            self.reference_origins[name] = "computed before training"
            if cache and self.accelerator.is_main_process:
                path = cache.save(name, fingerprint, self.reference.name, rows)
                self.reference_origins[name] += f", cached in {path}"
                logger.info("Reference log-probs of the %s dataset cached in %s.", name, path)
        return dataset.add_column(REF_LOGPS, rows)

    @property
    def reference_summary(self) -> str:
        """Which reference the run used and where its log-probs came from, in words (``dpo-ext train`` prints it)."""
        where = "; ".join(f"{name} rows: {origin}" for name, origin in self.reference_origins.items())
        return f"{self.reference.name} ({where})" if where else f"{self.reference.name} (computed at every step)"

    def _compute_ref_logps(self, dataset, name: str) -> list:
        batch_size = self.args.precompute_ref_batch_size or self.args.per_device_eval_batch_size
        self.model.eval()
        with self.accelerator.split_between_processes(list(range(len(dataset)))) as share:
            loader = DataLoader(dataset.select(share), batch_size=batch_size, collate_fn=self.data_collator,
                                shuffle=False)
            bar = tqdm(loader, desc=f"Reference log-probs ({name})", unit="batch",
                       disable=self.args.disable_tqdm or not self.accelerator.is_local_main_process)
            with on_device(self.model, self.args.device):
                rows = self.reference.column(self.model, (self._prepare_inputs(batch) for batch in bar))
        if self.accelerator.num_processes > 1:
            rows = gather_object(rows)  # lists concatenated in process order: the dataset's order
        logger.info("Precomputed reference log-probs for %d %s rows (%s).", len(rows), name, self.reference.name)
        return rows

    def _check_finite_ref_logps(self, rows: list, name: str) -> None:
        for index, values in enumerate(rows):
            bad = next((k for k, value in enumerate(values) if not math.isfinite(value)), None)
            if bad is not None:
                raise NonFiniteReferenceError(
                    f"the reference ({self.reference.name}) gives a non-finite log-prob for the {name} dataset, row "
                    f"{index}, completion {bad}: {values[bad]}. Nothing was cached. Its weights may hold NaN or "
                    "infinite values, or its dtype overflows (load it in float32); check the model before training.")

    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            self._signature_columns = ["prompt_ids", "completion_ids", "ranks", SCORES, REF_LOGPS, "row_index"]

    # -- loss ------------------------------------------------------------------------------------------------------

    def _preference_loss(self, policy, ref, ranks, labels, row_logps, per_token, mask, slot_index) -> torch.Tensor:
        """The one place a loss is chosen. ``labels``: the batch's (B, K) label values (`None` for rank-only rows).
        Returns per-list losses (B,)."""
        args = self.args
        if args.loss_type == "plackett_luce":
            return plackett_luce_loss(policy, ref, args.beta, ranks)
        if args.loss_type == "all_pairs":
            return all_pairs_loss(policy, ref, args.beta, ranks)
        if args.loss_type == "lipo_lambda":
            return lipo_lambda_loss(policy, ref, args.beta, ranks, labels)
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
        ref = self.reference.ref_logps(model, inputs).to(policy.dtype)  # (B, K)
        labels = inputs.get(SCORES)  # (B, K) label values of scored rows, for label-aware losses
        losses = self._preference_loss(policy, ref, ranks, labels, row_logps, per_token, mask, slot_index)
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

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    # -- metrics ---------------------------------------------------------------------------------------------------

    def _record_metrics(self, policy, ref, ranks) -> None:
        mode = "train" if self.model.training else "eval"
        per_list = self.accelerator.gather_for_metrics(preference_metrics(policy, ref, ranks, self.args.beta))
        for key, values in per_list.items():
            self._metrics[mode][key].append(values.float().cpu())

    def log(self, logs, start_time=None):
        mode = "train" if self.model.training else "eval"
        # Means over lists, not over batches: a smaller last batch must not weigh as much as a full one.
        metrics = {k: torch.cat(v).mean().item() for k, v in self._metrics[mode].items() if v}
        prefix = "eval_" if mode == "eval" else ""
        logs.update({f"{prefix}{k}": v for k, v in metrics.items()})
        super().log(logs, start_time)
        self._metrics[mode].clear()

    # -- saving ----------------------------------------------------------------------------------------------------

    def _save(self, output_dir=None, state_dict=None):
        """Save the adapters the reference source keeps (a frozen reference copy is an implementation detail, not a
        result), and record which reference it was trained against and the training settings."""
        output_dir = output_dir or self.args.output_dir
        adapters = self.reference.saved_adapters
        if adapters is None:
            super()._save(output_dir, state_dict)
        elif self.args.should_save:
            os.makedirs(output_dir, exist_ok=True)
            self._unwrap(self.model).save_pretrained(output_dir, state_dict=state_dict, selected_adapters=adapters)
            self.processing_class.save_pretrained(output_dir)
            torch.save(self.args, os.path.join(output_dir, "training_args.bin"))
        if self.args.should_save:
            self._write_training_record(output_dir)

    def _write_training_record(self, output_dir) -> None:
        # training_args.bin is a pickle and is never read back: the scorer and `dpo-ext push` read this record, and
        # the settings as JSON (without the Hub token).
        write_training_record(output_dir, reference=self.reference.name, beta=self.args.beta,
                              loss_type=self.args.loss_type, reference_fingerprint=self.reference_fingerprint,
                              training_config=scrub_config(self.args.to_dict()))
