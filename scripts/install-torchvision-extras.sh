#!/usr/bin/env bash
# Installs the optional extras that need torchvision into their own virtual environment,
# .venv-torchvision/: ultralytics (AGPL-3.0, the YOLO detector, recipe `train: {yolo: true}`) and
# Meta's segment-anything (Apache-2.0, masks from its .pth checkpoints). torchvision exists only for
# torch 2.14.1 (a CUDA build, ~5.5 GB with its libraries) while the project pins torch 2.13.0, so
# they never share .venv: edgedistill/extras.py runs their worker scripts (trainers/yolo_worker.py,
# labelers/sam_meta_worker.py) with this Python, or the one in EDGEDISTILL_TORCHVISION_PYTHON.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${TORCHVISION_VENV:-.venv-torchvision}"
PINS="ultralytics==8.4.190 segment-anything==1.0 torch==2.14.1 torchvision==0.29.1 onnx==1.23.2"

if "$VENV/bin/python" -c "
import importlib.metadata as m, sys
sys.exit(any(m.version(p.split('==')[0]) != p.split('==')[1] for p in '$PINS'.split()))" 2>/dev/null; then
  echo "torchvision extras already in $VENV"
  exit 0
fi
"$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q $PINS
echo "torchvision extras installed in $VENV ($VENV/bin/python): $PINS"
