#!/usr/bin/env bash
# Installs ultralytics (AGPL-3.0) into its own virtual environment, .venv-yolo/, for the optional
# YOLO detector (recipe `train: {yolo: true}`). It needs torchvision, which exists only for
# torch 2.14.1 (a CUDA build, ~5.5 GB with its libraries), while the project pins torch 2.13.0:
# so it never shares .venv. trainers/yolo.py runs trainers/yolo_worker.py with this Python
# (or the one in EDGEDISTILL_YOLO_PYTHON) and reads back an ONNX model and its figures.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${YOLO_VENV:-.venv-yolo}"
VERSION="8.4.190"

if "$VENV/bin/python" -c "import ultralytics, sys; sys.exit(ultralytics.__version__ != '$VERSION')" 2>/dev/null; then
  echo "ultralytics $VERSION already in $VENV"
  exit 0
fi
"$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q "ultralytics==$VERSION" torch==2.14.1 torchvision==0.29.1 onnx==1.23.2
echo "ultralytics $VERSION installed in $VENV ($VENV/bin/python)"
