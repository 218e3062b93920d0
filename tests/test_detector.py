"""The detector's decisions on its counts: which workloads it restarts, how often, when it gives
up, and the Event it writes once. The API is a recording stand-in here (what is read and
written is the point); tests/e2e/test_detection.py runs the same against the real API server."""

from __future__ import annotations

from typing import Any

import pytest

from webhook.app import ServerState
from webhook.cluster.api import ApiError
from webhook.cluster.namespaces import StaticNamespaces
from webhook.core import parse_config
from webhook.detector import RESTARTED_AT, Detector
from webhook.logs import JsonLog
from webhook.metrics import Metrics


class RecordingApi:
    """Answers a ReplicaSet's or Job's GET with its owner; records every write."""

    def __init__(self) -> None:
        self.gets: list[str] = []
        self.patches: list[tuple[str, Any]] = []
        self.created: list[tuple[str, Any]] = []
        self.existing: set[str] = set()

    def get(self, path: str, timeout: float, query: Any = None) -> Any:
        self.gets.append(path)
        name = path.rsplit("/", 1)[1]
        if "/replicasets/" in path:
            owner = {"kind": "Deployment", "name": name.rsplit("-", 1)[0], "uid": "d-uid"}
        else:
            owner = {"kind": "CronJob", "name": "nightly", "uid": "c-uid"}
        return {"metadata": {"name": name, "ownerReferences": [{**owner, "controller": True}]}}

    def patch(self, path: str, body: Any, patch_type: str = "strategic") -> Any:
        self.patches.append((path, body))
        return {}

    def create(self, path: str, body: Any) -> Any:
        name = body["metadata"]["name"]
        if name in self.existing:
            raise ApiError("exists", 409, "AlreadyExists")
        self.existing.add(name)
        self.created.append((path, body))
        return body


def detector(api: RecordingApi, **config: Any) -> Detector:
    log = JsonLog("error")
    state = ServerState(
        config=parse_config(config), namespaces=StaticNamespaces(), metrics=Metrics(), log=log
    )
    namespaces: Any = StaticNamespaces()
    return Detector(
        api,  # type: ignore[arg-type]
        state,
        namespaces,
        log,
        mode="cluster",
        lease_namespace=None,
        lease_name="unused",
    )


def unprotected(found: Detector, key: str, kind: str, name: str, revision: str = "") -> None:
    """What the informer's on_add does for one unprotected pod."""
    found._count(key, (kind, name, f"{name}-uid", revision, "never seen by the webhook"), +1)


def restarted(api: RecordingApi) -> list[str]:
    return [path.split("/apis/apps/v1/namespaces/")[1] for path, _ in api.patches]


def test_only_rollout_workloads_outside_excluded_namespaces_are_restarted() -> None:
    api = RecordingApi()
    found = detector(api, remediate="restart", excludedNamespaces=["infra"])
    unprotected(found, "infra/web-1", "ReplicaSet", "web-5d8f")
    unprotected(found, "shop/lonely", "Pod", "lonely")
    unprotected(found, "shop/backup-1", "Job", "backup-28")
    unprotected(found, "shop/rs-only-1", "ReplicaSet", "orphan-7c9d")
    api.get = lambda path, timeout, query=None: {"metadata": {"name": "orphan-7c9d"}}  # type: ignore[method-assign]
    found._remediate(now=1000.0)
    assert api.patches == [], "no bare pod, Job, ReplicaSet without Deployment, excluded ns"


def test_restarts_one_workload_per_interval_as_kubectl_rollout_restart_does() -> None:
    api = RecordingApi()
    found = detector(api, remediate="restart", remediateIntervalSeconds=60)
    unprotected(found, "shop/web-5d8f-1", "ReplicaSet", "web-5d8f")
    unprotected(found, "shop/web-5d8f-2", "ReplicaSet", "web-5d8f")
    unprotected(found, "shop/db-0", "StatefulSet", "db", "db-6f7")
    found._remediate(now=1000.0)
    assert restarted(api) == ["shop/deployments/web"]
    found._remediate(now=1059.0)
    assert len(api.patches) == 1, "rate-limited"
    found._remediate(now=1060.0)
    assert restarted(api) == ["shop/deployments/web", "shop/statefulsets/db"]
    annotations = api.patches[0][1]["spec"]["template"]["metadata"]["annotations"]
    assert list(annotations) == [RESTARTED_AT]
    found._remediate(now=2000.0)
    assert len(api.patches) == 2, "each restarted once"


def test_gives_up_when_the_restart_brings_unprotected_pods_again() -> None:
    api = RecordingApi()
    found = detector(api, remediate="restart", remediateIntervalSeconds=1)
    unprotected(found, "shop/web-5d8f-1", "ReplicaSet", "web-5d8f")
    found._remediate(now=1000.0)
    assert restarted(api) == ["shop/deployments/web"]
    unprotected(found, "shop/web-9a8b-1", "ReplicaSet", "web-9a8b")  # the new rollout missed too
    found._remediate(now=1010.0)
    found._remediate(now=1020.0)
    assert len(api.patches) == 1, "no restart loop while the webhook still fails open"
    text = found.metrics.exposition().decode()
    assert 'lifecycle_webhook_remediations_total{kind="Deployment",result="given_up"} 1.0' in text
    # Once its pods are clean, a later miss is remediated again.
    found._count("shop/web-5d8f-1", ("ReplicaSet", "web-5d8f", "", "", ""), -1)
    found._count("shop/web-9a8b-1", ("ReplicaSet", "web-9a8b", "", "", ""), -1)
    found._remediate(now=1030.0)
    unprotected(found, "shop/web-1c2d-1", "ReplicaSet", "web-1c2d")
    found._remediate(now=1040.0)
    assert len(api.patches) == 2


def test_remediation_off_restarts_nothing() -> None:
    api = RecordingApi()
    found = detector(api)
    unprotected(found, "shop/db-0", "StatefulSet", "db", "db-6f7")
    found.settle_seconds = 0
    found.pods.synced.set()
    found.tick()
    assert api.patches == []
    assert len(api.created) == 1, "the Event is still written"


@pytest.mark.parametrize("pods", [1, 3])
def test_one_event_per_rollout_on_the_deployment(pods: int) -> None:
    api = RecordingApi()
    found = detector(api)
    for index in range(pods):
        unprotected(found, f"shop/web-5d8f-{index}", "ReplicaSet", "web-5d8f")
    found.settle_seconds = 0
    found.pods.synced.set()
    found.tick()
    found.tick()
    ((path, event),) = api.created
    assert path == "/api/v1/namespaces/shop/events"
    assert event["type"] == "Warning" and event["reason"] == "PodsMissedWebhook"
    assert event["involvedObject"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "web",
        "namespace": "shop",
        "uid": "d-uid",
    }
    noun = "pod" if pods == 1 else "pods"
    assert event["message"] == (
        f"{pods} {noun} started without lifecycle-webhook's shutdown hooks; "
        "run kubectl rollout restart deployment/web -n shop"
    )
    # Another replica (or this one after a restart) reporting the same rollout: 409, no second.
    again = detector(api)
    unprotected(again, "shop/web-5d8f-0", "ReplicaSet", "web-5d8f")
    again.settle_seconds = 0
    again.pods.synced.set()
    again.tick()
    assert len(api.created) == 1
    # A new rollout of the same Deployment gets its own Event.
    unprotected(found, "shop/web-9a8b-0", "ReplicaSet", "web-9a8b")
    found.tick()
    assert len(api.created) == 2
    assert [g for g in api.gets if g.endswith("/web-5d8f")] == [
        "/apis/apps/v1/namespaces/shop/replicasets/web-5d8f"
    ] * 2, "one read per ReplicaSet per process"


def test_the_gauge_counts_per_namespace_and_drops_to_zero() -> None:
    found = detector(RecordingApi())
    unprotected(found, "shop/a", "Pod", "a")
    unprotected(found, "shop/b", "Pod", "b")
    unprotected(found, "cart/c", "Pod", "c")
    found._publish()
    text = found.metrics.exposition().decode()
    assert 'lifecycle_webhook_unprotected_pods{namespace="shop"} 2.0' in text
    assert 'lifecycle_webhook_unprotected_pods{namespace="cart"} 1.0' in text
    found._count("cart/c", ("Pod", "c", "", "", ""), -1)
    found._publish()
    assert 'lifecycle_webhook_unprotected_pods{namespace="cart"} 0.0' in (
        found.metrics.exposition().decode()
    )
    assert found.counts() == {"shop": 2}


def test_a_refused_event_is_retried_a_minute_later_not_every_tick() -> None:
    api = RecordingApi()
    attempts: list[str] = []

    def refuse(path: str, body: Any) -> Any:
        attempts.append(path)
        raise ApiError("forbidden", 403, "Forbidden")

    api.create = refuse  # type: ignore[method-assign]
    found = detector(api)
    unprotected(found, "shop/db-0", "StatefulSet", "db", "db-6f7")
    found.settle_seconds = 0
    found.pods.synced.set()
    for _ in range(5):
        found.tick()
    assert len(attempts) == 1
    found._rollouts["shop", "StatefulSet", "db", "db-6f7"].next_try = 0
    found.tick()
    assert len(attempts) == 2
