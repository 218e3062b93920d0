"""A second webhook adds a container after ours; `reinvocationPolicy: IfNeeded` (the chart's)
makes the API server call us again so that container gets its preStop too."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

import pytest

from .adder import ADDED_CONTAINER, CONFIGURATION_NAME, NAMESPACE_LABEL, AdderWebhook
from .kube import INJECT, Obj, make_pod, pre_stop, unique_name
from .procs import wait_until
from .session import E2E

pytestmark = pytest.mark.e2e


@pytest.fixture
def adder(namespace_mode: E2E, tmp_path: Path) -> Iterator[tuple[AdderWebhook, str]]:
    kube = namespace_mode.kube
    server = AdderWebhook(tmp_path, namespace_mode.plane.ca)
    try:
        kube.apply_mutating_webhook_configuration(server.configuration())
        namespace = kube.create_namespace(labels={INJECT: "enabled", NAMESPACE_LABEL: "on"})

        def adder_active() -> bool:
            answer = kube.create_pod(namespace, make_pod(unique_name("probe")), dry_run=True).body
            return ADDED_CONTAINER in names(answer)

        wait_until(adder_active, 30, "the adder webhook to take effect")
        yield server, namespace
    finally:
        kube.delete_mutating_webhook_configuration(CONFIGURATION_NAME)
        server.close()


def names(pod: Obj) -> list[str]:
    return [c["name"] for c in pod["spec"]["containers"]]


def test_container_added_after_us_gets_its_prestop(
    namespace_mode: E2E, adder: tuple[AdderWebhook, str]
) -> None:
    _, namespace = adder
    kube = namespace_mode.kube
    ours = namespace_mode.registration.configuration
    assert ours is not None
    assert {hook["reinvocationPolicy"] for hook in ours["webhooks"]} == {"IfNeeded"}

    stored = kube.create_and_read_pod(namespace, make_pod(unique_name("mesh")))
    assert names(stored) == ["app", ADDED_CONTAINER]
    assert pre_stop(stored, "app") == {"sleep": {"seconds": 5}}
    assert pre_stop(stored, ADDED_CONTAINER) == {"sleep": {"seconds": 5}}


def test_without_reinvocation_the_added_container_is_missed(
    namespace_mode: E2E, adder: tuple[AdderWebhook, str]
) -> None:
    """The control: proves the adder really runs after us, so the test above needs reinvocation."""
    _, namespace = adder
    kube = namespace_mode.kube
    assert namespace_mode.registration.configuration is not None
    never = copy.deepcopy(namespace_mode.registration.configuration)
    for hook in never["webhooks"]:
        hook["reinvocationPolicy"] = "Never"
    namespace_mode.registration.apply_unmanaged(never)

    def added_container_missed() -> bool:
        answer = kube.create_pod(namespace, make_pod(unique_name("probe")), dry_run=True).body
        return pre_stop(answer, "app") is not None and pre_stop(answer, ADDED_CONTAINER) is None

    wait_until(added_container_missed, 30, "reinvocationPolicy Never to take effect")
    stored = kube.create_and_read_pod(namespace, make_pod(unique_name("mesh")))
    assert names(stored) == ["app", ADDED_CONTAINER]
    assert pre_stop(stored, ADDED_CONTAINER) is None
