# HMS: `make run` sets up and starts the system; `make test` sets up and passes the tests.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEVSTAMP := $(VENV)/.installed-dev
# npm writes this file on every install: it is older than the lock file when the tree is stale.
NODE_STAMP := node_modules/.package-lock.json

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

# npm comes from the system; as root on Debian we install it rather than stop.
ENSURE_NPM = command -v npm >/dev/null || { \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing nodejs and npm (Debian packages) for the pathway editor"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm) >/dev/null; \
	else echo "npm is needed for the pathway editor: install nodejs and npm"; exit 1; fi; }

# Browser assets HMS serves itself (no CDN on a hospital LAN): bpmn-js for the pathway editor.
# `npm ci` installs exactly package-lock.json, again whenever package.json or the lock file
# is newer than the installed tree; without a lock file `npm install` writes one.
ifneq ($(wildcard package-lock.json),)
$(NODE_STAMP): package.json package-lock.json
	@$(ENSURE_NPM)
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@
else
$(NODE_STAMP): package.json
	@$(ENSURE_NPM)
	npm install --no-audit --no-fund --loglevel=error
	@touch $@
endif

install: $(STAMP) $(NODE_STAMP)
install-dev: $(DEVSTAMP) $(NODE_STAMP)

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
	rm -rf $(VENV) node_modules instance/*.db .pytest_cache test-artifacts
