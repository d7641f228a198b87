#!/usr/bin/env bash
# Ray ingest scaling on the 16-core machine (issue 16: 8 CPU workers, one model thread each, should reach
# efficiency >= 0.8): 1, 2, 4 and 8 workers on a fresh local Ray instance each, 6 copies of the dev clips
# (30 films, 744 s of video, handed out longest first). About 8 minutes there; run after scripts/setup.sh.
# Extra arguments go to bench_ray.py (e.g. --sets dev,devhard --copies 2). Rows also in $OUT or ./.
set -euo pipefail
cd "$(dirname "$0")/.."
CASTFINDER_OFFLINE=1 HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_ray.py --workers 1 2 4 8 --threads 1 \
  --device cpu --sets dev --copies 6 --json "${OUT:-.}/bench_ray_scaling.json" "$@"
