"""The webhook's own availability on a real node, called through its Service.

- Failed open: with every replica gone and `failurePolicy: Ignore`, pods are still created and
  start — without a preStop or a raised grace period. That is the silent gap that detection of
  unprotected pods exists for.
- Its own rollout: replicas restarted one after the other (endpoint terminating + SIGTERM,
  drain, start, ready) while pods are created with `failurePolicy: Fail`: no create fails.
"""

from __future__ import annotations

import threading
import time

import pytest

from ..e2e.kube import INJECT, ApiError, is_mutated, make_pod, pre_stop, unique_name
from ..e2e.procs import wait_until
from .conftest import NodeEnv
from .images import APP_IMAGE

pytestmark = pytest.mark.node

CREATE_INTERVAL_SECONDS = 0.05
PAUSE_BETWEEN_RESTARTS_SECONDS = 2


def app_pod(name: str, node_name: str | None = None) -> dict:  # type: ignore[type-arg]
    pod = make_pod(
        name,
        containers=[
            {
                "name": "app",
                "image": APP_IMAGE,
                "imagePullPolicy": "Never",
                "command": ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"],
            }
        ],
        automountServiceAccountToken=False,
    )
    if node_name:
        pod["spec"]["nodeName"] = node_name
    return pod


def test_with_the_webhook_down_and_ignore_pods_start_unprotected(node: NodeEnv) -> None:
    kube = node.node.kube
    webhooks = node.webhooks
    namespace = kube.create_namespace("failopen", labels={INJECT: "enabled"})
    webhooks.stop_all()
    webhooks.register("Ignore")

    started = time.monotonic()
    created = kube.create_pod(namespace, app_pod("unprotected")).body
    create_seconds = time.monotonic() - started
    assert not is_mutated(created)
    assert pre_stop(created, "app") is None
    assert created["spec"]["terminationGracePeriodSeconds"] == 30

    def runs() -> bool:
        pod = kube.get_pod(namespace, "unprotected")
        return bool(pod.get("status", {}).get("phase") == "Running")

    wait_until(runs, 90, "the unprotected pod to run", interval=0.5)
    node.figures["webhook down, failurePolicy Ignore: pod created unmutated in"] = (
        f"{create_seconds:.2f} s, and it runs"
    )

    webhooks.start_all()
    webhooks.register("Fail")
    protected = kube.create_pod(namespace, app_pod("protected")).body
    assert pre_stop(protected, "app") == {"sleep": {"seconds": 5}}


def test_restarting_the_webhook_replicas_one_by_one_fails_no_create(node: NodeEnv) -> None:
    kube = node.node.kube
    webhooks = node.webhooks
    namespace = kube.create_namespace("webhook-rollout", labels={INJECT: "enabled"})
    stop = threading.Event()
    outcomes: list[tuple[str, str | None]] = []

    def create_pods() -> None:
        # Bound to a node that does not exist: stored through the full admission chain,
        # never started, so hundreds of them cost the node nothing.
        while not stop.is_set():
            name = unique_name("during")
            try:
                pod = kube.create_pod(
                    namespace, app_pod(name, node_name="elsewhere"), timeout=15
                ).body
                outcomes.append((name, None if is_mutated(pod) else "created unmutated"))
            except ApiError as exc:
                outcomes.append((name, exc.message[:300] or str(exc)[:300]))
            stop.wait(CREATE_INTERVAL_SECONDS)

    creator = threading.Thread(target=create_pods, name="pod-creator", daemon=True)
    creator.start()
    downtimes = []
    try:
        time.sleep(PAUSE_BETWEEN_RESTARTS_SECONDS)
        for replica in webhooks.replicas:
            downtimes.append(webhooks.restart(replica))
            time.sleep(PAUSE_BETWEEN_RESTARTS_SECONDS)
    finally:
        stop.set()
        creator.join(timeout=30)

    failed = [(name, why) for name, why in outcomes if why is not None]
    assert len(outcomes) >= 50, outcomes
    assert not failed, failed[:10]
    node.figures["webhook replicas restarted one by one, failurePolicy Fail"] = (
        f"{len(failed)} failed of {len(outcomes)} creates "
        f"(each replica away {', '.join(f'{d:.1f}' for d in downtimes)} s)"
    )
