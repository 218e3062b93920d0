"""`python -m bench detection [--pods N]`: `lifecycle-webhook check` over N pods (10,000 by
default) in the e2e suite's real API server (etcd + kube-apiserver, no nodes: pods stay
Pending), against a baseline measured in the same run: a plain paged list of the same pods
(same client, same page size, same process start) that judges nothing.

Pods are created in parallel (a bounded pool), unmutated (no webhook is registered), owned by
one ReplicaSet of one Deployment per namespace, so `check` finds every one of them "never
seen by the webhook" and resolves each owner once. Each side runs as its own process, its
peak RSS read from wait4(); the table shows the median of --repeat runs.

Exit 0 when it ran, 2 when it could not (tools missing, a wrong answer from `check`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench import BenchError

REPO_ROOT = Path(__file__).resolve().parent.parent
PAGE_SIZE = 500
CREATE_WORKERS = 16
"""Bounded: the API server and etcd share 2 cores with this driver."""
NAMESPACES = 20
INJECT = "lifecycle-webhook.io/inject"


def _progress(text: str) -> None:
    print(f"detection: {text}", file=sys.stderr, flush=True)


def populate(kube: Any, pods: int) -> list[str]:
    """N pods spread over NAMESPACES namespaces, each with its Deployment and ReplicaSet."""
    from tests.e2e.kube import create_deployment_with_replicaset

    namespaces = [
        kube.create_namespace(f"bench-{index}", labels={INJECT: "enabled"})
        for index in range(NAMESPACES)
    ]
    replicasets = {
        namespace: create_deployment_with_replicaset(kube, namespace, "web")
        for namespace in namespaces
    }

    def create(index: int) -> None:
        namespace = namespaces[index % len(namespaces)]
        replicaset = replicasets[namespace]
        kube.request("POST", f"/api/v1/namespaces/{namespace}/pods", _pod(index, replicaset))

    started = time.monotonic()
    with ThreadPoolExecutor(CREATE_WORKERS) as pool:
        for _ in pool.map(create, range(pods)):
            pass
    elapsed = time.monotonic() - started
    _progress(f"created {pods:,} pods in {elapsed:.0f} s ({pods / elapsed:,.0f}/s)")
    return namespaces


def _pod(index: int, replicaset: dict[str, Any]) -> dict[str, Any]:
    """A pod as the ReplicaSet controller makes it: two containers, probes, env, resources."""
    from tests.e2e.kube import owner_reference

    container = {
        "name": "app",
        "image": "registry.invalid/web:1",
        "ports": [{"name": "http", "containerPort": 8080}],
        "env": [{"name": f"SETTING_{n}", "value": f"value-{n}"} for n in range(8)],
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
        "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}},
    }
    sidecar = {"name": "log-shipper", "image": "registry.invalid/shipper:2"}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"web-5d8f7-{index:05d}",
            "labels": {"app": "web", "pod-template-hash": "5d8f7"},
            "ownerReferences": [owner_reference(replicaset)],
        },
        "spec": {"containers": [container, sidecar]},
    }


def measure(argv: list[str]) -> tuple[float, float, str, int]:
    """(seconds, peak RSS MiB, stdout, exit code) of one process, RSS from wait4()."""
    started = time.monotonic()
    with tempfile.TemporaryFile() as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.PIPE, cwd=REPO_ROOT)
        _, status, usage = os.wait4(process.pid, 0)
        elapsed = time.monotonic() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        stderr = process.stderr.read().decode() if process.stderr else ""
        out.seek(0)
        stdout = out.read().decode()
    if process.returncode not in (0, 1):
        raise BenchError(f"{' '.join(argv)} exited {process.returncode}: {stderr[-2000:]}")
    return elapsed, usage.ru_maxrss / 1024, stdout, process.returncode


def plain_list(kubeconfig: str, page_size: int) -> int:
    """The baseline: every pod, page by page, through the same client; nothing judged."""
    from webhook.check import FINISHED
    from webhook.cluster.api import connect

    api = connect(kubeconfig)
    assert api is not None
    count, token = 0, ""
    while True:
        query = {"limit": str(page_size), "fieldSelector": FINISHED}
        if token:
            query["continue"] = token
        page = api.get("/api/v1/pods", 30.0, query)
        count += len(page.get("items") or [])
        token = (page.get("metadata") or {}).get("continue") or ""
        if not token:
            return count


def run(pods: int, repeat: int) -> dict[str, Any]:
    from tests.e2e.cluster import start_control_plane
    from tests.tools import build_tools

    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-det-")))
        plane = start_control_plane(build_tools(), workdir, stack)
        populate(plane.kube, pods)
        kubeconfig = str(plane.kubeconfig)
        check = [sys.executable, "-m", "webhook", "check", f"--kubeconfig={kubeconfig}"]
        check += ["--mode=namespace", f"--page-size={PAGE_SIZE}", "-o", "json"]
        baseline = [sys.executable, "-m", "bench.detection", "list", kubeconfig, str(PAGE_SIZE)]
        results: dict[str, list[tuple[float, float]]] = {"check": [], "baseline": []}
        for attempt in range(repeat):
            seconds, rss, stdout, code = measure(baseline)
            if int(stdout) != pods:
                raise BenchError(f"the baseline listed {stdout.strip()} pods, not {pods}")
            results["baseline"].append((seconds, rss))
            seconds, rss, stdout, code = measure(check)
            document = json.loads(stdout)
            if code != 1 or document["unprotected"] != pods or document["checked"] != pods:
                raise BenchError(f"check found {document['unprotected']} of {pods} (exit {code})")
            if len(document["owners"]) != NAMESPACES:
                raise BenchError(f"check grouped them by {len(document['owners'])} owners")
            results["check"].append((seconds, rss))
            _progress(f"run {attempt + 1}: check {seconds:.2f} s, {rss:.0f} MiB")
    figures: dict[str, Any] = {"pods": pods, "page_size": PAGE_SIZE, "runs": repeat}
    for side, samples in results.items():
        figures[f"{side}_seconds"] = statistics.median(s for s, _ in samples)
        figures[f"{side}_peak_rss_mib"] = statistics.median(r for _, r in samples)
    return figures


def render(figures: dict[str, Any]) -> str:
    pods = figures["pods"]
    check_s, base_s = figures["check_seconds"], figures["baseline_seconds"]
    check_m, base_m = figures["check_peak_rss_mib"], figures["baseline_peak_rss_mib"]
    lines = [
        f"lifecycle-webhook check over {pods:,} pods (real kube-apiserver + etcd, "
        f"pages of {figures['page_size']}, median of {figures['runs']} runs)",
        "",
        f"{'':34}{'seconds':>9}{'pods/s':>10}{'peak RSS MiB':>14}",
        f"{'baseline: paged list, no judging':34}{base_s:>9.2f}{pods / base_s:>10,.0f}"
        f"{base_m:>14.0f}",
        f"{'check (judge + owners + report)':34}{check_s:>9.2f}{pods / check_s:>10,.0f}"
        f"{check_m:>14.0f}",
        f"{'check / baseline':34}{check_s / base_s:>9.2f}{'':>10}{check_m / base_m:>14.2f}",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    if arguments[:1] == ["list"]:  # the baseline's own process
        print(plain_list(arguments[1], int(arguments[2])))
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench detection")
    parser.add_argument("--pods", type=int, default=10_000, help="pods to create (10000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each side (3)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures")
    args = parser.parse_args(arguments)
    if not 1 <= args.pods <= 50_000 or not 1 <= args.repeat <= 10:
        parser.error("--pods wants 1 to 50000, --repeat 1 to 10")
    try:
        figures = run(args.pods, args.repeat)
    except BenchError as error:
        print(f"python -m bench detection: {error}", file=sys.stderr)
        return 2
    print(render(figures), end="")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
