# `make run` and `make test` are the two set-up commands of the README: each
# creates .venv from requirements.txt on first use, then does its job.
PYTHON ?= python3.11
VENV := .venv
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed-requirements

# `mlflow run --env-manager local` starts the steps with the `python` on PATH.
export PATH := $(BIN):$(PATH)
# `mlflow run` reads its environment before any code of this project loads.
export MLFLOW_DISABLE_TELEMETRY ?= true
export DO_NOT_TRACK ?= true

.PHONY: run test lint format lock clean

$(STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python orchestrate.py $(ARGS)

test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

lock: $(STAMP)
	$(BIN)/uv pip compile requirements.in -o requirements.txt --python-version 3.11 -q

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
