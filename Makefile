# The two commands: `make run` (the service) and `make test` (everything CI checks).
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint services install bench clean

run: install services  ## API and a worker on http://$(HOST):$(PORT)
	$(BIN)/factq dev --host $(HOST) --port $(PORT)

test: install services  ## lint, type-check, the test suite, and the compose file
	bash scripts/test.sh

bench: install services  ## factq beside floors measured in the same run, one table; BENCH_ARGS=--quick for a trial
	PYTHONPATH=. $(BIN)/python -m bench.suite $(BENCH_ARGS)

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

services:
	bash scripts/services.sh

install: $(STAMP)

PLUGIN := tests/plugins/factq-example-plugin

# The embed extra (PyTorch's CPU build and a small model, ~1 GB installed) is
# part of the test environment: CI runs the model's tests. So is the example
# task plugin, found through its entry point. uv installs them from its cache
# in seconds, with pip's configuration (scripts/install.py; pip if uv cannot).
$(STAMP): pyproject.toml $(PLUGIN)/pyproject.toml scripts/install.py
	$(PYTHON) scripts/install.py $(VENV) -e '.[dev,embed]' -e $(PLUGIN)
	@touch $(STAMP)

# Nothing is byte-compiled at install: each module is compiled the first time
# it is imported and kept, which PYTHONDONTWRITEBYTECODE would forbid, making
# every process compile PyTorch again (an import of 40 s instead of 12).
unexport PYTHONDONTWRITEBYTECODE

clean:
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache test-artifacts
