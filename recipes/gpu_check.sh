#!/usr/bin/env bash
# bash recipes/gpu_check.sh offline     # no network needed: test-size models on the GPUs
# bash recipes/gpu_check.sh hub         # the real configs (Hub models and data), cut to a few steps
#
# What cannot run on a CPU machine, for a machine with NVIDIA GPUs: every recipe (HH, TL;DR, UltraFeedback) on one GPU,
# then the HH recipe under each engine of recipes/accelerate/ on all the GPUs (DeepSpeed only when it is installed).
# `offline` builds the test-size models (recipes/recipe_kit/tiny_models.py) and trains on the fixtures, in bf16 on
# CUDA; `hub` runs each recipe's configs/lora.yaml with the real model and dataset for 8 steps on 640 rows. Each run
# writes its eval_results.json under outputs/gpu_check/<mode>/; the last lines print them, one per run, and a failed
# run is reported and does not stop the others. Nothing is published.
set -uo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-offline}
PY=${PYTHON:-.venv/bin/python}
OUT=outputs/gpu_check/$MODE
GPUS=$($PY -c "import torch; print(torch.cuda.device_count())")
DEVICE="--use_cpu false --bf16 true"
if [ "${GPU_CHECK_ON_CPU:-0}" = 1 ]; then  # to check this script itself on a CPU machine: one process, no engines
    GPUS=0 DEVICE="--use_cpu true --bf16 false"
elif [ "$GPUS" -lt 1 ]; then
    echo "gpu_check: no CUDA GPU visible" >&2; exit 2
fi
mkdir -p "$OUT"
FAILED=()

run() {  # run NAME COMMAND...: log to $OUT/NAME.log, remember failures
    local name=$1; shift
    echo "== $name: $*"
    if ! "$@" >"$OUT/$name.log" 2>&1; then FAILED+=("$name"); echo "   failed, see $OUT/$name.log"; fi
}

recipe_args() {  # recipe_args RECIPE: the config and overrides of one run of RECIPE in this mode
    local recipe=$1 sft=""
    [ "$recipe" != ultrafeedback ] && sft="--sft_output_dir $OUT/$recipe-sft"  # UltraFeedback has no SFT stage
    if [ "$MODE" = offline ]; then
        echo "--config recipes/$recipe/configs/test.yaml $DEVICE $sft --model_name_or_path $OUT/tiny-$recipe/policy --reward_model_name $OUT/tiny-$recipe/reward"
    else
        echo "--config recipes/$recipe/configs/lora.yaml $sft --max_steps 8 --max_train_rows 640 --max_eval_rows 64 --win_rate_prompts 16 --warmup_steps 0"
    fi
}

if [ "$MODE" = offline ]; then
    export HF_HUB_OFFLINE=1
    run tiny-hh $PY recipes/recipe_kit/tiny_models.py --output_dir "$OUT/tiny-hh" tests/recipes/data/hh_rlhf_sample.jsonl
    run tiny-tldr $PY recipes/recipe_kit/tiny_models.py --output_dir "$OUT/tiny-tldr" tests/recipes/data/tldr_comparisons_sample.jsonl
    run tiny-ultrafeedback $PY recipes/recipe_kit/tiny_models.py --chat_template --output_dir "$OUT/tiny-ultrafeedback" tests/recipes/data/ultrafeedback_sample.jsonl
fi

for recipe in hh tldr ultrafeedback; do
    # shellcheck disable=SC2046
    run "$recipe" $PY recipes/$recipe/run.py $(recipe_args $recipe) --output_dir "$OUT/$recipe"
done

ENGINES=(ddp fsdp)
$PY -c "import deepspeed" 2>/dev/null && ENGINES+=(deepspeed_zero2 deepspeed_zero3)
[ "$GPUS" -ge 1 ] || ENGINES=()
for engine in "${ENGINES[@]}"; do
    # shellcheck disable=SC2046
    run "hh-$engine" $PY -m accelerate.commands.launch --config_file recipes/accelerate/$engine.yaml \
        --num_processes "$GPUS" recipes/hh/run.py $(recipe_args hh) --stage dpo --output_dir "$OUT/hh-$engine"
done

for results in "$OUT"/*/eval_results.json "$OUT"/*/*/eval_results.json; do  # UltraFeedback: one folder per method
    [ -f "$results" ] && echo "$results: $(tr -d '\n ' <"$results")"
done
if [ ${#FAILED[@]} -gt 0 ]; then echo "failed: ${FAILED[*]}"; exit 1; fi
echo "all runs passed ($GPUS GPU(s))"
