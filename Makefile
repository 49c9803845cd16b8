# The commands the README names. Every target sets up what it needs, idempotently:
# a virtualenv in .venv (rebuilt when pyproject.toml changes) and the Node client
# under node/tests/js/node_modules (rebuilt when its lockfile changes).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
JS := node/tests/js
JS_STAMP := $(JS)/node_modules/.installed
REPLICAS ?= 3
ARGS ?=

.PHONY: run test lint unit bench setup clean-data

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

$(JS_STAMP): $(JS)/package.json $(JS)/package-lock.json
	cd $(JS) && npm ci --no-audit --no-fund --loglevel=error
	touch $(JS_STAMP)

setup: $(STAMP) $(JS_STAMP)

run: $(STAMP)
	$(PY) -m zonestore_node.cli run --replicas $(REPLICAS) $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check node operator bench e2e
	$(VENV)/bin/ruff format --check node operator bench e2e
	$(VENV)/bin/mypy

test: setup lint
	$(PY) -m pytest -q $(ARGS)

bench: setup
	$(PY) -m bench.run $(ARGS)

clean-data:
	rm -rf .zonestore-data
