#!/usr/bin/env bash
# Sets up (idempotent) and runs the test suite against the real clips in ../shared/data.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export CASTFINDER_OFFLINE=1 HF_HUB_OFFLINE=1
python -m pytest -q -p no:cacheprovider --timeout=900 "$@"
