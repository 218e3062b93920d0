"""A webhook called after ours caps the grace period (Kyverno's policy library caps it at 50 s);
with `failurePolicy: Fail` on both, every pod must still be created and valid. The API server
rejects a preStop sleep above the grace period (422), so the reinvocation round
(`reinvocationPolicy: IfNeeded`, the chart's) must shorten our sleeps and keep the cap."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from webhook.core.model import STATUS_KEY

from .adder import CAP_LABEL, CAPPER_CONFIGURATION_NAME, CapperWebhook
from .kube import INJECT, ApiError, Obj, make_pod, pre_stop, unique_name
from .procs import wait_until
from .session import E2E

pytestmark = pytest.mark.e2e

P = "lifecycle-webhook.io/"


@pytest.fixture
def capped(namespace_mode: E2E, tmp_path: Path) -> Iterator[dict[int, str]]:
    """Namespaces whose pods are capped at 50 and at 3 seconds, by cap."""
    kube = namespace_mode.kube
    capper = CapperWebhook(tmp_path, namespace_mode.plane.ca, caps=(50, 3))
    try:
        kube.apply_mutating_webhook_configuration(capper.configuration())
        namespaces = {
            cap: kube.create_namespace(labels={INJECT: "enabled", CAP_LABEL: str(cap)})
            for cap in capper.caps
        }

        def capper_active() -> bool:
            probe = make_pod(unique_name("probe"), terminationGracePeriodSeconds=600)
            answer = kube.create_pod(namespaces[50], probe, dry_run=True).body
            return bool(answer["spec"]["terminationGracePeriodSeconds"] == 50)

        wait_until(capper_active, 30, "the capping webhook to take effect")
        yield namespaces
    finally:
        kube.delete_mutating_webhook_configuration(CAPPER_CONFIGURATION_NAME)
        capper.close()


def status(pod: Obj) -> Obj:
    return dict(json.loads(pod["metadata"]["annotations"][STATUS_KEY]))


def assert_valid(pod: Obj) -> None:
    grace = pod["spec"]["terminationGracePeriodSeconds"]
    for container in pod["spec"]["containers"]:
        for hook in (container.get("lifecycle") or {}).values():
            if "sleep" in hook:
                assert hook["sleep"]["seconds"] <= grace, (container["name"], grace)


def test_cap_at_50_shortens_only_the_sleep_that_does_not_fit(
    namespace_mode: E2E, capped: dict[int, str]
) -> None:
    pod = make_pod(
        unique_name("nlb"),
        containers=[
            {"name": "app", "image": "registry.invalid/app:1"},
            {"name": "envoy", "image": "registry.invalid/envoy:1"},
        ],
        annotations={
            P + "prestop-seconds": "20",
            P + "shutdown-seconds": "30",
            P + "sidecars": "envoy",
        },
    )
    stored = namespace_mode.kube.create_and_read_pod(capped[50], pod)
    # Round 1 sets 55 (envoy 50 + 5); the cap makes it 50; round 2 keeps 50 and fits envoy.
    assert stored["spec"]["terminationGracePeriodSeconds"] == 50
    assert pre_stop(stored, "app") == {"sleep": {"seconds": 20}}
    assert pre_stop(stored, "envoy") == {"sleep": {"seconds": 45}}
    assert status(stored)["ceiling"] == {"seconds": 50, "source": "webhook"}
    assert_valid(stored)


def test_cap_at_3_below_our_sleep_still_creates_a_valid_pod(
    namespace_mode: E2E, capped: dict[int, str]
) -> None:
    created = namespace_mode.kube.create_pod(capped[3], make_pod(unique_name("tight")))
    stored = namespace_mode.kube.get_pod(capped[3], created.body["metadata"]["name"])
    assert stored["spec"]["terminationGracePeriodSeconds"] == 3
    assert pre_stop(stored, "app") == {"sleep": {"seconds": 0}}
    assert_valid(stored)
    assert (
        "lifecycle-webhook: grace period capped at 3s (set by a later webhook), 30s needed; "
        "sleeps cut: app 5->0"
    ) in created.warnings


def test_without_reinvocation_the_api_server_rejects_the_capped_pod(
    namespace_mode: E2E, capped: dict[int, str]
) -> None:
    """The control: our first round alone leaves sleep 5 over a grace period of 3."""
    kube = namespace_mode.kube
    assert namespace_mode.registration.configuration is not None
    never = copy.deepcopy(namespace_mode.registration.configuration)
    for hook in never["webhooks"]:
        hook["reinvocationPolicy"] = "Never"
    namespace_mode.registration.apply_unmanaged(never)

    def rejected() -> bool:
        try:
            kube.create_pod(capped[3], make_pod(unique_name("probe")), dry_run=True)
        except ApiError as error:
            return error.code == 422
        return False

    wait_until(rejected, 30, "reinvocationPolicy Never to take effect")
    with pytest.raises(ApiError) as caught:
        kube.create_pod(capped[3], make_pod(unique_name("never")))
    assert caught.value.code == 422
    assert "preStop.sleep: Invalid value: 5" in caught.value.message
