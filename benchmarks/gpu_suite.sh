#!/usr/bin/env bash
# The one command for issue 23's GPU numbers (one GPU, about 8 minutes on an H100; nothing is downloaded):
#     bash benchmarks/gpu_suite.sh            # writes benchmarks/results/gpu_suite.{json,md}
#     bash benchmarks/gpu_suite.sh --smoke    # the same code paths at toy size on the CPU (< 1 minute)
# Extra arguments go to benchmarks/suite.py (--archs, --ks, --output-dir).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec "$PY" benchmarks/suite.py "$@"
