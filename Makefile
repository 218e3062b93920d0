# Self-documenting: `make help`. Every target creates the venv it needs (.venv) on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP) ## create .venv with the webhook and its test tools

run: $(STAMP) ## run the webhook on https://127.0.0.1:8443 with throwaway self-signed certificates
	$(BIN)/lifecycle-webhook serve --host 127.0.0.1

tools: ## build (or reuse from the cache) kube-apiserver, kubectl, etcd and helm for the tests
	bash hack/build-test-tools.sh

lint: $(STAMP) ## ruff and mypy (strict on the core)
	$(BIN)/ruff check webhook tests bench
	$(BIN)/ruff format --check webhook tests bench
	$(BIN)/mypy

test: $(STAMP) ## everything CI runs: lint, unit, golden, property, HTTPS, chart and end-to-end tests
	bash hack/test.sh

unit: $(STAMP) ## the fast tests only (no helm, no API server)
	$(BIN)/pytest -m "not e2e and not chart" -q

e2e: $(STAMP) ## only the end-to-end tests against a real kube-apiserver and etcd
	$(BIN)/pytest tests/e2e -m e2e

golden: $(STAMP) ## regenerate the golden outputs (review the diff before committing)
	$(BIN)/python -m tests.golden.regenerate

bench: $(STAMP) ## throughput, latency, memory and start-up against a trivial FastAPI baseline
	$(BIN)/python -m bench

.PHONY: help venv run tools lint test unit e2e golden bench
