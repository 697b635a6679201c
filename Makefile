# One-word set-up: `make run` (the default recipe end to end, offline) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup system venv run test bench

setup: system venv

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

run: setup
	$(BIN)/edgedistill run recipes/digits.yaml --out runs/digits

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python benchmarks/keyword_spotting.py
