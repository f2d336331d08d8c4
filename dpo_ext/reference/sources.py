"""The reference sources: one interface, `ReferenceSource`, and one class per place reference log-probs come from.

Every source answers ``ref_logps(model, batch)`` with a (B, K) tensor laid out like the batch's ``ranks`` (slot k of
list b; missing slots hold 0), so the trainer never needs to know which source it holds. Three attributes say what
else the trainer must do for it: ``before_training_only`` (valid only before the first optimizer step, so its values
must be precomputed), ``prepare(accelerator)`` (work once the accelerator exists) and ``saved_adapters`` (which
adapters a saved model keeps).

``unwrap``: live sources that switch adapters get a callable returning the PeftModel from inside whatever wrapper
the trainer runs the model in (DDP, FSDP, DeepSpeed, torch.compile); the trainer passes accelerate's
``unwrap_model``, which removes exactly those wrappers and keeps the PeftModel. The adapter switches
(``disable_adapter``, ``set_adapter``) live on the PeftModel, while the forward pass still goes through the wrapped
model (FSDP gathers the sharded weights there). `dpo_ext.modeling.models.bare_model` answers another question: the
transformers model *under* the PeftModel (its config, embeddings, forward signature).
"""

import contextlib

import torch

from dpo_ext.data.rows import REF_LOGPS
from dpo_ext.logps import to_grid
from dpo_ext.modeling.batches import completion_logps
from dpo_ext.modeling.models import active_adapter
from dpo_ext.reference.record import RECORD_FILE as REFERENCE_RECORD  # noqa: F401 - the name older code imports

REF_ADAPTER_NAME = "ref"  # also the folder TRL saves its frozen reference copy in, which the scorer looks for


class ReferenceSource:
    """Where reference log-probs come from. Subclasses set `name` and implement `reference_model` (or `ref_logps`
    itself); the trainer (`ref_logps`) and the scorer (`reference_model`) run the reference through the same code.

    Attributes:
        name (`str`): one of `REFERENCE_CHOICES`, recorded with the saved adapter.
        before_training_only (`bool`): the source is the starting policy only until the first optimizer step, so its
            log-probs must be computed before training (`PrecomputedReference`).
        saved_adapters (`list[str]` or `None`): the adapters a saved model keeps; `None`: everything the model holds.
        mixed_batch_adapter (`str` or `None`): the reference's entry in PEFT's ``adapter_names`` (``"__base__"``:
            adapters off), so that policy and reference rows can share one forward; `None` where they cannot.
    """

    name = ""
    before_training_only = False
    saved_adapters = None
    mixed_batch_adapter = None  # PEFT's `adapter_names` entry for the reference, where it shares the policy's forward

    @property
    def label(self) -> str:
        """How the scorer names this reference (`ImplicitRewardScorer.reference`)."""
        return self.name

    def prepare(self, accelerator) -> None:
        """Called once the trainer's accelerator exists, before any log-probs are asked for."""

    @contextlib.contextmanager
    def reference_model(self, model):
        """Run a block as the reference: yields the model whose forward gives reference log-probs (``model`` with its
        adapters switched for the block, or a separate model). Its rows go through
        `dpo_ext.modeling.batches.completion_logps` (the trainer) or `dpo_ext.modeling.prompt_cache` (the scorer)."""
        yield model

    def weights(self, policy) -> tuple:
        """``(model, includes_adapter)``: the model whose weights the reference runs, and whether its adapter weights
        are part of the reference (what `dpo_ext.reference.fingerprint` digests)."""
        return policy, True

    def ref_logps(self, model, batch: dict) -> torch.Tensor:
        """Reference log-probs (B, K) of every completion of ``batch``, with no gradient."""
        ranks = batch["ranks"]  # (B, K)
        with torch.no_grad():
            return to_grid(self._completion_logps(model, batch), batch["slot_index"], *ranks.shape)

    def _completion_logps(self, model, batch: dict) -> torch.Tensor:
        """Summed log-probs (N,), one per completion row of the collated batch."""
        with self.reference_model(model) as reference:
            return completion_logps(reference, batch)


class DisabledAdapterReference(ReferenceSource):
    """Reference = the policy with every adapter disabled (``PeftModel.disable_adapter()``)."""

    name = "disabled_adapters"
    mixed_batch_adapter = "__base__"  # PEFT's name for "no adapter" in a mixed batch

    def __init__(self, unwrap):
        self._unwrap = unwrap

    def weights(self, policy) -> tuple:
        return policy, False  # the base weights alone

    @contextlib.contextmanager
    def reference_model(self, model):
        with self._unwrap(model).disable_adapter():
            yield model


class AdapterReference(ReferenceSource):
    """Reference = the adapter ``adapter_name`` of the same PeftModel, active for the reference pass only (the
    policy's adapter stays active, and trainable, outside it). The scorer's ``ref_adapter`` (TRL's ``ref/`` copy)."""

    name = "adapter"

    def __init__(self, adapter_name: str, unwrap):
        self._unwrap = unwrap
        self.adapter_name = self.mixed_batch_adapter = adapter_name

    @property
    def label(self) -> str:
        return f"adapter:{self.adapter_name}"

    @contextlib.contextmanager
    def reference_model(self, model):
        with active_adapter(self._unwrap(model), self.adapter_name):
            yield model


class AdapterCopyReference(AdapterReference):
    """Reference = a frozen copy of the starting adapter, added to the same PeftModel under ``REF_ADAPTER_NAME``.

    The copy is an implementation detail, not a result: only the trained adapter is saved (`saved_adapters`).
    """

    name = "adapter_copy"

    def __init__(self, peft_model, unwrap):
        from peft import get_peft_model_state_dict, set_peft_model_state_dict

        super().__init__(REF_ADAPTER_NAME, unwrap)
        self.trained_adapter = peft_model.active_adapter
        self.saved_adapters = [self.trained_adapter]
        peft_model.add_adapter(REF_ADAPTER_NAME, peft_model.peft_config[self.trained_adapter])
        state = get_peft_model_state_dict(peft_model, adapter_name=self.trained_adapter)
        set_peft_model_state_dict(peft_model, state, adapter_name=REF_ADAPTER_NAME)
        peft_model.set_adapter(self.trained_adapter)  # the copy stays inactive and frozen
        for name, param in peft_model.named_parameters():
            if f".{REF_ADAPTER_NAME}." in name:
                param.requires_grad_(False)

    @property
    def label(self) -> str:
        return self.name


class ModelReference(ReferenceSource):
    """Reference = a separate model, kept in eval mode and frozen (``freeze=False``: left as it is, for a scorer, which
    runs it under `torch.inference_mode` and in eval mode for the block only)."""

    name = "ref_model"

    def __init__(self, ref_model, freeze: bool = True):
        self.ref_model = ref_model
        if freeze:
            ref_model.eval()
            for param in ref_model.parameters():
                param.requires_grad_(False)

    def weights(self, policy) -> tuple:
        return self.ref_model, True

    def prepare(self, accelerator) -> None:
        # placed (and, under DeepSpeed/FSDP, sharded) like the policy, but never trained
        self.ref_model = accelerator.prepare_model(self.ref_model, evaluation_mode=True)

    @contextlib.contextmanager
    def reference_model(self, model):
        yield self.ref_model


class InitialPolicyReference(ReferenceSource):
    """Reference = the policy itself, as it is now: the starting policy only before the first optimizer step."""

    name = "initial_policy"
    before_training_only = True


class PrecomputedReference(ReferenceSource):
    """Reference = the batch's ``ref_logps`` column (B, K), computed once before training by ``source`` (`column`),
    or given with the data.

    Batches without the column (an evaluation set passed later) are scored by ``source`` itself, which refuses when
    it only existed before training. `name` and `saved_adapters` are ``source``'s: the values are its log-probs.
    """

    def __init__(self, source: ReferenceSource):
        self.source = source
        self.name = source.name
        self.saved_adapters = source.saved_adapters

    def prepare(self, accelerator) -> None:
        self.source.prepare(accelerator)

    def weights(self, policy) -> tuple:
        return self.source.weights(policy)

    def reference_model(self, model):
        return self.source.reference_model(model)

    def ref_logps(self, model, batch: dict) -> torch.Tensor:
        if REF_LOGPS in batch:
            return batch[REF_LOGPS]
        if self.source.before_training_only:
            raise ValueError(
                f"This dataset has no '{REF_LOGPS}' column, and the reference ({self.name}) only exists before "
                "training. Pass it as eval_dataset when building the trainer so it is precomputed."
            )
        return self.source.ref_logps(model, batch)

    def column(self, model, batches) -> list[list[float]]:
        """``source``'s log-probs of every row of ``batches`` (collated, on the model's device, in dataset order):
        one list of K floats per row, the values of a ``ref_logps`` column."""
        rows = []
        for batch in batches:
            grid = self.source.ref_logps(model, batch)  # (B, K)
            for values, ranks in zip(grid, batch["ranks"]):
                rows.append(values[: int((ranks >= 0).sum())].float().cpu().tolist())  # the row's own K slots
        return rows
