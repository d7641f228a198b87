#!/usr/bin/env bash
# Sets up, indexes a shared clip with the offline defaults, prints its shots, then finds the shots
# where the first character with sample photos in the clip's refs/ appears, and lists the cast found
# without photos (contact sheets in out/demo-cast/).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
CLIP=${1:-../shared/data/dev/friends/video.mp4}
INDEX=${INDEX:-out/demo-index}
castfinder ingest "$CLIP" --index "$INDEX" --show-shots
REFS="$(dirname "$CLIP")/refs"
if [ -d "$REFS" ]; then
  CHARACTER_DIR=$(find "$REFS" -mindepth 1 -maxdepth 1 -type d | sort | head -n 1)
  echo
  castfinder query --index "$INDEX" --character "$(basename "$CHARACTER_DIR")" \
    --photos "$CHARACTER_DIR"/* --thumbnails out/demo-thumbnails
  echo "thumbnails of the matching shots: out/demo-thumbnails/"
fi
echo
# the characters found without any photo, with contact sheets
castfinder cast --index "$INDEX" --sheets out/demo-cast
echo
echo "next: castfinder serve --index $INDEX   (then open http://127.0.0.1:8000/)"
