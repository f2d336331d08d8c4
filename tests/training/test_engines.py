"""The launches PLDPOTrainer refuses at start-up (`dpo_ext.training.engines`), read from the environment that
`accelerate launch` builds from each config in recipes/accelerate/ (DeepSpeed cannot run on this machine: its configs
are parsed and checked here, and run on GPUs with recipes/gpu_check.sh)."""

from pathlib import Path

import pytest
import torch
import yaml
from fixtures import make_model, ranked_rows

from dpo_ext import PLDPOConfig, PLDPOTrainer
from dpo_ext.training.engines import Launch, check_launch, launch_problems

CONFIGS = Path(__file__).resolve().parents[2] / "recipes" / "accelerate"


def launcher_environment(config_file: Path) -> dict:
    """The variables `accelerate launch --config_file config_file` gives the training processes."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    args = launch_command_parser().parse_args(["--config_file", str(config_file), "train.py"])
    args, defaults, _ = _validate_launch_command(args)
    if args.use_deepspeed:  # what `accelerate launch` sets before calling its DeepSpeed launcher
        args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
        return prepare_deepspeed_cmd_env(args)[1]
    return prepare_multi_gpu_env(args)


@pytest.mark.parametrize("name, engine, stage", [("ddp", None, None), ("fsdp", "fsdp", None),
                                                 ("deepspeed_zero2", "deepspeed", 2),
                                                 ("deepspeed_zero3", "deepspeed", 3)])
def test_shipped_configs_parse_and_pass_the_start_up_checks(name, engine, stage, tmp_path):
    config_file = CONFIGS / f"{name}.yaml"
    assert config_file.read_text().startswith("# accelerate launch --config_file recipes/accelerate/")
    launch = Launch.from_environment(launcher_environment(config_file))
    assert (launch.engine, launch.zero_stage) == (engine, stage)
    assert launch_problems(launch) == []
    # Changing the one setting each sharding config turned off makes the same launch refused
    if name in ("fsdp", "deepspeed_zero3"):
        config = yaml.safe_load(config_file.read_text())
        if name == "fsdp":
            config["fsdp_config"]["fsdp_cpu_ram_efficient_loading"] = True
        else:
            config["deepspeed_config"]["zero3_init_flag"] = True
        (tmp_path / "changed.yaml").write_text(yaml.safe_dump(config))
        problems = launch_problems(Launch.from_environment(launcher_environment(tmp_path / "changed.yaml")))
        assert len(problems) == 1
        assert ("fsdp_cpu_ram_efficient_loading: false" if name == "fsdp" else "zero3_init_flag: false") in problems[0]


def test_qlora_is_refused_under_sharding_unless_its_storage_matches_the_dtype():
    fsdp, zero3 = Launch("fsdp"), Launch("deepspeed", 3)
    assert launch_problems(Launch(None), quantized=True, quant_storage=None, dtype="bfloat16") == []
    assert launch_problems(Launch("deepspeed", 2), quantized=True, quant_storage=None, dtype="bfloat16") == []
    for launch in (fsdp, zero3):
        (problem,) = launch_problems(launch, quantized=True, quant_storage=None, dtype="bfloat16")
        assert "set bnb_4bit_quant_storage to bfloat16" in problem
        assert launch_problems(launch, quantized=True, quant_storage="bfloat16", dtype="bfloat16") == []
    with pytest.raises(ValueError, match="this launch cannot work: .*ddp.yaml"):
        check_launch(fsdp, quantized=True, quant_storage="uint8", dtype="bfloat16")


def test_environment_without_an_engine_is_plain():
    assert Launch.from_environment({}) == Launch(None)
    assert not Launch("deepspeed", 2).shards_weights and Launch("deepspeed", 3).shards_weights


def test_trainer_refuses_weights_that_are_not_on_this_process(tokenizer, tmp_path):
    """What FSDP's cpu_ram_efficient_loading leaves on the processes other than the first: meta tensors."""
    with torch.device("meta"):
        model = make_model(tokenizer)
    args = PLDPOConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    with pytest.raises(ValueError, match="the policy's weight 'transformer.wte.weight' is not on this process.*"
                                         "fsdp_cpu_ram_efficient_loading: false"):
        PLDPOTrainer(model, args=args, train_dataset=ranked_rows(4), processing_class=tokenizer)


def test_an_engine_without_a_gpu_is_said_to_be_plain_data_parallelism(caplog):
    """accelerate drops FSDP and DeepSpeed settings on CPUs without a word (it runs DDP): say so."""
    check_launch(Launch("fsdp"), on_accelerator=False)
    assert "fsdp was asked for, but there is no GPU: accelerate runs plain data parallelism" in caplog.text
    caplog.clear()
    check_launch(Launch("fsdp"), on_accelerator=True)
    check_launch(Launch(None), on_accelerator=False)
    assert "no GPU" not in caplog.text
