"""Settings from pod and namespace annotations, the namespace ones read through the webhook's
watch-backed cache of the real API server."""

from __future__ import annotations

import json

import pytest

from webhook.core.model import PREFIX, STATUS_KEY

from .kube import INJECT, make_pod, pre_stop, unique_name
from .procs import wait_until
from .session import E2E

pytestmark = pytest.mark.e2e

CACHE_TIMEOUT_SECONDS = 10


def test_pod_annotations_tune_prestop_grace_and_init_order(
    namespace_mode: E2E, injected_namespace: str
) -> None:
    pod = make_pod(
        unique_name("tuned"),
        containers=[
            {"name": "app", "image": "registry.invalid/app:1"},
            {"name": "proxy", "image": "registry.invalid/proxy:1"},
        ],
        annotations={
            PREFIX + "prestop-seconds": "10",
            PREFIX + "shutdown-seconds": "40",
            PREFIX + "sidecars": "proxy",
            PREFIX + "init-order": "migrate",
        },
        initContainers=[
            {"name": "setup", "image": "registry.invalid/setup:1"},
            {"name": "migrate", "image": "registry.invalid/migrate:1"},
        ],
    )
    stored = namespace_mode.kube.create_and_read_pod(injected_namespace, pod)

    assert pre_stop(stored, "app") == {"sleep": {"seconds": 10}}
    assert pre_stop(stored, "proxy") == {"sleep": {"seconds": 50}}  # P + S: outlives the app
    assert stored["spec"]["terminationGracePeriodSeconds"] == 55  # proxy 50 + its own 5
    assert [c["name"] for c in stored["spec"]["initContainers"]] == ["migrate", "setup"]
    # the ServiceAccount plugin ran before us; the reordered init containers kept its mounts
    for init in stored["spec"]["initContainers"]:
        assert any(m["name"].startswith("kube-api-access-") for m in init["volumeMounts"])
    status = json.loads(stored["metadata"]["annotations"][STATUS_KEY])
    assert isinstance(status, dict)


def test_exec_handler_and_users_own_hooks_are_kept(
    namespace_mode: E2E, injected_namespace: str
) -> None:
    own = {"exec": {"command": ["/bin/drain", "--wait"]}}
    pod = make_pod(
        unique_name("exec"),
        containers=[
            {"name": "app", "image": "registry.invalid/app:1"},
            {"name": "own", "image": "registry.invalid/own:1", "lifecycle": {"preStop": own}},
        ],
        annotations={PREFIX + "prestop": "exec", PREFIX + "prestop-seconds": "7"},
    )
    stored = namespace_mode.kube.create_and_read_pod(injected_namespace, pod)
    assert pre_stop(stored, "app") == {"exec": {"command": ["sleep", "7"]}}
    assert pre_stop(stored, "own") == own


def test_namespace_annotation_defaults_follow_changes(namespace_mode: E2E) -> None:
    kube = namespace_mode.kube
    key = PREFIX + "prestop-seconds"
    namespace = kube.create_namespace(labels={INJECT: "enabled"}, annotations={key: "12"})

    stored = kube.create_and_read_pod(namespace, make_pod(unique_name("ns")))
    assert pre_stop(stored, "app") == {"sleep": {"seconds": 12}}
    assert stored["spec"]["terminationGracePeriodSeconds"] == 37  # 12 + 25

    pod_wins = make_pod(unique_name("pod"), annotations={key: "3"})
    stored = kube.create_and_read_pod(namespace, pod_wins)
    assert pre_stop(stored, "app") == {"sleep": {"seconds": 3}}
    assert stored["spec"]["terminationGracePeriodSeconds"] == 30  # never lowered

    def next_pod_sleeps(seconds: int | None) -> bool:
        answer = kube.create_pod(namespace, make_pod(unique_name("probe")), dry_run=True).body
        hook = pre_stop(answer, "app")
        return bool((hook or {}).get("sleep", {}).get("seconds") == seconds)

    kube.patch_namespace(namespace, {"annotations": {key: "20"}})
    lag = wait_until(lambda: next_pod_sleeps(20), CACHE_TIMEOUT_SECONDS, "namespace change seen")
    stored = kube.create_and_read_pod(namespace, make_pod(unique_name("after")))
    assert pre_stop(stored, "app") == {"sleep": {"seconds": 20}}
    assert stored["spec"]["terminationGracePeriodSeconds"] == 45
    namespace_mode.timings.setdefault("namespace annotation change seen by webhook", lag)

    kube.patch_namespace(namespace, {"annotations": {key: None}})
    wait_until(
        lambda: next_pod_sleeps(5), CACHE_TIMEOUT_SECONDS, "namespace annotation removal seen"
    )
