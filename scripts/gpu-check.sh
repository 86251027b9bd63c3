#!/usr/bin/env bash
# The GPU check (scripts/gpu_check.py): the device's measured peaks, training and generation throughput, and the
# quick card in bf16 on CUDA (full, lora, qlora), written to results/bench/gpu-check-<device>.json. Within 8
# minutes on one GPU; arguments go to gpu_check.py (--random-init FOLDER where the weights cannot be fetched).
set -euo pipefail
cd "$(dirname "$0")/.."
python=python3
[ -x .venv/bin/python ] && python=.venv/bin/python
export CLBENCH_DATA="${CLBENCH_DATA:-../shared/data}" TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
exec timeout 480 "$python" scripts/gpu_check.py "$@"
