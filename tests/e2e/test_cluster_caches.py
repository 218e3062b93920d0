"""The cluster package's caches against the real API server: what they keep, and that the
watch follows creates, changes and deletes (what exposure and profiles will read)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from webhook.cluster.api import ApiError, ApiServer, connect
from webhook.cluster.namespaces import NamespaceCache, NamespaceInfo
from webhook.cluster.services import TARGET_GROUP_ATTRIBUTES, ServiceCache
from webhook.core.model import PREFIX
from webhook.logs import JsonLog

from .kube import unique_name
from .procs import wait_until
from .session import E2E

pytestmark = pytest.mark.e2e

SECONDS = 15


@pytest.fixture
def api(e2e: E2E) -> ApiServer:
    """Our own client, from the admin kubeconfig, as `serve --kubeconfig` makes it."""
    server = connect(str(e2e.plane.kubeconfig))
    assert server is not None
    return server


@pytest.fixture
def services(api: ApiServer) -> Iterator[ServiceCache]:
    cache = ServiceCache(api, JsonLog("error")).start()
    assert cache.informer.synced.wait(SECONDS)
    yield cache
    assert cache.informer.stop()


def names(cache: ServiceCache, namespace: str) -> list[str] | None:
    found = cache.services_in(namespace)
    return None if found is None else [service["name"] for service in found]


def service(name: str, kind: str, selector: dict[str, str], **annotations: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"type": kind, "selector": selector, "ports": [{"port": 80}]},
    }


def test_the_service_cache_sees_services_created_changed_and_deleted_after_it_started(
    e2e: E2E, services: ServiceCache
) -> None:
    namespace = e2e.kube.create_namespace("svc")
    collection = f"/api/v1/namespaces/{namespace}/services"
    assert services.services_in(namespace) == ()

    delay = "deregistration_delay.timeout_seconds=120,stickiness.enabled=false"
    e2e.kube.request("POST", collection, service("web", "ClusterIP", {"app": "web"}))
    balancer = service(
        "edge", "LoadBalancer", {"app": "web"}, **{TARGET_GROUP_ATTRIBUTES: delay, "x": "y"}
    )
    e2e.kube.request("POST", collection, balancer)
    wait_until(lambda: names(services, namespace) == ["edge", "web"], SECONDS, "both Services")
    assert services.services_in(namespace) == (
        {
            "name": "edge",
            "type": "LoadBalancer",
            "selector": {"app": "web"},
            "annotations": {TARGET_GROUP_ATTRIBUTES: delay},
        },
        {"name": "web", "type": "ClusterIP", "selector": {"app": "web"}, "annotations": {}},
    )

    e2e.kube.request(
        "PATCH",
        f"{collection}/web",
        {"spec": {"selector": {"app": "api"}}},
        content_type="application/merge-patch+json",
    )
    wait_until(
        lambda: (services.services_in(namespace) or ())[-1]["selector"] == {"app": "api"},
        SECONDS,
        "the changed selector",
    )
    e2e.kube.request("DELETE", f"{collection}/edge")
    wait_until(lambda: names(services, namespace) == ["web"], SECONDS, "the deleted Service gone")
    assert services.informer.current


def test_the_namespace_cache_keeps_labels_and_our_annotations_from_the_real_api_server(
    e2e: E2E, api: ApiServer
) -> None:
    before = e2e.kube.create_namespace(
        "labels",
        labels={"team": "shop", "tier": "web"},
        annotations={PREFIX + "prestop-seconds": "7", "owner": "someone"},
    )
    cache = NamespaceCache(api, JsonLog("error")).start()
    try:
        assert cache.informer.synced.wait(SECONDS)
        assert cache.peek(before) == NamespaceInfo(
            {PREFIX + "prestop-seconds": "7"},
            {"team": "shop", "tier": "web", "kubernetes.io/metadata.name": before},
        )
        e2e.kube.patch_namespace(before, {"labels": {"tier": None, "env": "prod"}})

        def labels() -> Mapping[str, str]:
            info = cache.peek(before)
            return info.labels if isinstance(info, NamespaceInfo) else {}

        wait_until(lambda: "env" in labels(), SECONDS, "the changed labels")
        assert cache.lookup(before) == NamespaceInfo(
            {PREFIX + "prestop-seconds": "7"},
            {"team": "shop", "env": "prod", "kubernetes.io/metadata.name": before},
        )
        after = unique_name("labels-later")
        e2e.kube.create_namespace(name=after, labels={"team": "batch"})
        found = cache.lookup(after)  # from the watch, or one live read if it lags
        assert found is not None and found.labels["team"] == "batch"
    finally:
        assert cache.informer.stop()


def test_the_writes_later_features_need_work_against_the_real_api_server(
    e2e: E2E, api: ApiServer
) -> None:
    """A Lease created and renewed (a stale renewal is a Conflict), and a rollout restart
    as `kubectl rollout restart` patches it."""
    namespace = e2e.kube.create_namespace("writes")
    leases = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
    lease = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "reporter"},
        "spec": {"holderIdentity": "replica-a", "leaseDurationSeconds": 15},
    }
    created = api.create(leases, lease)
    with pytest.raises(ApiError) as taken:
        api.create(leases, lease)
    assert (taken.value.status, taken.value.reason) == (409, "AlreadyExists")
    renewed = api.replace(f"{leases}/reporter", created | {"spec": {"holderIdentity": "b"}})
    assert renewed["spec"]["holderIdentity"] == "b"
    with pytest.raises(ApiError) as stale:
        api.replace(f"{leases}/reporter", created)  # the resourceVersion it read is gone
    assert (stale.value.status, stale.value.reason) == (409, "Conflict")

    deployments = f"/apis/apps/v1/namespaces/{namespace}/deployments"
    labels = {"app": "web"}
    template = {
        "metadata": {"labels": labels},
        "spec": {"containers": [{"name": "app", "image": "a:1"}]},
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": labels}, "template": template},
    }
    api.create(deployments, deployment)
    restart = {"kubectl.kubernetes.io/restartedAt": "2026-12-04T20:00:00Z"}
    patched = api.patch(
        f"{deployments}/web", {"spec": {"template": {"metadata": {"annotations": restart}}}}
    )
    assert patched["spec"]["template"]["metadata"]["annotations"] == restart
    assert patched["spec"]["template"]["spec"]["containers"][0]["image"] == "a:1"
    with pytest.raises(ApiError) as missing:
        api.patch(f"{deployments}/nope", {"spec": {}}, "merge")
    assert (missing.value.status, missing.value.reason) == (404, "NotFound")
