"""The webhook's own availability on a real node, called through its Service.

- Failed open: with every replica gone and `failurePolicy: Ignore`, pods are still created and
  start — without a preStop or a raised grace period. That is the silent gap that detection of
  unprotected pods exists for.
- Its own rollout: replicas restarted one after the other (endpoint terminating + SIGTERM,
  drain, start, ready) while pods are created with `failurePolicy: Fail`: no create fails.
"""

from __future__ import annotations

import time

import pytest

from ..e2e.kube import INJECT, is_mutated, pre_stop
from ..e2e.procs import wait_until
from .conftest import NodeEnv
from .workloads import PodCreator, app_pod

pytestmark = pytest.mark.node

PAUSE_BETWEEN_RESTARTS_SECONDS = 2


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
    downtimes = []
    with PodCreator(kube, namespace) as creator:
        time.sleep(PAUSE_BETWEEN_RESTARTS_SECONDS)
        for replica in webhooks.replicas:
            downtimes.append(webhooks.restart(replica))
            time.sleep(PAUSE_BETWEEN_RESTARTS_SECONDS)

    assert len(creator.outcomes) >= 50, creator.outcomes
    assert not creator.failed, creator.failed[:10]
    node.figures["webhook replicas restarted one by one, failurePolicy Fail"] = (
        f"0 failed of {len(creator.outcomes)} creates "
        f"(each replica away {', '.join(f'{d:.1f}' for d in downtimes)} s)"
    )
