"""The chart's ValidatingAdmissionPolicy on the real API server (v1.34, VAP GA): the client is
warned when a pod in scope is created while the webhook fails open, and not when the webhook
mutated it (validating admission runs after every mutating webhook) or the pod is out of
scope."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from webhook.core.model import PREFIX

from .kube import INJECT, ApiError, Kube, Obj, is_mutated, make_pod, unique_name
from .procs import wait_until
from .session import E2E
from .webhooks import WebhookSetup, render_chart

pytestmark = pytest.mark.e2e

WARNING = "created without lifecycle-webhook (webhook unavailable?)"
DOWN = WebhookSetup(failure_policy="Ignore", target="refused")
UP = WebhookSetup(failure_policy="Ignore")
GROUP = "/apis/admissionregistration.k8s.io/v1"
PATHS = {
    "ValidatingAdmissionPolicy": f"{GROUP}/validatingadmissionpolicies",
    "ValidatingAdmissionPolicyBinding": f"{GROUP}/validatingadmissionpolicybindings",
}


def warned(warnings: list[str]) -> bool:
    return any(WARNING in warning for warning in warnings)


def create_warnings(kube: Kube, namespace: str, pod: Obj, dry_run: bool = False) -> list[str]:
    warnings = kube.create_pod(namespace, pod, dry_run=dry_run).warnings
    assert not [w for w in warnings if "resulted in error" in w], "the policy's CEL must not fail"
    return warnings


@pytest.fixture
def policy(e2e: E2E) -> Iterator[list[Obj]]:
    """The chart's policy and bindings (namespace mode), removed again after the test."""
    documents = render_chart(e2e.tools.helm, e2e.workdir, {"mode": "namespace"})
    objects = [doc for doc in documents if doc["kind"] in PATHS]
    assert [doc["kind"] for doc in objects] == [
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        "ValidatingAdmissionPolicyBinding",
    ]
    try:
        for obj in objects:
            e2e.kube.request("POST", PATHS[obj["kind"]], obj)
        yield objects
    finally:
        for obj in reversed(objects):
            with contextlib.suppress(ApiError):
                e2e.kube.request("DELETE", f"{PATHS[obj['kind']]}/{obj['metadata']['name']}")


def test_the_client_is_warned_when_the_webhook_failed_open(e2e: E2E, policy: list[Obj]) -> None:
    kube = e2e.kube
    e2e.use(DOWN)
    namespace = kube.create_namespace("vap", labels={INJECT: "enabled"})
    wait_until(
        lambda: warned(create_warnings(kube, namespace, make_pod("probe"), dry_run=True)),
        30,
        "the admission policy to take effect",
        interval=0.3,
    )
    created = kube.create_pod(namespace, make_pod(unique_name("missed")))
    assert not is_mutated(created.body)
    assert created.warnings == [
        f"Validation failed for ValidatingAdmissionPolicy '{policy[0]['metadata']['name']}' "
        f"with binding '{policy[1]['metadata']['name']}': {policy[0]['spec']['validations'][0]['message']}"
    ]
    assert created.warnings[0].endswith(
        "created without lifecycle-webhook (webhook unavailable?): a container has no preStop "
        "hook; run `lifecycle-webhook check` and restart the pod's workload once the webhook is back"
    )

    hooked: Obj = {
        "name": "app",
        "image": "registry.invalid/app:1",
        "lifecycle": {"preStop": {"sleep": {"seconds": 3}}},
    }
    plain = kube.create_namespace("vap-plain")
    for where, pod in (
        ("opted out by label", make_pod(unique_name("out"), labels={INJECT: "false"})),
        ("opted out by annotation", make_pod(unique_name("out"), annotations={INJECT: "false"})),
        ("every container has a preStop", make_pod(unique_name("own"), containers=[hooked])),
        ("runs to completion", make_pod(unique_name("job"), restartPolicy="Never")),
        ("prestop none", make_pod(unique_name("none"), annotations={PREFIX + "prestop": "none"})),
    ):
        assert not warned(create_warnings(kube, namespace, pod)), where
    assert not warned(create_warnings(kube, plain, make_pod(unique_name("plain")))), "not in scope"
    opted_out = kube.create_namespace("vap-out", labels={INJECT: "enabled"})
    kube.patch_namespace(opted_out, {"annotations": {INJECT: "false"}})
    assert not warned(create_warnings(kube, opted_out, make_pod(unique_name("out")))), "ns opt-out"
    single = make_pod(unique_name("single"), labels={INJECT: "true"})
    assert warned(create_warnings(kube, plain, single)), "a single pod opted in is in scope"

    e2e.use(UP)
    mutated = kube.create_pod(namespace, make_pod(unique_name("mutated")))
    assert is_mutated(mutated.body)
    assert not warned(mutated.warnings), mutated.warnings
