"""The webhook is down: the chart's failurePolicy decides. Ignore -> pods are created
unmutated within the webhook timeout; Fail -> rejected with an error naming the webhook."""

from __future__ import annotations

import time

import pytest

from .kube import INJECT, ApiError, is_mutated, make_pod, unique_name
from .session import E2E
from .webhooks import Target, WebhookSetup

pytestmark = pytest.mark.e2e

SLACK_SECONDS = 5
"""Scheduling noise on 2 shared cores on top of the webhook's own timeoutSeconds."""


def timeout_seconds(e2e: E2E) -> int:
    configuration = e2e.registration.configuration
    assert configuration is not None
    values = {int(hook.get("timeoutSeconds", 10)) for hook in configuration["webhooks"]}
    assert len(values) == 1, values
    return values.pop()


@pytest.mark.parametrize("target", ["refused", "blackhole"])
def test_ignore_creates_unmutated_pods_within_the_timeout(e2e: E2E, target: Target) -> None:
    e2e.use(WebhookSetup(failure_policy="Ignore", target=target))
    namespace = e2e.kube.create_namespace(labels={INJECT: "enabled"})
    limit = timeout_seconds(e2e) + SLACK_SECONDS

    started = time.monotonic()
    stored = e2e.kube.create_and_read_pod(namespace, make_pod(unique_name("down")))
    elapsed = time.monotonic() - started

    assert not is_mutated(stored)
    assert elapsed < limit, (
        f"create took {elapsed:.1f}s, webhook timeout is {timeout_seconds(e2e)}s"
    )


@pytest.mark.parametrize("target", ["refused", "blackhole"])
def test_fail_rejects_pods_with_a_clear_error(e2e: E2E, target: Target) -> None:
    e2e.use(WebhookSetup(failure_policy="Fail", target=target))
    namespace = e2e.kube.create_namespace(labels={INJECT: "enabled"})
    name = unique_name("down")
    limit = timeout_seconds(e2e) + SLACK_SECONDS

    started = time.monotonic()
    with pytest.raises(ApiError) as rejected:
        e2e.kube.create_pod(namespace, make_pod(name))
    elapsed = time.monotonic() - started

    message = rejected.value.message
    hook_names = {hook["name"] for hook in (e2e.registration.configuration or {})["webhooks"]}
    assert "failed calling webhook" in message, message
    assert any(f'"{hook}"' in message for hook in hook_names), (hook_names, message)
    assert elapsed < limit
    with pytest.raises(ApiError) as missing:
        e2e.kube.get_pod(namespace, name)
    assert missing.value.code == 404
