"""Profiles through the real API server: the webhook's Service watch decides exposure as
Services are created after the namespace, change their selector and are deleted; namespace
labels and a Deployment's pod (owned by its ReplicaSet) choose profiles as documented."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from webhook.core.model import STATUS_KEY
from webhook.core.traffic import TARGET_GROUP_ATTRIBUTES

from .kube import INJECT, Obj, make_pod, pre_stop, unique_name
from .procs import wait_until
from .server import DEFAULT_CONFIG
from .session import E2E

pytestmark = pytest.mark.e2e

SECONDS = 20
PROFILES = {
    "profiles": [
        {
            "name": "ambient",
            "match": {"namespaceSelector": {"matchLabels": {"istio.io/dataplane-mode": "ambient"}}},
            "settings": {"prestopSeconds": 15, "shutdownSeconds": 30},
        },
        {"name": "deployments", "match": {"ownerKind": "Deployment", "exposure": "cluster"}},
        {"name": "not-exposed", "match": {"exposure": "none"}, "settings": {"prestopSeconds": 0}},
        {
            "name": "nlb",
            "match": {"exposure": "loadBalancer"},
            "settings": {"prestopSeconds": "fromLoadBalancer or 20", "shutdownSeconds": 30},
        },
    ]
}


@pytest.fixture
def profiles(namespace_mode: E2E) -> Iterator[E2E]:
    namespace_mode.server.set_config(yaml.safe_dump(PROFILES))
    yield namespace_mode
    namespace_mode.server.set_config(DEFAULT_CONFIG)


def service(name: str, kind: str, selector: dict[str, str], **annotations: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"type": kind, "selector": selector, "ports": [{"port": 80}]},
    }


def decision(e2e: E2E, namespace: str, **pod: Any) -> tuple[str | None, Obj | None]:
    """The profile and app's preStop a dry-run pod labelled app=web gets now."""
    answer = e2e.kube.create_pod(
        namespace, make_pod(unique_name("probe"), labels={"app": "web"}, **pod), dry_run=True
    ).body
    status = json.loads(answer["metadata"]["annotations"][STATUS_KEY])
    return status.get("profile"), pre_stop(answer, "app")


def settles(e2e: E2E, namespace: str, profile: str | None, sleep: int, what: str) -> None:
    wait_until(
        lambda: decision(e2e, namespace) == (profile, {"sleep": {"seconds": sleep}}),
        SECONDS,
        what,
        interval=0.2,
    )


def test_exposure_follows_services_created_changed_and_deleted(profiles: E2E) -> None:
    kube = profiles.kube
    namespace = kube.create_namespace("exposure", labels={INJECT: "enabled"})
    collection = f"/api/v1/namespaces/{namespace}/services"
    settles(profiles, namespace, "not-exposed", 0, "no Service: exposure none")

    delay = "deregistration_delay.timeout_seconds=45"
    kube.request("POST", collection, service("edge", "LoadBalancer", {"app": "web"}))
    settles(profiles, namespace, "nlb", 20, "a LoadBalancer Service created after the namespace")
    kube.request(
        "PATCH",
        f"{collection}/edge",
        {"metadata": {"annotations": {TARGET_GROUP_ATTRIBUTES: delay}}},
        content_type="application/merge-patch+json",
    )
    settles(profiles, namespace, "nlb", 45, "the deregistration delay it states")
    stored = kube.create_and_read_pod(
        namespace, make_pod(unique_name("web"), labels={"app": "web"})
    )
    assert stored["spec"]["terminationGracePeriodSeconds"] == 75

    kube.request(
        "PATCH",
        f"{collection}/edge",
        {"spec": {"selector": {"app": "api"}}},
        content_type="application/merge-patch+json",
    )
    settles(profiles, namespace, "not-exposed", 0, "a selector that no longer selects the pod")
    kube.request(
        "PATCH",
        f"{collection}/edge",
        {"spec": {"selector": {"app": "web"}}},
        content_type="application/merge-patch+json",
    )
    settles(profiles, namespace, "nlb", 45, "the selector back")
    kube.request("DELETE", f"{collection}/edge")
    settles(profiles, namespace, "not-exposed", 0, "the Service deleted")


def test_namespace_labels_choose_a_profile(profiles: E2E) -> None:
    namespace = profiles.kube.create_namespace(
        "ambient", labels={INJECT: "enabled", "istio.io/dataplane-mode": "ambient"}
    )
    settles(profiles, namespace, "ambient", 15, "the ambient namespace's profile")


def test_a_deployments_pod_is_owned_by_a_deployment(profiles: E2E) -> None:
    kube = profiles.kube
    namespace = kube.create_namespace("owner", labels={INJECT: "enabled"})
    kube.request(
        "POST",
        f"/api/v1/namespaces/{namespace}/services",
        service("web", "ClusterIP", {"app": "web"}),
    )
    owned = {
        "ownerReferences": [
            {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": "web-7d9c5b6f4",
                "uid": "00000000-0000-4000-8000-000000000002",
                "controller": True,
            }
        ]
    }

    def profile_of(labels: dict[str, str]) -> str | None:
        pod = make_pod(unique_name("web"), labels=labels)
        pod["metadata"].update(owned)
        answer = kube.create_pod(namespace, pod, dry_run=True).body
        profile = json.loads(answer["metadata"]["annotations"][STATUS_KEY]).get("profile")
        return str(profile) if profile is not None else None

    wait_until(
        lambda: profile_of({"app": "web", "pod-template-hash": "7d9c5b6f4"}) == "deployments",
        SECONDS,
        "the Deployment's pod to match ownerKind Deployment",
    )
    assert profile_of({"app": "web"}) is None, "a bare ReplicaSet's pod is no Deployment's"
