# The two commands a user needs: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test test-slow chaos lint format clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -e '.[dev]'
	touch $@ $(VENV)/.installed-run

## Start API, workers and an embedded Redis with the local model (Ctrl-C stops everything).
run: $(VENV)/.installed-run
	$(BIN)/inferq serve

## Run the whole test suite (slow load/soak tests excluded: see test-slow).
test: $(VENV)/.installed-dev
	$(BIN)/pytest

## Load and soak tests only.
test-slow: $(VENV)/.installed-dev
	$(BIN)/pytest -m slow

## The chaos test at full size (500 jobs), three times in a row.
chaos: $(VENV)/.installed-dev
	for run in 1 2 3; do INFERQ_CHAOS_JOBS=500 $(BIN)/pytest -m slow tests/test_chaos.py -q || exit 1; done

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests
	$(BIN)/mypy src

format: $(VENV)/.installed-dev
	$(BIN)/ruff check --fix src tests
	$(BIN)/ruff format src tests

clean:
	rm -rf $(VENV) .inferq .pytest_cache .mypy_cache .ruff_cache
