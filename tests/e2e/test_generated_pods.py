"""Generated pods through the real API server, with `failurePolicy: Fail`.

A patch the API server cannot apply fails the pod's creation even under `Ignore`; here any
such patch fails the test. For each pod the generator draws (tests/core/oracle.py, the same
generator as the core's property tests): if the API server accepts the pod on its own (a
dry run in a namespace the webhook never sees), it must also accept it through the webhook,
and what it stores must be the pod SPEC §4 intends (the oracle's pod, dry-run created with the
same API defaults), apart from the status annotation.
"""

from __future__ import annotations

import copy
import itertools

import pytest
from hypothesis import HealthCheck, assume, given, settings

from webhook.core import Settings, apply_patch, mutate
from webhook.core.model import STATUS_KEY

from ..core.oracle import intended_pod, scenarios
from ..hostile import plausible_pods
from .kube import INJECT, ApiError, Obj
from .session import E2E
from .test_golden import normalized
from .webhooks import WebhookSetup

pytestmark = pytest.mark.e2e

SERVER_VERSION = (1, 34)
"""The version hack/build-test-tools.sh builds; the webhook reads it from /version."""
_names = itertools.count()


@pytest.fixture(scope="module")
def namespaces(e2e: E2E) -> tuple[E2E, str, str]:
    e2e.use(WebhookSetup(mode="namespace"))
    injected = e2e.kube.create_namespace("generated", labels={INJECT: "enabled"})
    plain = e2e.kube.create_namespace("generated-plain", labels={INJECT: "disabled"})
    return e2e, injected, plain


def named(pod: Obj, name: str) -> Obj:
    pod = copy.deepcopy(pod)
    metadata = pod["metadata"]
    metadata.pop("generateName", None)
    metadata.pop("namespace", None)
    metadata["name"] = name
    annotations = metadata.get("annotations")
    if annotations is not None:
        # `~` is not allowed in a real annotation key; the core's tests cover its escaping.
        annotations.pop("example.com/a~b/c", None)
    return pod


def through_the_webhook(e2e: E2E, injected: str, plain: str, pod: Obj) -> Obj:
    """Create `pod` through the webhook (failurePolicy Fail) if the API server accepts it
    alone (else the example is discarded); returns what the API server stored."""
    try:
        e2e.kube.create_pod(plain, pod, dry_run=True)
    except ApiError:
        assume(False)  # invalid without the webhook (a user sleep above the grace period, ...)
    try:
        e2e.kube.create_pod(injected, pod)
    except ApiError as exc:
        pytest.fail(f"a pod the API server accepts alone was rejected through the webhook: {exc}")
    stored: Obj = e2e.kube.get_pod(injected, pod["metadata"]["name"])
    return stored


def generated(count: int) -> settings:
    return settings(
        max_examples=count,
        deadline=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.filter_too_much,
        ],
    )


@generated(100)
@given(scenario=scenarios())
def test_generated_pods_are_admitted_and_stored_as_intended(
    namespaces: tuple[E2E, str, str], scenario: tuple[Obj, dict[str, object], object]
) -> None:
    e2e, injected, plain = namespaces
    pod, intended, _ = scenario
    pod = named(pod, f"gen-{next(_names)}")
    stored = through_the_webhook(e2e, injected, plain, pod)
    status = (stored["metadata"].get("annotations") or {}).pop(STATUS_KEY, None)
    if status is not None and not stored["metadata"]["annotations"]:
        del stored["metadata"]["annotations"]

    expected = e2e.kube.create_pod(
        plain, intended_pod(pod, intended, SERVER_VERSION), dry_run=True
    ).body
    assert normalized(stored) == normalized(expected)


@generated(60)
@given(pod=plausible_pods())
def test_hostile_tuning_never_makes_an_acceptable_pod_fail(
    namespaces: tuple[E2E, str, str], pod: Obj
) -> None:
    """A sample of tests/hostile.py's pods (any value in every annotation of ours, hooks and
    grace periods at the edges, 40 containers) under failurePolicy Fail: if the API server takes
    the pod alone, it takes it through the webhook, and stores the patch's additions."""
    e2e, injected, plain = namespaces
    pod = named(pod, f"hostile-{next(_names)}")
    stored = through_the_webhook(e2e, injected, plain, pod)
    # What the API server stored is the pod with exactly the webhook's patch applied.
    mutation = mutate(
        pod, Settings(namespace=injected, namespace_annotations={}, cluster_version=SERVER_VERSION)
    )
    expected = e2e.kube.create_pod(plain, apply_patch(pod, mutation.ops), dry_run=True).body
    assert normalized(stored) == normalized(expected)
