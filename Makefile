# HMS: `make run` sets up and starts the system; `make test` sets up and passes the tests.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEVSTAMP := $(VENV)/.installed-dev

.PHONY: run test bench ci install install-dev migrate demo clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(DEVSTAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP) $@

install: $(STAMP)
install-dev: $(DEVSTAMP)

migrate: install
	$(BIN)/hms db upgrade

demo: migrate
	$(BIN)/hms demo

run: demo
	$(BIN)/hms serve

test: install-dev
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: install-dev
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

# What CI runs: services, then `make test` on SQLite and on PostgreSQL (see .ci/run).
ci:
	bash .ci/run

clean:
	rm -rf $(VENV) instance/*.db .pytest_cache test-artifacts
