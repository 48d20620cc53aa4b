# The two commands a user needs: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

# llama-cpp-python compiles llama.cpp for this CPU (-march=native). On a CPU with AMX
# (Intel Sapphire Rapids and later) its AMX kernels crashed the process (SIGSEGV in
# ggml_backend_amx_mul_mat) at the first token of the bundled GGUF, so x86-64 builds leave
# AMX out; AVX-512 stays. Set CMAKE_ARGS yourself to build differently. pip reuses a
# wheel it built before, whatever the flags: `pip cache remove llama_cpp_python` first.
ifeq ($(shell uname -m),x86_64)
NO_AMX := -mno-amx-tile -mno-amx-int8 -mno-amx-bf16
export CMAKE_ARGS ?= -DCMAKE_C_FLAGS="$(NO_AMX)" -DCMAKE_CXX_FLAGS="$(NO_AMX)"
endif

.PHONY: run test test-slow test-container chaos bench bench-quick lint format clean

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

## Build the Docker image and run its processes against Redis and the test database
## (needs Docker or Podman; INFERQ_TEST_IMAGE skips the build).
test-container: $(VENV)/.installed-dev
	$(BIN)/pytest -m container tests/test_container.py

## The chaos test at full size (500 jobs), three times in a row.
chaos: $(VENV)/.installed-dev
	for run in 1 2 3; do INFERQ_CHAOS_JOBS=500 $(BIN)/pytest tests/test_chaos.py -q -s || exit 1; done

## The benchmark (about 25 minutes on 2 cores): table, bench/results/, BENCHMARKS.md.
bench: $(VENV)/.installed-dev .bench/litellm-venv/.installed
	$(BIN)/python -m bench

## The same scenarios, shorter (under 3 minutes: 2 min 39 s here).
bench-quick: $(VENV)/.installed-dev .bench/litellm-venv/.installed
	$(BIN)/python -m bench --quick

# The LiteLLM proxy baseline gets its own virtualenv, used by the benchmark only.
.bench/litellm-venv/.installed: bench/baselines/litellm/requirements.txt
	PYTHON=$(PYTHON) sh bench/baselines/litellm/setup.sh .bench/litellm-venv

# The benchmark is typed too, but for bench/baselines: the seeds' code as their article
# writes it.
lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy src tests
	$(BIN)/mypy bench --exclude bench/baselines

format: $(VENV)/.installed-dev
	$(BIN)/ruff check --fix src tests
	$(BIN)/ruff format src tests

clean:
	rm -rf $(VENV) .bench .inferq .pytest_cache .mypy_cache .ruff_cache
