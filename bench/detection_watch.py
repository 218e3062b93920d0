"""`python -m bench detection-watch [--pods N]`: the server's memory with N pods watched.

Starts the end-to-end suite's etcd and kube-apiserver on 127.0.0.1 (tests/e2e/cluster.py; the
tools come from the same cached build), creates N pods in a namespace in the webhook's scope
with no webhook registered, so every pod is unprotected and kept by the detector (the worst
case: a protected pod keeps nothing), then runs two servers side by side, in the same run:

- **detection on** (the default), which lists and watches the N pods, judges each, and
  publishes the gauge;
- **detection off** (`--no-detect`), the baseline: the same server without the pods informer.

It prints each one's resident memory (VmRSS) once the gauge counts all N pods, its peak
(VmHWM) including a full relist forced by a config change (every pod judged again), and
the chart's memory limit (values.yaml `resources.limits.memory`) for comparison.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from bench import BenchError
from bench.procs import status_kib

REPO = Path(__file__).resolve().parent.parent
CHART_VALUES = REPO / "charts" / "lifecycle-webhook" / "values.yaml"
WAIT_SECONDS = 600


def _pod(name: str, owner: dict[str, Any]) -> dict[str, Any]:
    """A pod as a ReplicaSet creates it: labels, an owner reference, a few env vars, probes."""
    env = [{"name": f"SETTING_{i}", "value": f"value-{i}-" + "x" * 20} for i in range(20)]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": {"app": "web", "pod-template-hash": "5d8f7c9b4", "tier": "frontend"},
            "ownerReferences": [owner],
        },
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "image": "registry.invalid/app:1.2.3",
                    "ports": [{"name": "http", "containerPort": 8080}],
                    "env": env,
                    "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}},
                    "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}},
                }
            ]
        },
    }


def _mib(kib: int) -> float:
    return round(kib / 1024, 1)


def chart_memory_limit_mib() -> float:
    limit = str(yaml.safe_load(CHART_VALUES.read_text())["resources"]["limits"]["memory"])
    number, unit = re.fullmatch(r"(\d+)(Mi|Gi)", limit).groups()  # type: ignore[union-attr]
    return float(number) * (1024 if unit == "Gi" else 1)


def measure(pods: int, workdir: Path) -> dict[str, Any]:
    from tests.e2e.cluster import start_control_plane
    from tests.e2e.kube import INJECT, Kube
    from tests.e2e.procs import wait_until
    from tests.e2e.server import RELEASE_NAMESPACE, WebhookServer
    from tests.tools import build_tools

    with contextlib.ExitStack() as stack:
        plane = start_control_plane(build_tools(), workdir, stack)
        kube: Kube = plane.kube
        kube.create_namespace(name=RELEASE_NAMESPACE)
        namespace = kube.create_namespace("bench-detect", labels={INJECT: "enabled"})
        owner = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "name": "web-5d8f7c9b4",
            "uid": "00000000-0000-0000-0000-000000000001",
            "controller": True,
        }
        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            list(
                pool.map(
                    lambda i: kube.create_pod(namespace, _pod(f"web-5d8f7c9b4-{i:05d}", owner)),
                    range(pods),
                )
            )
        created_seconds = time.monotonic() - started
        sample = kube.request("GET", f"/api/v1/namespaces/{namespace}/pods", query={"limit": "1"})
        pod_bytes = len(json.dumps(sample.body["items"][0]))

        quiet = "--log-level=warning"
        on = WebhookServer(
            workdir, plane.ca, plane.kubeconfig, name="detect-on", extra_args=[quiet]
        )
        off = WebhookServer(
            workdir,
            plane.ca,
            plane.kubeconfig,
            name="detect-off",
            extra_args=[quiet, "--no-detect"],
        )
        for server in (on, off):
            stack.callback(server.stop)
            server.start()

        def counted() -> bool:
            series = f'lifecycle_webhook_unprotected_pods{{namespace="{namespace}"}} '
            return any(
                line.startswith(series) and float(line.rsplit(" ", 1)[1]) == pods
                for line in on.metrics().splitlines()
            )

        started = time.monotonic()
        wait_until(counted, WAIT_SECONDS, f"the gauge to count {pods} pods", interval=1)
        synced_seconds = time.monotonic() - started
        time.sleep(3)  # settle: the list pages' garbage returned
        steady = {s.name: status_kib(s.pid, "VmRSS") for s in (on, off)}
        on.set_config("shutdownSeconds: 45\n")  # every pod judged again: a full relist
        wait_until(counted, WAIT_SECONDS, "the relist", interval=1)
        time.sleep(12)  # the relist happens within RELIST_SECONDS of the change
        wait_until(counted, WAIT_SECONDS, "the relist", interval=1)
        peak = {s.name: status_kib(s.pid, "VmHWM") for s in (on, off)}
        after = {s.name: status_kib(s.pid, "VmRSS") for s in (on, off)}
    limit = chart_memory_limit_mib()
    return {
        "pods": pods,
        "pod_json_bytes": pod_bytes,
        "pods_created_seconds": round(created_seconds, 1),
        "gauge_complete_seconds": round(synced_seconds, 1),
        "rss_mib": {name: _mib(kib) for name, kib in steady.items()},
        "rss_after_relist_mib": {name: _mib(kib) for name, kib in after.items()},
        "peak_rss_mib": {name: _mib(kib) for name, kib in peak.items()},
        "detection_cost_mib": _mib(steady["detect-on"] - steady["detect-off"]),
        "rss_ratio_on_vs_off": round(steady["detect-on"] / steady["detect-off"], 2),
        "chart_memory_limit_mib": limit,
        "peak_share_of_limit": round(_mib(peak["detect-on"]) / limit, 2),
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench detection-watch", description=__doc__)
    parser.add_argument("--pods", type=int, default=10_000, help="pods to watch (10000)")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = parser.parse_args(argv)
    if not 1 <= args.pods <= 50_000:
        parser.error("--pods wants 1 to 50000")
    with tempfile.TemporaryDirectory(prefix="lifecycle-webhook-detection-") as directory:
        try:
            results = measure(args.pods, Path(directory))
        except BenchError as exc:
            print(f"detection-watch: cannot measure: {exc}", file=sys.stderr)
            return 2
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0
