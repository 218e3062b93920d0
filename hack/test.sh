#!/usr/bin/env bash
# The whole test suite, as CI runs it: lint, then every test (unit, golden, property, HTTPS,
# chart and end-to-end). The Go-built tools are built first (cached outside the repo).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bin=.venv/bin

echo "== lint"
"$bin/ruff" check webhook tests bench
"$bin/ruff" format --check webhook tests bench
"$bin/mypy"

echo "== test tools (kube-apiserver, kubectl, etcd, helm)"
if command -v go >/dev/null 2>&1; then
  start=$SECONDS
  bash hack/build-test-tools.sh all >/dev/null
  echo "tools ready in $((SECONDS - start)) s"
elif [ "${CI:-}" = "true" ]; then
  echo "go is required in CI to build kube-apiserver, etcd and helm" >&2
  exit 1
else
  echo "go not found: the chart and end-to-end tests will be skipped (they say why)"
fi

echo "== tests"
"$bin/pytest" -q "$@"
