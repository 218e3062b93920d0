"""The product's central claim, measured: a rolling restart behind a Service drops no request.

A Deployment of an HTTP app that exits at once on SIGTERM (the common case the webhook exists
for) sits behind a ClusterIP Service; a client inside the node sends requests at a steady rate,
each on a new connection through kube-proxy, while `kubectl rollout restart` replaces every
pod. Once with the webhook (namespace labelled for injection), once without. Without it, each
old pod exits while kube-proxy may still route to it, and requests fail; with the injected
preStop it keeps serving until its endpoint is gone. The control run must fail some requests,
or the test could not tell the difference.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from typing import Any

import pytest

from ..e2e.kube import INJECT, pre_stop
from ..e2e.procs import wait_until
from ..tools import REPO
from .conftest import NodeEnv
from .workloads import cluster_ip_service, http_deployment

pytestmark = pytest.mark.node

REPLICAS = 3
RATE = 100.0
"""Requests per second: enough that a window of a few hundred ms between SIGTERM and the
endpoint's removal shows up as failed requests."""
MAX_CLIENT_SECONDS = 120
WARM_UP_SECONDS = 3
COOL_DOWN_SECONDS = 2
ROLLOUT_TIMEOUT = "120s"


def rollout_under_load(env: NodeEnv, injected: bool) -> dict[str, Any]:
    node = env.node
    kube = node.kube
    namespace = kube.create_namespace("rollout", labels={INJECT: "enabled"} if injected else None)
    labels = {"app": "web"}
    kube.request(
        "POST",
        f"/apis/apps/v1/namespaces/{namespace}/deployments",
        http_deployment("web", REPLICAS, labels),
    )
    service = kube.request(
        "POST", f"/api/v1/namespaces/{namespace}/services", cluster_ip_service("web", labels)
    ).body
    cluster_ip = service["spec"]["clusterIP"]
    node.kubectl(
        "rollout", "status", "deployment/web", "-n", namespace, f"--timeout={ROLLOUT_TIMEOUT}"
    )
    pods = kube.list_pods(namespace)
    assert len(pods) == REPLICAS
    for pod in pods:
        hook = pre_stop(pod, "web")
        assert (hook == {"sleep": {"seconds": 5}}) if injected else hook is None, hook
    wait_until(
        lambda: node.http_get(cluster_ip, 80, "/")[0] == 200,
        60,
        f"the Service {cluster_ip} answering through kube-proxy",
        interval=0.5,
    )

    out = node.workdir / f"load-{namespace}.json"
    client = node.sandbox.spawn(
        f"load-{namespace}",
        [
            sys.executable,
            "-m",
            "tests.node.load_client",
            f"http://{cluster_ip}/",
            str(RATE),
            str(MAX_CLIENT_SECONDS),
            str(out),
        ],
        cwd=REPO,
    )
    time.sleep(WARM_UP_SECONDS)
    started = time.monotonic()
    node.kubectl("rollout", "restart", "deployment/web", "-n", namespace)
    node.kubectl(
        "rollout", "status", "deployment/web", "-n", namespace, f"--timeout={ROLLOUT_TIMEOUT}"
    )
    rollout_seconds = time.monotonic() - started

    def old_pods_gone() -> bool:
        current = kube.list_pods(namespace)
        return len(current) == REPLICAS and not any(
            p["metadata"].get("deletionTimestamp") for p in current
        )

    wait_until(old_pods_gone, 90, "the old pods to terminate", interval=0.5)
    drained_seconds = time.monotonic() - started
    time.sleep(COOL_DOWN_SECONDS)
    client.signal(signal.SIGTERM)
    client.popen.wait(timeout=60)
    summary: dict[str, Any] = json.loads(out.read_text())
    summary["rollout_seconds"] = round(rollout_seconds, 1)
    summary["old_pods_gone_seconds"] = round(drained_seconds, 1)
    for pod in kube.list_pods(namespace):
        hook = pre_stop(pod, "web")
        assert (hook is not None) == injected, pod["metadata"]["name"]
    return summary


def test_rolling_restart_drops_no_request_with_the_webhook(node: NodeEnv) -> None:
    with_webhook = rollout_under_load(node, injected=True)
    without = rollout_under_load(node, injected=False)
    report = json.dumps({"with webhook": with_webhook, "without": without}, indent=1)

    for run in (with_webhook, without):
        # The client really ran through the whole rollout at its rate.
        assert run["sent"] >= RATE * (WARM_UP_SECONDS + run["old_pods_gone_seconds"]) * 0.9, report
    assert with_webhook["failed"] == 0, report
    assert without["failed"] > 0, f"the control run dropped nothing: the test cannot fail\n{report}"

    node.figures["rolling restart, 3 replicas, 100 req/s: failed with the webhook"] = (
        f"{with_webhook['failed']} of {with_webhook['sent']} "
        f"(rollout {with_webhook['rollout_seconds']} s)"
    )
    node.figures["rolling restart, 3 replicas, 100 req/s: failed without it"] = (
        f"{without['failed']} of {without['sent']} {without['by_kind']} "
        f"(rollout {without['rollout_seconds']} s)"
    )
