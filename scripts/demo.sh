#!/usr/bin/env bash
# Sets up, then indexes a shared clip with the offline defaults and prints its shots and faces.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
CLIP=${1:-../shared/data/dev/friends/video.mp4}
INDEX=${INDEX:-out/demo-index}
castfinder ingest "$CLIP" --index "$INDEX" --show-shots
