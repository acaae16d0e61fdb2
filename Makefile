# pgvault developer entry points. `make demo` and `make test` do their own set-up.
SHELL := /bin/bash
# System Python first: the postgres user (archive_command, restore_command) must be able
# to run the venv, and a pyenv interpreter under /root is not readable by it.
PYTHON ?= $(shell test -x /usr/bin/python3 && echo /usr/bin/python3 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-12)
PYTEST_ARGS ?=

.PHONY: help venv services browser lint test test-fast demo bench clean

help:
	@echo "make demo   - run the whole mission end to end on a throw-away cluster"
	@echo "make test   - lint (ruff, mypy) + the full test suite against real services"
	@echo "make lint   - ruff + mypy only"
	@echo "make bench  - benchmarks vs pgBackRest / pg_dump / pg_basebackup"

$(STAMP):
	@rm -f $(VENV)/.installed-*
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]' --config-settings editable_mode=compat
	@touch $@

venv: $(STAMP)

services:
	@bash scripts/ensure-services.sh

# headless Chromium for the status-page test (tests/test_status_page.py); screenshots go
# to artifacts/
browser:
	@command -v chromium >/dev/null || { apt-get update && apt-get install -y chromium; }

lint: venv
	$(BIN)/ruff check pgvault tests bench scripts
	$(BIN)/ruff format --check pgvault tests bench scripts
	$(BIN)/mypy pgvault

test: venv services browser lint
	$(BIN)/pytest $(PYTEST_ARGS)

test-fast: venv
	$(BIN)/pytest -m "not slow" $(PYTEST_ARGS)

demo: venv services
	$(BIN)/python scripts/demo.py

bench: venv services
	for b in bench/[a-z]*.py; do [ "$$b" = bench/common.py ] || $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
