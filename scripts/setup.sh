#!/usr/bin/env bash
# Creates .venv and installs castfinder with everything it needs, on a fresh machine.
# facenet-pytorch pins torch<2.3 and numpy<2, which cannot be met here: it goes in with --no-deps
# (we use only its MTCNN weights and nets, which work with torch 2.14).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# Debian packages the tests drive for real: a Prometheus server and headless Chromium + ChromeDriver
need=()
command -v prometheus >/dev/null || need+=(prometheus)
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null \
    || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null; }
fi

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
pip install -q --upgrade pip setuptools wheel
pip install -q -r requirements/base.txt
pip install -q --no-deps facenet-pytorch==2.6.0
pip install -q "ray>=2.40"  # castfinder[ray]: ingest --ray; tests/test_ray.py starts a real local cluster
pip install -q --no-deps -e .
python -c "import torch, torchvision, av, faiss, dlib, facenet_pytorch, scenedetect; print('castfinder environment ready: torch', torch.__version__, '| cuda', torch.cuda.is_available())"
