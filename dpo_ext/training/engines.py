"""The multi-process engine a run is launched under (read from the environment `accelerate launch` sets from its
``--config_file``), and the combinations that cannot work with `PLDPOTrainer`, refused before any model loads.

Why some cannot: the trainer runs the policy once before the engine shards it, to check that the model with its
adapters disabled is the starting policy (the LoRA reference) and, with ``precompute_ref_log_probs``, to compute the
reference log-probs. Engines that load the weights on one process only (FSDP's ``cpu_ram_efficient_loading``, the
other processes hold empty "meta" tensors until sharding) or partitioned at load time (DeepSpeed ZeRO-3's
``zero3_init_flag``) leave nothing to run; the shipped configs in ``recipes/accelerate/`` turn both off. Sharding a
4-bit (QLoRA) model needs its storage dtype to be the dtype of the other weights.
"""

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

logger = logging.getLogger(__name__)


def _flag(environ: Mapping, name: str) -> bool:
    return environ.get(name, "false").strip().lower() in ("1", "true", "yes")


@dataclass(frozen=True)
class Launch:
    """What `accelerate launch` asked for: ``engine`` is ``"fsdp"``, ``"deepspeed"`` or ``None`` (one process, or
    plain data parallelism)."""

    engine: str | None
    zero_stage: int | None = None
    weights_loaded_on_one_process: bool = False  # FSDP cpu_ram_efficient_loading
    weights_partitioned_at_load: bool = False  # DeepSpeed ZeRO-3 zero3_init_flag

    @classmethod
    def from_environment(cls, environ: Mapping | None = None) -> "Launch":
        environ = os.environ if environ is None else environ
        if _flag(environ, "ACCELERATE_USE_FSDP"):
            return cls("fsdp", weights_loaded_on_one_process=_flag(environ, "FSDP_CPU_RAM_EFFICIENT_LOADING"))
        if _flag(environ, "ACCELERATE_USE_DEEPSPEED"):
            stage = int(environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2") or 2)
            return cls("deepspeed", stage, weights_partitioned_at_load=(
                stage == 3 and _flag(environ, "ACCELERATE_DEEPSPEED_ZERO3_INIT")))
        return cls(None)

    @property
    def shards_weights(self) -> bool:
        return self.engine == "fsdp" or (self.engine == "deepspeed" and self.zero_stage == 3)


def launch_problems(launch: Launch, *, quantized: bool = False, quant_storage: str | None = None,
                    dtype: str | None = None) -> list[str]:
    """Why ``launch`` cannot train with `PLDPOTrainer` (empty when it can), each with what to set instead.

    Args:
        quantized (`bool`): the base model is loaded in 4 or 8 bits (QLoRA).
        quant_storage (`str`, *optional*), dtype (`str`, *optional*): ``bnb_4bit_quant_storage`` and the model dtype.
    """
    problems = []
    if launch.weights_loaded_on_one_process:
        problems.append(
            "FSDP with fsdp_cpu_ram_efficient_loading: true loads the weights on the first process only, and "
            "PLDPOTrainer runs the policy on every process before sharding (the reference check, and precomputed "
            "reference log-probs): set fsdp_cpu_ram_efficient_loading: false, as recipes/accelerate/fsdp.yaml does")
    if launch.weights_partitioned_at_load:
        problems.append(
            "DeepSpeed ZeRO-3 with zero3_init_flag: true partitions the weights while they load, and PLDPOTrainer "
            "runs the policy on every process before DeepSpeed starts (the reference check, and precomputed reference "
            "log-probs): set zero3_init_flag: false, as recipes/accelerate/deepspeed_zero3.yaml does")
    if quantized and launch.shards_weights and (quant_storage is None or quant_storage != dtype):
        problems.append(
            f"sharding a 4-bit (QLoRA) model needs its storage in the model's dtype: set bnb_4bit_quant_storage to "
            f"{dtype or 'the dtype'} (now {quant_storage}), or train QLoRA with DDP (recipes/accelerate/ddp.yaml)")
    return problems


def check_launch(launch: Launch | None = None, *, on_accelerator: bool | None = None, **settings) -> None:
    """Raise `ValueError` listing every `launch_problems` of ``launch`` (default: the current launch). An FSDP or
    DeepSpeed launch without an accelerator (``on_accelerator``, default: whether CUDA is available) gets a warning:
    accelerate then runs plain data parallelism and ignores the engine's settings, without a word."""
    launch = launch or Launch.from_environment()
    problems = launch_problems(launch, **settings)
    if problems:
        raise ValueError("this launch cannot work: " + "; and ".join(problems))
    if on_accelerator is None:
        import torch

        on_accelerator = torch.cuda.is_available()
    if launch.engine is not None and not on_accelerator:
        logger.warning("%s was asked for, but there is no GPU: accelerate runs plain data parallelism on CPUs and "
                       "ignores the %s settings (nothing is sharded).", launch.engine, launch.engine)
