#!/usr/bin/env bash
# The whole test suite, as CI runs it: lint, then every test (unit, golden, property, HTTPS,
# chart, end-to-end and the real node). The Go-built tools are built first (cached outside the
# repo) and the node's Debian packages installed when missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bin=.venv/bin

echo "== lint"
"$bin/ruff" check webhook tests bench
"$bin/ruff" format --check webhook tests bench
"$bin/mypy"

echo "== test tools (kube-apiserver, kubectl, etcd, helm; kubelet, kube-proxy, kube-controller-manager, kube-scheduler)"
if command -v go >/dev/null 2>&1; then
  start=$SECONDS
  bash hack/build-test-tools.sh all node >/dev/null
  echo "tools ready in $((SECONDS - start)) s"
elif [ "${CI:-}" = "true" ]; then
  echo "go is required in CI to build kube-apiserver, etcd and helm" >&2
  exit 1
else
  echo "go not found: the chart and end-to-end tests will be skipped (they say why)"
fi

echo "== node packages (containerd, runc, CNI plugins, iptables, conntrack, busybox) and images"
if bash hack/node-deps.sh; then
  "$bin/python" -m tests.node.images >/dev/null
else
  if [ "${CI:-}" = "true" ]; then
    echo "the node suite's packages could not be installed" >&2
    exit 1
  fi
  echo "node packages missing: the node suite will be skipped (it says why)"
fi

echo "== load generator (wrk, for the soak and the benchmark)"
if ! command -v wrk >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends wrk >/dev/null 2>&1 \
      || { apt-get update >/dev/null && apt-get install -y --no-install-recommends wrk >/dev/null; }
  else
    echo "wrk not found and cannot be installed here: the soak test will be skipped (fails in CI)"
  fi
fi

echo "== tests"
"$bin/pytest" -q "$@"
