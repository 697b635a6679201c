#!/usr/bin/env bash
# Installs the Label Studio server into its own virtual environment, .venv-labelstudio/.
# Its pins (openai 1.x, numpy 2.2, its own Django stack) clash with the project's, so it never
# shares .venv; the project itself talks to it only through label-studio-sdk over HTTP.
# `edgedistill review serve` and tests/test_review.py find it there (or via LABEL_STUDIO_BIN).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${LABEL_STUDIO_VENV:-.venv-labelstudio}"
VERSION="1.23.2"

if [ -x "$VENV/bin/label-studio" ] && "$VENV/bin/python" -c "import label_studio, sys; sys.exit(label_studio.__version__ != '$VERSION')" 2>/dev/null; then
  echo "label-studio $VERSION already in $VENV"
  exit 0
fi
"$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q "label-studio==$VERSION"
echo "label-studio $VERSION installed in $VENV ($VENV/bin/label-studio)"
