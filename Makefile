# vendo: `make up` runs a local cluster on embedded defaults; `make test` runs the test suite.
VENV ?= .venv
PY := $(VENV)/bin/python
VENDO := $(VENV)/bin/vendo
PYTHON ?= python3
EXAMPLES := hello-world stream image slow phrasebook similarity

.PHONY: up down status test test-unit lint install bench

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,examples]'
	@touch $@

up: install
	$(VENDO) up --detach
	@for ex in $(EXAMPLES); do \
		printf 'pushing examples/%s as vendo/%s: ' $$ex $$ex; \
		$(VENDO) push examples/$$ex vendo/$$ex --visibility public || exit 1; \
	done
	@$(VENDO) status
	@echo
	@echo "Base URL:  $$($(PY) -c 'from vendo_core.settings import Settings; from cluster.up import read_state; print(read_state(Settings())["url"])')"
	@echo "API token: $$($(PY) -c 'from vendo_core.settings import Settings; from cluster.up import first_token; print(first_token(Settings()))')"

down: install
	$(VENDO) down

status: install
	$(VENDO) status

# two runs: tests/multinode starts Ray clusters of its own, and two never run at once
test: install
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -q -p no:cacheprovider tests --ignore=tests/multinode
	$(PY) -m pytest -q -p no:cacheprovider tests/multinode

test-unit: install
	$(PY) -m pytest -q -p no:cacheprovider tests/unit

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports --no-cache

# One run on this machine (~8 min on 2 cores): benchmarks/results/latest.{json,md,png}.
bench: install $(VENV)/.bench-installed
	$(PY) -m benchmarks

$(VENV)/.bench-installed: $(VENV)/.installed pyproject.toml
	$(PY) -m pip install -q -e '.[bench]'
	@touch $@
