"""Who is mutated, decided by the chart's selectors as the real API server evaluates them."""

from __future__ import annotations

import pytest

from .kube import INJECT, Kube, Obj, is_mutated, make_pod, pre_stop, unique_name
from .server import RELEASE_NAMESPACE
from .session import E2E

pytestmark = pytest.mark.e2e

DEFAULT_PRESTOP = {"sleep": {"seconds": 5}}


def create(kube: Kube, namespace: str, labels: dict[str, str] | None = None) -> Obj:
    return kube.create_and_read_pod(namespace, make_pod(unique_name("pod"), labels=labels))


def labelled_kube_system(kube: Kube) -> None:
    kube.ensure_service_account("kube-system", "default")
    kube.patch_namespace("kube-system", {"labels": {INJECT: "enabled"}})


def test_namespace_mode_injects_labelled_namespaces_and_opted_in_pods(namespace_mode: E2E) -> None:
    kube = namespace_mode.kube
    enabled = kube.create_namespace(labels={INJECT: "enabled"})
    plain = kube.create_namespace()
    disabled = kube.create_namespace(labels={INJECT: "disabled"})

    stored = create(kube, enabled)
    assert is_mutated(stored)
    assert pre_stop(stored, "app") == DEFAULT_PRESTOP

    assert not is_mutated(stored := create(kube, plain))
    assert pre_stop(stored, "app") is None

    opted_in = create(kube, plain, labels={INJECT: "true"})
    assert is_mutated(opted_in)
    assert pre_stop(opted_in, "app") == DEFAULT_PRESTOP

    assert not is_mutated(create(kube, disabled))
    assert not is_mutated(create(kube, disabled, labels={INJECT: "true"}))
    assert not is_mutated(create(kube, enabled, labels={INJECT: "false"}))


def test_namespace_mode_never_touches_kube_system_or_the_release_namespace(
    namespace_mode: E2E,
) -> None:
    kube = namespace_mode.kube
    labelled_kube_system(kube)
    try:
        assert not is_mutated(create(kube, "kube-system"))
        assert not is_mutated(create(kube, "kube-system", labels={INJECT: "true"}))
    finally:
        kube.patch_namespace("kube-system", {"labels": {INJECT: None}})
    # the release namespace is labelled `enabled` by the session: only the chart excludes it
    assert not is_mutated(create(kube, RELEASE_NAMESPACE))
    assert not is_mutated(create(kube, RELEASE_NAMESPACE, labels={INJECT: "true"}))


def test_cluster_mode_injects_everything_but_excluded_and_disabled(cluster_mode: E2E) -> None:
    kube = cluster_mode.kube
    plain = kube.create_namespace()
    enabled = kube.create_namespace(labels={INJECT: "enabled"})
    disabled = kube.create_namespace(labels={INJECT: "disabled"})

    for namespace in (plain, enabled):
        stored = create(kube, namespace)
        assert is_mutated(stored), namespace
        assert pre_stop(stored, "app") == DEFAULT_PRESTOP

    assert not is_mutated(create(kube, disabled))
    assert not is_mutated(create(kube, plain, labels={INJECT: "false"}))
    assert not is_mutated(create(kube, RELEASE_NAMESPACE))
    for system in ("kube-system", "kube-public", "kube-node-lease"):
        kube.ensure_service_account(system, "default")
        assert not is_mutated(create(kube, system)), system
