# One-word set-up: `make run` (the default recipe end to end, offline) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup system venv label-studio torchvision-extras models run test bench

setup: system venv label-studio torchvision-extras models

system: .system-stamp
.system-stamp: scripts/install-debian-packages.sh
	bash scripts/install-debian-packages.sh
	touch $@

venv: $(VENV)/.stamp
# The lock pins every package (the project's pins conflict only on paper: xdsl asks for an old
# typing-extensions that Prefect cannot use), so it installs without the resolver.
$(VENV)/.stamp: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q --no-deps -r requirements.lock
	$(BIN)/pip install -q --no-deps -e .
	touch $@

# The Label Studio server for `edgedistill review serve` and the review tests; its pins clash
# with the project's, so it has a virtual environment of its own.
label-studio: .venv-labelstudio/.stamp
.venv-labelstudio/.stamp: scripts/install-label-studio.sh
	bash scripts/install-label-studio.sh
	touch $@

# The optional extras that need torchvision (ultralytics for YOLO, Meta's segment-anything): it
# needs another torch than the project pins, so they have a virtual environment of their own.
torchvision-extras: .venv-torchvision/.stamp
.venv-torchvision/.stamp: scripts/install-torchvision-extras.sh
	bash scripts/install-torchvision-extras.sh
	touch $@

# Real detector weights that ship inside a PyPI wheel (MediaPipe's BlazeFace .tflite files): the
# offline face teacher. Read out of the wheel, never installed: mediapipe pins numpy<2.
models: $(VENV)/.models-stamp
$(VENV)/.models-stamp: $(VENV)/.stamp labelers/teachers.py
	$(BIN)/python -m labelers.teachers fetch
	touch $@

run: setup
	$(BIN)/edgedistill run recipes/digits.yaml --out runs/digits

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python benchmarks/keyword_spotting.py
