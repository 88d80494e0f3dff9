# Every target creates .venv and installs llmkit into it when that is missing or pyproject.toml changed.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install run test test-ha lint format bench fuzz services clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

# The headline command on its embedded defaults: answers from ./zresponse on http://127.0.0.1:4545.
run: install
	$(VENV)/bin/llmkit simulate

services:
	@bash scripts/ensure-services.sh

# tests/ha start the whole HA cluster (scripts/ha-local.sh) once; they run in `make test-ha`, not here.
test: install services
	$(PY) -m pytest --ignore=tests/ha $(PYTEST_ARGS)

test-ha: install services
	$(PY) -m pytest tests/ha $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check llmkit tests bench
	$(VENV)/bin/ruff format --check llmkit tests bench
	$(VENV)/bin/mypy

# schemathesis against every server with many examples (the test suite runs few): FUZZ_ARGS="gateway --max-examples 1000".
FUZZ_ARGS ?= --max-examples 200
fuzz: install
	$(PY) -m tests.openapi_fuzz $(FUZZ_ARGS)

format: install
	$(VENV)/bin/ruff check --fix llmkit tests bench
	$(VENV)/bin/ruff format llmkit tests bench

bench: install services
	@bash scripts/ensure-bench-tools.sh
	$(PY) bench/core.py
	$(PY) bench/simulate.py
	$(PY) bench/simulate_match.py
	$(PY) bench/aggregate.py
	$(PY) bench/orchestrate.py
	$(PY) bench/gateway.py
	$(PY) bench/gateway_platform.py
	$(PY) bench/analytics.py
	$(PY) bench/webhooks.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
