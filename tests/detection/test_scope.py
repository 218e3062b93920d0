"""The webhook's scope as the chart renders it per mode, and as a live configuration has it."""

import pytest

from webhook.detection.scope import ScopeError, chart_scope, configuration_scope

INJECT = "lifecycle-webhook.io/inject"


def ns(name, **labels):
    return {"kubernetes.io/metadata.name": name, **labels}


def pod(**labels):
    return {"metadata": {"labels": labels}}


def test_namespace_mode_takes_enabled_namespaces_and_single_opted_in_pods():
    scope = chart_scope("namespace", ["monitoring"], "lifecycle-system")
    enabled = ns("shop", **{INJECT: "enabled"})
    assert scope.pod_in_scope(enabled, pod())
    assert not scope.pod_in_scope(enabled, pod(**{INJECT: "false"}))
    assert not scope.pod_in_scope(ns("plain"), pod())
    assert scope.pod_in_scope(ns("plain"), pod(**{INJECT: "true"}))
    assert not scope.pod_in_scope(ns("off", **{INJECT: "disabled"}), pod(**{INJECT: "true"}))
    for excluded in ("kube-system", "monitoring", "lifecycle-system"):
        assert not scope.namespace_in_scope(ns(excluded, **{INJECT: "enabled"})), excluded


def test_cluster_mode_takes_every_namespace_not_disabled():
    scope = chart_scope("cluster", [], None)
    assert scope.pod_in_scope(ns("plain"), pod())
    assert not scope.pod_in_scope(ns("off", **{INJECT: "disabled"}), pod())
    assert not scope.pod_in_scope(ns("plain"), pod(**{INJECT: "false"}))
    assert not scope.namespace_in_scope(ns("kube-public"))


def test_a_configuration_entry_without_selectors_matches_everything():
    configuration = {
        "webhooks": [
            {
                "name": "a.example.io",
                "rules": [{"apiGroups": [""], "resources": ["pods"], "operations": ["CREATE"]}],
                "clientConfig": {"service": {"name": "w", "namespace": "hooks"}},
            },
            {
                "name": "other.example.io",
                "rules": [
                    {"apiGroups": ["apps"], "resources": ["deployments"], "operations": ["*"]}
                ],
                "namespaceSelector": {"matchLabels": {"never": "x"}},
            },
        ]
    }
    scope = configuration_scope(configuration)
    assert scope.names == ("a.example.io",)
    assert scope.webhook_namespace == "hooks"
    assert scope.pod_in_scope(ns("anything"), pod())


@pytest.mark.parametrize(
    ("configuration", "message"),
    [
        ({}, "no webhooks"),
        ({"webhooks": [{"rules": []}]}, "pod CREATE"),
        (
            {
                "webhooks": [
                    {
                        "rules": [{"apiGroups": ["*"], "resources": ["*"], "operations": ["*"]}],
                        "objectSelector": {"matchExpressions": [{"key": "a", "operator": "Near"}]},
                    }
                ]
            },
            "webhooks[0].objectSelector.matchExpressions[0].operator",
        ),
    ],
)
def test_unreadable_configurations_are_refused(configuration, message):
    with pytest.raises(ScopeError, match=message.replace("[", r"\[").replace("]", r"\]")):
        configuration_scope(configuration)


def test_an_unknown_mode_is_refused():
    with pytest.raises(ScopeError, match="mode"):
        chart_scope("everywhere", [], None)
