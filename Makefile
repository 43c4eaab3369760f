# The one entry point for developers, CI and the README.
# Needs only Python 3.11 and make: uv is installed with pip when it is missing.

SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
UV_VERSION := 0.13.9
export UV_PYTHON_DOWNLOADS := never


UV := $(shell command -v uv 2>/dev/null)
ifeq ($(UV),)
UV := $(CURDIR)/.tools/bin/uv
endif

.PHONY: help install run test test-unit lint fmt schemas schemas-check bench clean

help:
	@echo "make run      - install and start the local stack with demo data (Ctrl-C stops)"
	@echo "make test     - install and run every test against real NATS and PostgreSQL"
	@echo "make lint     - ruff, format check, mypy, import rules"
	@echo "make schemas  - regenerate JSON Schemas, the event catalogue and AsyncAPI"
	@echo "make bench    - whole-lifecycle benchmark: latency per stage, sustained rate, CPU, memory"
	@echo "make test-unit, make fmt, make schemas-check, make clean"

$(CURDIR)/.tools/bin/uv:
	$(PYTHON) -m venv $(CURDIR)/.tools
	$(CURDIR)/.tools/bin/pip install --quiet "uv==$(UV_VERSION)"

.venv/.synced: $(UV) uv.lock pyproject.toml $(wildcard libs/*/pyproject.toml services/*/pyproject.toml)
	$(UV) sync --frozen --all-packages --python $(PYTHON)
	@touch $@

install: .venv/.synced

run: install
	$(UV) run --frozen python -m linli.devstack run

test: install
	$(UV) run --frozen pytest -q

test-unit: install
	$(UV) run --frozen pytest -q tests/unit

lint: install
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .
	$(UV) run --frozen mypy libs/contracts/src libs/servicekit/src libs/devstack/src services/*/src bench
	$(UV) run --frozen lint-imports

fmt: install
	$(UV) run --frozen ruff format .
	$(UV) run --frozen ruff check --fix .

bench: install
	$(UV) run --frozen python -m bench.lifecycle --out bench/results \
		--doc docs/benchmarks.md --chart docs/benchmarks-lifecycle.png

schemas: install
	$(UV) run --frozen python -m linli.contracts.schemagen
	$(UV) run --frozen python -m linli.devstack.asyncapi

schemas-check: install
	$(UV) run --frozen python -m linli.contracts.schemagen --check
	$(UV) run --frozen python -m linli.devstack.asyncapi --check

clean:
	rm -rf .venv .tools .pytest_cache .mypy_cache .ruff_cache
