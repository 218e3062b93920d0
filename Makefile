# Self-documenting: `make help`. Every target creates the venv it needs (.venv) on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

LOCK := requirements.lock
CONSTRAINTS := $(VENV)/constraints.txt

# The runtime dependencies are exactly the lock file (hash-checked, wheels only), as in the
# image; then the project without dependencies; then the test tools, constrained to the lock
# so they cannot move a runtime package.
$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --require-hashes --only-binary=:all: -r $(LOCK)
	$(BIN)/pip install --quiet --no-deps -e .
	sed -n 's/^\([A-Za-z0-9._-]*==[^ ;]*\).*/\1/p' $(LOCK) > $(CONSTRAINTS)
	$(BIN)/pip install --quiet -c $(CONSTRAINTS) -e '.[test]'
	touch $(STAMP)

venv: $(STAMP) ## create .venv with the webhook and its test tools

run: $(STAMP) ## run the webhook on https://127.0.0.1:8443 with throwaway self-signed certificates
	$(BIN)/lifecycle-webhook serve --host 127.0.0.1

tools: $(STAMP) ## build (or reuse from the cache) kube-apiserver, kubectl, etcd, helm, the node binaries and images
	bash hack/build-test-tools.sh all node
	$(BIN)/python -m tests.node.images

lint: $(STAMP) ## ruff and mypy (strict on the core)
	$(BIN)/ruff check webhook tests bench
	$(BIN)/ruff format --check webhook tests bench
	$(BIN)/mypy

test: $(STAMP) ## everything CI runs: lint, unit, golden, property, HTTPS, chart and end-to-end tests
	bash hack/test.sh

unit: $(STAMP) ## the fast tests only (no helm, no API server, no node)
	$(BIN)/pytest -m "not e2e and not chart and not node" -q

e2e: $(STAMP) ## only the end-to-end tests against a real kube-apiserver and etcd
	$(BIN)/pytest tests/e2e -m e2e

node: $(STAMP) ## only the real-node tests: kubelet, containerd, kube-proxy in their own namespaces (root)
	bash hack/node-deps.sh
	bash hack/build-test-tools.sh all node >/dev/null
	$(BIN)/pytest tests/node -m node

golden: $(STAMP) ## regenerate the golden outputs (review the diff before committing)
	$(BIN)/python -m tests.golden.regenerate

bench: $(STAMP) ## throughput, latency, memory and start-up against a trivial FastAPI baseline; --workers 1 vs 2; pod creates through a real kube-apiserver
	$(BIN)/python -m bench
	$(BIN)/python -m bench workers
	$(BIN)/python -m bench apiserver

reliability: $(STAMP) ## the README's reliability figures: slow clients, burst, 10-minute soak
	$(BIN)/python -m bench reliability --soak-seconds 600

soak: $(STAMP) ## 10 minutes at half capacity: RSS slope and errors (CI runs 60 s of it)
	$(BIN)/python -m bench reliability --only soak --soak-seconds 600

lock: ## regenerate requirements.lock (hashes for every runtime dependency) with uv
	$(PYTHON) -m venv .lock-venv && .lock-venv/bin/pip install --quiet uv
	.lock-venv/bin/uv pip compile pyproject.toml --generate-hashes --universal \
		--python-version 3.11 --no-header -o $(LOCK)
	rm -rf .lock-venv

.PHONY: help venv run tools lint test unit e2e node golden bench reliability soak lock
