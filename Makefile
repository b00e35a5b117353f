# dockerops: `make demo` and `make test` do all the set-up they need and are
# idempotent: a second run re-installs nothing.
SHELL := /bin/sh
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: all setup host venv docker demo test lint unit functional integration bench bench-backup clean

all: test

setup: host venv docker

host:
	@scripts/host-packages.sh

# The venv holds dockerops' dependencies; the project itself reaches Salt
# through file_roots (tests also install the built wheel to check the pip way).
venv: $(STAMP)
$(STAMP): requirements/base.txt requirements/test.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing Python dependencies into $(VENV)"
	@$(BIN)/pip install -q --disable-pip-version-check -r requirements/test.txt 2>&1 | grep -v '^WARNING: Location' || true
	@$(BIN)/python -c 'import salt, docker, pydantic, saltfactories' && touch $(STAMP)

docker: host
	@scripts/dockerd-up.sh

demo: setup
	@$(BIN)/python scripts/demo.py

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/yamllint -s pillar salt/dockerops/parameters salt/dockerops/files/prometheus-rules.yml .yamllint
	find salt pillar -name '*.sls' | xargs $(BIN)/salt-lint

unit: venv
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

functional: setup
	$(BIN)/pytest tests/functional $(PYTEST_ARGS)

integration: setup
	$(BIN)/pytest tests/integration $(PYTEST_ARGS)

test: setup lint
	$(BIN)/pytest $(PYTEST_ARGS)

bench: setup
	$(BIN)/python bench/noop_highstate.py
	$(BIN)/python bench/backup.py

bench-backup: setup
	$(BIN)/python bench/backup.py

clean:
	rm -rf build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
