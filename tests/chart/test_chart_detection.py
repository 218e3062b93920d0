"""What the chart renders for pods that missed the webhook: the ValidatingAdmissionPolicy and
its bindings scoped like the webhook, the optional PrometheusRule, and the scope `check`
assumes for a mode (webhook.detection.scope) agreeing with the rendered configuration."""

from __future__ import annotations

import itertools
import re

import pytest

from webhook.core.model import DEFAULT_EXCLUDED_NAMESPACES, INJECT_KEY, STATUS_KEY
from webhook.detection.scope import chart_scope, configuration_scope

from .conftest import NAMESPACE, Render, all_of, only

MODES = ("namespace", "cluster")
NS_LABELS = (None, "enabled", "disabled", "true", "other")
POD_LABELS = (None, "true", "false", "other")


def labelled(name: str, value: str | None) -> dict[str, str]:
    labels = {"kubernetes.io/metadata.name": name}
    if value is not None:
        labels[INJECT_KEY] = value
    return labels


@pytest.mark.parametrize("mode", MODES)
def test_check_assumes_the_scope_the_chart_renders(render: Render, mode: str) -> None:
    documents = render({"mode": mode, "excludedNamespaces": ["istio-system"]})
    rendered = configuration_scope(only(documents, "MutatingWebhookConfiguration"))
    assumed = chart_scope(mode, ["istio-system"], NAMESPACE)
    assert rendered.names == assumed.names
    namespaces = ("apps", "istio-system", NAMESPACE, *DEFAULT_EXCLUDED_NAMESPACES)
    for name, ns_label, pod_label in itertools.product(namespaces, NS_LABELS, POD_LABELS):
        ns = labelled(name, ns_label)
        pod = {"metadata": {"labels": labelled("", pod_label)}}
        assert rendered.pod_in_scope(ns, pod) == assumed.pod_in_scope(ns, pod), (ns, pod)


@pytest.mark.parametrize("mode", MODES)
def test_policy_bindings_use_the_webhook_entries_selectors(render: Render, mode: str) -> None:
    documents = render({"mode": mode})
    (policy,) = all_of(documents, "ValidatingAdmissionPolicy")
    bindings = all_of(documents, "ValidatingAdmissionPolicyBinding")
    hooks = only(documents, "MutatingWebhookConfiguration")["webhooks"]
    assert policy["apiVersion"] == "admissionregistration.k8s.io/v1"
    assert policy["spec"]["failurePolicy"] == "Ignore"
    assert policy["spec"]["matchConstraints"]["resourceRules"] == [
        {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}
    ]
    assert len(bindings) == len(hooks)
    for binding, hook in zip(bindings, hooks, strict=True):
        spec = binding["spec"]
        assert spec["policyName"] == policy["metadata"]["name"]
        assert spec["validationActions"] == ["Warn", "Audit"], "never denies a pod"
        assert spec["matchResources"] == {
            "namespaceSelector": hook["namespaceSelector"],
            "objectSelector": hook["objectSelector"],
        }
    (validation,) = policy["spec"]["validations"]
    assert STATUS_KEY in validation["expression"]
    assert "preStop" in validation["expression"]
    assert validation["message"].startswith(
        "created without lifecycle-webhook (webhook unavailable?)"
    )


def test_policy_can_be_turned_off(render: Render) -> None:
    documents = render({"admissionPolicy.enabled": False})
    assert all_of(documents, "ValidatingAdmissionPolicy") == []
    assert all_of(documents, "ValidatingAdmissionPolicyBinding") == []


@pytest.mark.parametrize(("jobs", "skipped"), [(None, True), ("skip", True), ("inject", False)])
def test_run_to_completion_pods_are_skipped_unless_jobs_are_injected(
    render: Render, jobs: str | None, skipped: bool
) -> None:
    values = {} if jobs is None else {"config": {"jobs": jobs}}
    (policy,) = all_of(render(values), "ValidatingAdmissionPolicy")
    names = [condition["name"] for condition in policy["spec"]["matchConditions"]]
    assert ("skip-run-to-completion-pods" in names) == skipped
    assert "skip-mirror-pods" in names


def test_prometheus_rule_is_off_by_default(render: Render) -> None:
    assert all_of(render({}), "PrometheusRule") == []


@pytest.mark.parametrize("mode", MODES)
def test_prometheus_rule_alerts_on_unprotected_pods_and_this_webhooks_fail_open(
    render: Render, mode: str
) -> None:
    documents = render(
        {
            "mode": mode,
            "metrics.prometheusRule.enabled": True,
            "metrics.prometheusRule.labels": {"release": "prom"},
        }
    )
    rule = only(documents, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["namespace"] == NAMESPACE
    assert rule["metadata"]["labels"]["release"] == "prom"
    alerts = {r["alert"]: r for group in rule["spec"]["groups"] for r in group["rules"]}
    unprotected = alerts["LifecycleWebhookUnprotectedPods"]
    assert "lifecycle_webhook_unprotected_pods" in unprotected["expr"]
    assert unprotected["expr"].endswith("> 0") and unprotected["for"] == "15m"
    failed_open = alerts["LifecycleWebhookFailedOpen"]["expr"]
    assert "apiserver_admission_webhook_fail_open_count" in failed_open
    (quoted,) = re.findall(r'name=~"([^"]*)"', failed_open)
    pattern = quoted.encode().decode("unicode_escape")  # PromQL's string escapes
    hooks = only(documents, "MutatingWebhookConfiguration")["webhooks"]
    for hook in hooks:
        assert re.fullmatch(pattern, hook["name"]), (pattern, hook["name"])
    assert not re.fullmatch(pattern, "namespace-opt-inXpods.lifecycle-webhook.io"), "dots escaped"
    assert not re.fullmatch(pattern, "other.example.io")
