# mmcaps: the two README commands (make demo, make test) and a few helpers.
# Each target creates .venv when it is missing, or re-installs when pyproject.toml changed since the last install.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: demo test lint format bench clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Editable installs in setuptools' compat mode (a path entry, not an import hook): a Dask worker puts its own
# directory first on sys.path, and that directory holds a `storage/` spill folder, which shadows this project's
# `storage` package under the default (strict) editable finder.
EDITABLE := --config-settings editable_mode=compat
# --no-compile: pip byte-compiles every file it installs (21,405 here, CUDA torch included), serially: a fresh dev
# install took 264 s with it and 119 s without (same machine, same load). Python compiles what is imported instead,
# once, if it may write the .pyc files: this machine (and many containers) set PYTHONDONTWRITEBYTECODE=1, which would
# make every process of the suite compile torch again, so the recipes below run without it.
INSTALL := --no-compile $(EDITABLE)
unexport PYTHONDONTWRITEBYTECODE

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e . $(INSTALL)
	touch $@

$(DEV_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]' $(INSTALL)
	touch $(STAMP) $@

demo: $(STAMP)
	$(BIN)/mmcaps demo

# Two pytest-xdist workers (tests/conftest.py says how the work is split and what they share): in one process the
# suite kept one of the two cores idle a third of the time. TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 2
test: $(DEV_STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS)

lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(DEV_STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean-venv:
	rm -rf $(VENV)
