"""The chart renders valid Kubernetes objects for every supported combination of values, and
the webhook registration says exactly what SPEC sections 2 and 8 say."""

from __future__ import annotations

import base64
import itertools
import subprocess
from collections.abc import Callable, Mapping
from typing import Any

import kubernetes_validate
import pytest
import yaml

from webhook.app import ServerState, create_app
from webhook.bootstrap import add_certs_bootstrap_arguments
from webhook.certs import generate_ca, service_dns_names
from webhook.cli import build_parser
from webhook.cluster.namespaces import StaticNamespaces
from webhook.core import parse_config
from webhook.core.model import (
    DEFAULT_EXCLUDED_NAMESPACES,
    INJECT_KEY,
    MIRROR_ANNOTATION,
    PREFIX,
    Config,
)
from webhook.logs import JsonLog
from webhook.metrics import Metrics

from .conftest import (
    NAMESPACE,
    NEWEST_KUBE,
    OLDEST_KUBE,
    RELEASE,
    Obj,
    Render,
    all_of,
    helm_args,
    only,
    run_helm,
)

pytestmark = pytest.mark.chart

FULLNAME = f"{RELEASE}-lifecycle-webhook"
MIRROR_CEL = (
    "!has(object.metadata.annotations) || "
    "!('kubernetes.io/config.mirror' in object.metadata.annotations)"
)
MODES = ("namespace", "cluster")
SOURCES = ("self", "cert-manager", "provided")
CA_PEM = generate_ca(days=30).cert_pem.decode()
CRD_KINDS = {
    ("cert-manager.io/v1", "Issuer"),
    ("cert-manager.io/v1", "Certificate"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}


def values_for(source: str, **more: Any) -> dict[str, Any]:
    values: dict[str, Any] = {"certs.source": source}
    if source == "provided":
        values["certs.provided.secretName"] = "my-webhook-tls"
        values["certs.provided.caBundle"] = CA_PEM
    values.update(more)
    return values


def hooks(documents: list[Obj]) -> list[Obj]:
    webhooks: list[Obj] = only(documents, "MutatingWebhookConfiguration")["webhooks"]
    return webhooks


def deployment(documents: list[Obj]) -> Obj:
    return only(documents, "Deployment")


def container(documents: list[Obj], name: str) -> Obj:
    spec = deployment(documents)["spec"]["template"]["spec"]
    everything = spec["containers"] + spec.get("initContainers", [])
    found: list[Obj] = [c for c in everything if c["name"] == name]
    assert len(found) == 1, [c["name"] for c in everything]
    return found[0]


# --- lint and schema validation of the whole matrix ---------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_helm_lint_is_clean(helm: Any, helm_env: dict[str, str], mode: str) -> None:
    from .conftest import CHART

    result = run_helm(
        helm,
        helm_env,
        "lint",
        str(CHART),
        "--strict",
        "--kube-version",
        OLDEST_KUBE,
        *helm_args({"mode": mode}),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout


MATRIX = list(itertools.product(MODES, SOURCES, (1, 3), ("Ignore", "Fail")))


@pytest.mark.parametrize("kube_version", [OLDEST_KUBE, NEWEST_KUBE])
@pytest.mark.parametrize(("mode", "source", "replicas", "failure_policy"), MATRIX)
def test_matrix_renders_valid_objects(
    render: Render,
    kube_version: str,
    mode: str,
    source: str,
    replicas: int,
    failure_policy: str,
) -> None:
    """Built-in kinds pass kubernetes-validate in strict mode (unknown fields rejected);
    CRD objects (cert-manager, Prometheus Operator) are checked for their shape."""
    values = values_for(
        source,
        mode=mode,
        replicaCount=replicas,
        failurePolicy=failure_policy,
        **{
            "metrics.serviceMonitor.enabled": True,
            "metrics.prometheusRule.enabled": True,
            "networkPolicy.enabled": True,
        },
    )
    documents = render(values, kube_version=kube_version)
    for document in documents:
        if (document["apiVersion"], document["kind"]) in CRD_KINDS:
            assert set(document) == {"apiVersion", "kind", "metadata", "spec"}
            assert document["metadata"]["namespace"] == NAMESPACE
            assert document["metadata"]["name"].startswith(FULLNAME)
            continue
        try:
            kubernetes_validate.validate(document, kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{document['kind']} {document['metadata']['name']}: {exc.message}")

    (configuration,) = all_of(documents, "MutatingWebhookConfiguration")
    assert [h["failurePolicy"] for h in configuration["webhooks"]] == [failure_policy] * len(
        configuration["webhooks"]
    )
    assert len(configuration["webhooks"]) == (2 if mode == "namespace" else 1)
    assert deployment(documents)["spec"]["replicas"] == replicas
    assert len(all_of(documents, "PodDisruptionBudget")) == (1 if replicas > 1 else 0)
    kinds = {d["kind"] for d in documents}
    assert ("Certificate" in kinds) == (source == "cert-manager")
    roles = {d["metadata"]["name"] for d in all_of(documents, "Role")}
    assert (f"{FULLNAME}-certs" in roles) == (source == "self")


# --- the webhook registration ------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_every_webhook_has_the_fixed_fields(render: Render, mode: str) -> None:
    for hook in hooks(render({"mode": mode})):
        assert hook["name"].endswith(".pods.lifecycle-webhook.io")
        assert len(hook["name"].split(".")) >= 3
        assert hook["rules"] == [
            {
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "operations": ["CREATE"],
                "resources": ["pods"],
                "scope": "Namespaced",
            }
        ]
        assert hook["sideEffects"] == "None"
        assert hook["admissionReviewVersions"] == ["v1"]
        assert hook["reinvocationPolicy"] == "IfNeeded"
        assert hook["matchPolicy"] == "Equivalent"
        assert hook["timeoutSeconds"] == 2
        assert hook["failurePolicy"] == "Ignore"
        assert hook["clientConfig"]["service"] == {
            "name": FULLNAME,
            "namespace": NAMESPACE,
            "path": "/mutate",
            "port": 443,
        }
        assert hook["matchConditions"] == [{"name": "skip-mirror-pods", "expression": MIRROR_CEL}]


def test_mirror_pod_condition_names_the_annotation_the_core_skips() -> None:
    assert f"'{MIRROR_ANNOTATION}' in object.metadata.annotations" in MIRROR_CEL


@pytest.mark.parametrize("timeout", [1, 7, 30])
def test_timeout_is_passed_through(render: Render, timeout: int) -> None:
    for mode in MODES:
        assert {
            h["timeoutSeconds"] for h in hooks(render({"mode": mode, "timeoutSeconds": timeout}))
        } == {timeout}


def test_webhook_path_and_prefix_match_the_python_constants(render: Render) -> None:
    """The chart's label keys are the core's PREFIX + "inject"; the webhook path and the
    probe paths are routes of the real server app."""
    documents = render({"mode": "namespace"}) + render({"mode": "cluster"})
    keys = set()
    configurations = all_of(documents, "MutatingWebhookConfiguration")
    for hook in [h for c in configurations for h in c["webhooks"]]:
        for selector in (hook["namespaceSelector"], hook["objectSelector"]):
            keys |= {e["key"] for e in selector["matchExpressions"]}
    assert keys == {PREFIX + "inject", "kubernetes.io/metadata.name"}
    assert INJECT_KEY == PREFIX + "inject"
    pod_labels = deployment(render())["spec"]["template"]["metadata"]["labels"]
    assert pod_labels[PREFIX + "inject"] == "false"

    webhook = container(render(), "webhook")
    paths = {
        *(h["clientConfig"]["service"]["path"] for c in configurations for h in c["webhooks"]),
        webhook["readinessProbe"]["httpGet"]["path"],
        webhook["livenessProbe"]["httpGet"]["path"],
    }
    assert paths == {"/mutate", "/readyz", "/healthz"}
    state = ServerState(
        config=Config(), namespaces=StaticNamespaces(), metrics=Metrics(), log=JsonLog()
    )
    app_paths = {getattr(route, "path", None) for route in create_app(state).routes}
    assert paths <= app_paths


# --- who is sent to the webhook: the selectors evaluated like the API server does --------


def selector_matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """metav1.LabelSelector semantics: matchLabels and matchExpressions, all ANDed."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values")
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def called(
    webhooks: list[Obj], namespace: str, ns_label: str | None, pod_label: str | None
) -> list[str]:
    ns_labels = {"kubernetes.io/metadata.name": namespace}
    if ns_label is not None:
        ns_labels[INJECT_KEY] = ns_label
    pod_labels = {"app": "x"} if pod_label is None else {"app": "x", INJECT_KEY: pod_label}
    return [
        h["name"]
        for h in webhooks
        if selector_matches(h["namespaceSelector"], ns_labels)
        and selector_matches(h["objectSelector"], pod_labels)
    ]


LABELS = (None, "enabled", "disabled", "true", "other")
POD_LABELS = (None, "true", "false", "other")
EXCLUDED = (*DEFAULT_EXCLUDED_NAMESPACES, NAMESPACE)


@pytest.mark.parametrize("mode", MODES)
def test_selectors_call_exactly_the_pods_spec_section_2_names(render: Render, mode: str) -> None:
    webhooks = hooks(render({"mode": mode}))
    for namespace, ns_label, pod_label in itertools.product(
        ("apps", *EXCLUDED), LABELS, POD_LABELS
    ):
        names = called(webhooks, namespace, ns_label, pod_label)
        assert len(names) <= 1, f"{namespace}/{ns_label}/{pod_label} sent twice: {names}"
        if namespace in EXCLUDED or pod_label == "false" or ns_label == "disabled":
            expected = False
        elif mode == "cluster":
            expected = True
        else:
            expected = ns_label == "enabled" or pod_label == "true"
        assert bool(names) == expected, (mode, namespace, ns_label, pod_label, names)


def excluded_by_name(hook: Obj) -> Obj:
    (by_name,) = [
        e for e in hook["namespaceSelector"]["matchExpressions"] if e["key"] != INJECT_KEY
    ]
    assert by_name["key"] == "kubernetes.io/metadata.name" and by_name["operator"] == "NotIn"
    return dict(by_name)


def test_extra_excluded_namespaces_are_added_to_the_fixed_ones(render: Render) -> None:
    """The value lists namespaces *in addition to* the system ones and the release namespace;
    naming one of those again does not repeat it."""
    documents = render({"mode": "cluster", "excludedNamespaces": ["kube-system", "istio-system"]})
    expected = [*DEFAULT_EXCLUDED_NAMESPACES, "istio-system", NAMESPACE]
    for hook in hooks(documents):
        assert excluded_by_name(hook)["values"] == expected
    config = yaml.safe_load(only(documents, "ConfigMap")["data"]["config.yaml"])
    assert config["excludedNamespaces"] == expected


@pytest.mark.parametrize("extra", [[], ["foo"], [NAMESPACE, "foo"]])
@pytest.mark.parametrize("mode", MODES)
def test_system_and_release_namespaces_are_always_excluded(
    render: Render, mode: str, extra: list[str]
) -> None:
    """Helm replaces a list value as a whole: overriding excludedNamespaces must not drop
    kube-system & co. (or the release namespace) from the selectors or the config file."""
    always = {*DEFAULT_EXCLUDED_NAMESPACES, NAMESPACE}
    documents = render({"mode": mode, "excludedNamespaces": extra})
    config = yaml.safe_load(only(documents, "ConfigMap")["data"]["config.yaml"])
    lists = [excluded_by_name(hook)["values"] for hook in hooks(documents)]
    lists.append(config["excludedNamespaces"])
    for names in lists:
        assert set(names) == always | set(extra), names
        assert len(names) == len(set(names)), names  # uniq
    for hook in hooks(documents):
        for namespace in always:
            assert called([hook], namespace, "enabled", "true") == []


def test_release_namespace_is_excluded_in_any_namespace(render: Render) -> None:
    for hook in hooks(render({"mode": "cluster"}, namespace="team-webhooks")):
        assert called([hook], "team-webhooks", None, None) == []
        assert called([hook], "team-apps", None, None) == [hook["name"]]


@pytest.mark.parametrize("mode", MODES)
def test_own_pods_never_match_any_webhook(render: Render, mode: str) -> None:
    documents = render({"mode": mode, "podLabels": {INJECT_KEY: "true", "team": "platform"}})
    labels = deployment(documents)["spec"]["template"]["metadata"]["labels"]
    assert labels[INJECT_KEY] == "false"  # podLabels cannot opt the webhook into itself
    for hook in hooks(documents):
        assert not selector_matches(hook["objectSelector"], labels)
        # ...and even in another namespace labelled enabled, by the object selector alone
        assert called([hook], "apps", "enabled", "false") == []


# --- the other objects -------------------------------------------------------------------


def test_service_maps_443_to_the_https_port_and_exposes_metrics(render: Render) -> None:
    documents = render()
    service = only(documents, "Service")
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert ports["https"]["port"] == 443 and ports["https"]["targetPort"] == "https"
    assert ports["metrics"]["port"] == 9090 and ports["metrics"]["targetPort"] == "metrics"
    webhook = container(documents, "webhook")
    named = {p["name"]: p["containerPort"] for p in webhook["ports"]}
    assert named == {"https": 8443, "metrics": 9090}
    pod_labels = deployment(documents)["spec"]["template"]["metadata"]["labels"]
    assert selector_matches({"matchLabels": service["spec"]["selector"]}, pod_labels)


def test_servicemonitor_only_when_enabled(render: Render) -> None:
    assert all_of(render(), "ServiceMonitor") == []
    monitor = only(render({"metrics.serviceMonitor.enabled": True}), "ServiceMonitor")
    assert monitor["spec"]["endpoints"] == [
        {
            "port": "metrics",
            "path": "/metrics",
            "scheme": "http",
            "interval": "30s",
            "scrapeTimeout": "10s",
        }
    ]
    service = only(render(), "Service")
    assert selector_matches(monitor["spec"]["selector"], service["metadata"]["labels"])


def test_networkpolicy_only_when_enabled(render: Render) -> None:
    assert all_of(render(), "NetworkPolicy") == []
    peer = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    documents = render({"networkPolicy.enabled": True, "networkPolicy.metricsFrom": [peer]})
    policy = only(documents, "NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    admission, metrics = policy["spec"]["ingress"]
    assert admission == {"ports": [{"port": 8443, "protocol": "TCP"}]}
    assert metrics == {"ports": [{"port": 9090, "protocol": "TCP"}], "from": [peer]}
    pod_labels = deployment(documents)["spec"]["template"]["metadata"]["labels"]
    assert selector_matches(policy["spec"]["podSelector"], pod_labels)


@pytest.mark.parametrize(("replicas", "expected"), [(0, 0), (1, 0), (2, 1), (3, 1)])
def test_pdb_only_with_more_than_one_replica(render: Render, replicas: int, expected: int) -> None:
    documents = render({"replicaCount": replicas})
    budgets = all_of(documents, "PodDisruptionBudget")
    assert len(budgets) == expected
    if budgets:
        spec = budgets[0]["spec"]
        assert spec["maxUnavailable"] == 1
        assert spec["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
        pod_labels = deployment(documents)["spec"]["template"]["metadata"]["labels"]
        assert selector_matches(spec["selector"], pod_labels)


def test_pdb_can_be_disabled_or_use_min_available(render: Render) -> None:
    assert all_of(render({"podDisruptionBudget.enabled": False}), "PodDisruptionBudget") == []
    spec = only(render({"podDisruptionBudget.minAvailable": 1}), "PodDisruptionBudget")["spec"]
    assert spec["minAvailable"] == 1 and "maxUnavailable" not in spec


DETECTION_RULES: list[Obj] = [
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    {"apiGroups": ["apps"], "resources": ["replicasets"], "verbs": ["get"]},
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get"]},
]
"""The server's detection: watch pods, one Event per rollout, a pod's ReplicaSet's or Job's owner."""
LEASE_RULES: list[Obj] = [
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
    {
        "apiGroups": ["coordination.k8s.io"],
        "resources": ["leases"],
        "resourceNames": [f"{FULLNAME}-detector"],
        "verbs": ["get", "update"],
    },
]
REMEDIATION_RULES: list[Obj] = [
    {
        "apiGroups": ["apps"],
        "resources": ["deployments", "statefulsets", "daemonsets"],
        "verbs": ["patch"],
    }
]


@pytest.mark.parametrize(
    ("enabled", "remediate"), [(True, None), (True, "off"), (True, "restart"), (False, None)]
)
def test_detection_verbs_are_granted_only_when_needed(
    render: Render, enabled: bool, remediate: str | None
) -> None:
    """Pods, events, owners and the Lease only with detection on; patch on workloads only
    with `remediate: restart`; the server is told which."""
    config = {} if remediate is None else {"remediate": remediate}
    documents = render({"detection.enabled": enabled, "config": config})
    cluster_roles = rules_of(documents, "ClusterRole")
    reader = cluster_roles[f"{FULLNAME}-namespaces"]
    assert all((rule in reader) == enabled for rule in DETECTION_RULES)
    assert (f"{FULLNAME}-detector" in rules_of(documents, "Role")) == enabled
    if enabled:
        assert rules_of(documents, "Role")[f"{FULLNAME}-detector"] == LEASE_RULES
    restarts = remediate == "restart"
    assert cluster_roles.get(f"{FULLNAME}-remediate") == (REMEDIATION_RULES if restarts else None)
    everything = [r for rules in cluster_roles.values() for r in rules]
    assert any("patch" in r["verbs"] and "apps" in r.get("apiGroups", []) for r in everything) == (
        restarts
    )
    args = container(documents, "webhook")["args"]
    assert ("--no-detect" in args) == (not enabled)
    assert (f"--lease-name={FULLNAME}-detector" in args) == enabled
    assert "--mode=namespace" in args
    parsed = build_parser(["serve"]).parse_args(["serve", *args])
    assert parsed.detect == enabled
    config_file = yaml.safe_load(only(documents, "ConfigMap")["data"]["config.yaml"])
    assert parse_config(config_file).remediate == (remediate or "off")


def test_remediation_without_detection_fails_the_render(template: Any) -> None:
    result = template({"detection.enabled": False, "config": {"remediate": "restart"}})
    assert result.returncode != 0
    assert "config.remediate: restart needs detection.enabled" in result.stderr


def rules_of(documents: list[Obj], kind: str) -> dict[str, list[Obj]]:
    return {d["metadata"]["name"]: d["rules"] for d in all_of(documents, kind)}


@pytest.mark.parametrize("source", SOURCES)
def test_rbac_is_minimal(render: Render, source: str) -> None:
    documents = render(values_for(source))
    cluster_roles = rules_of(documents, "ClusterRole")
    roles = rules_of(documents, "Role")
    expected_cluster: dict[str, list[Obj]] = {
        f"{FULLNAME}-namespaces": [
            {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": [""], "resources": ["services"], "verbs": ["list", "watch"]},
            {"nonResourceURLs": ["/version"], "verbs": ["get"]},
            *DETECTION_RULES,
        ]
    }
    expected_roles: dict[str, list[Obj]] = {f"{FULLNAME}-detector": LEASE_RULES}
    if source == "self":
        expected_cluster[f"{FULLNAME}-webhook-config"] = [
            {
                "apiGroups": ["admissionregistration.k8s.io"],
                "resources": ["mutatingwebhookconfigurations"],
                "resourceNames": [
                    only(documents, "MutatingWebhookConfiguration")["metadata"]["name"]
                ],
                "verbs": ["get", "patch"],
            }
        ]
        expected_roles[f"{FULLNAME}-certs"] = [
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
            {
                "apiGroups": [""],
                "resources": ["secrets"],
                "resourceNames": [f"{FULLNAME}-tls"],
                "verbs": ["get", "update"],
            },
        ]
    assert cluster_roles == expected_cluster
    assert roles == expected_roles
    for role in all_of(documents, "Role"):
        assert role["metadata"]["namespace"] == NAMESPACE
    service_account = only(documents, "ServiceAccount")["metadata"]["name"]
    bindings = all_of(documents, "ClusterRoleBinding") + all_of(documents, "RoleBinding")
    assert len(bindings) == len(cluster_roles) + len(roles)
    for binding in bindings:
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": service_account, "namespace": NAMESPACE}
        ]
        assert binding["roleRef"]["name"] in {**cluster_roles, **roles}
    assert (
        deployment(documents)["spec"]["template"]["spec"]["serviceAccountName"] == service_account
    )


def test_config_map_is_the_settings_file_and_is_mounted_as_a_directory(render: Render) -> None:
    config = {"prestopSeconds": 7, "shutdownSeconds": 40, "jobs": "inject", "strict": True}
    documents = render({"config": config})
    text = only(documents, "ConfigMap")["data"]["config.yaml"]
    parsed = yaml.safe_load(text)
    assert parsed == {**config, "excludedNamespaces": [*DEFAULT_EXCLUDED_NAMESPACES, NAMESPACE]}
    core_config = parse_config(parsed)  # the server's own parser accepts it
    assert core_config.strict is True
    assert NAMESPACE in core_config.excluded_namespaces
    webhook = container(documents, "webhook")
    (mount,) = [m for m in webhook["volumeMounts"] if m["name"] == "config"]
    assert "subPath" not in mount
    (config_arg,) = [a for a in webhook["args"] if a.startswith("--config=")]
    assert config_arg == f"--config={mount['mountPath']}/config.yaml"
    volumes = {v["name"]: v for v in deployment(documents)["spec"]["template"]["spec"]["volumes"]}
    assert (
        volumes["config"]["configMap"]["name"] == only(documents, "ConfigMap")["metadata"]["name"]
    )


def test_the_server_accepts_the_rendered_command_line(render: Render) -> None:
    """Every flag the chart passes exists in `lifecycle-webhook serve` with these values."""
    documents = render({"server.drainSeconds": 9})
    webhook = container(documents, "webhook")
    assert webhook["command"] == ["lifecycle-webhook", "serve"]
    args = build_parser(["serve"]).parse_args(["serve", *webhook["args"]])
    assert args.port == 8443
    assert args.metrics_port == 9090
    assert args.drain_seconds == 9
    assert args.workers == 1
    assert not any(a.startswith("--workers") for a in webhook["args"])
    tls_mount = next(m for m in webhook["volumeMounts"] if m["name"] == "tls")["mountPath"]
    assert args.tls_cert == f"{tls_mount}/tls.crt"
    assert args.tls_key == f"{tls_mount}/tls.key"
    env = {e["name"]: e for e in webhook["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}


def test_workers_value_reaches_the_server(render: Render) -> None:
    webhook = container(render({"server.workers": 2}), "webhook")
    args = build_parser(["serve"]).parse_args(["serve", *webhook["args"]])
    assert args.workers == 2


def bootstrap_args(command: list[str]) -> Any:
    import argparse

    parser = argparse.ArgumentParser()
    add_certs_bootstrap_arguments(parser)
    return parser.parse_args(command)


def test_self_certs_bootstrap_matches_the_rendered_names(render: Render) -> None:
    documents = render(values_for("self"))
    spec = deployment(documents)["spec"]["template"]["spec"]
    (init,) = spec["initContainers"]
    sidecar = container(documents, "certs")
    configuration = only(documents, "MutatingWebhookConfiguration")
    assert "caBundle" not in str(configuration)  # the bootstrap owns it
    assert "annotations" not in configuration["metadata"]
    for bootstrap in (init, sidecar):
        assert bootstrap["command"] == ["lifecycle-webhook", "certs", "bootstrap"]
        args = bootstrap_args(bootstrap["args"])
        assert args.secret == f"{FULLNAME}-tls"
        assert args.namespace == "$(POD_NAMESPACE)"
        assert {e["name"] for e in bootstrap["env"]} == {"POD_NAMESPACE"}
        assert args.service == only(documents, "Service")["metadata"]["name"]
        assert args.webhook_config == configuration["metadata"]["name"]
        assert (args.ca_days, args.leaf_days) == (730, 30)
        (tls_mount,) = [m for m in bootstrap["volumeMounts"] if m["name"] == "tls"]
        assert args.out == tls_mount["mountPath"]
        assert not tls_mount.get("readOnly")
    assert not bootstrap_args(init["args"]).watch
    sidecar_args = bootstrap_args(sidecar["args"])
    assert sidecar_args.watch and sidecar_args.interval == 60
    tls = next(v for v in spec["volumes"] if v["name"] == "tls")
    assert tls["emptyDir"]["medium"] == "Memory"


def test_cert_manager_certificate_and_ca_injection(render: Render) -> None:
    documents = render(values_for("cert-manager"))
    configuration = only(documents, "MutatingWebhookConfiguration")
    serving = only(documents, "Certificate", f"{FULLNAME}-serving")
    assert configuration["metadata"]["annotations"] == {
        "cert-manager.io/inject-ca-from": f"{NAMESPACE}/{serving['metadata']['name']}"
    }
    assert "caBundle" not in str(configuration)
    service = only(documents, "Service")["metadata"]["name"]
    assert serving["spec"]["dnsNames"] == service_dns_names(service, NAMESPACE)
    assert serving["spec"]["usages"] == ["server auth", "digital signature"]
    assert serving["spec"]["privateKey"] == {
        "algorithm": "ECDSA",
        "size": 256,
        "rotationPolicy": "Always",
    }
    assert serving["spec"]["issuerRef"] == {
        "name": f"{FULLNAME}-ca",
        "kind": "Issuer",
        "group": "cert-manager.io",
    }
    ca = only(documents, "Certificate", f"{FULLNAME}-ca")
    assert ca["spec"]["isCA"] is True
    assert only(documents, "Issuer", f"{FULLNAME}-ca")["spec"] == {
        "ca": {"secretName": ca["spec"]["secretName"]}
    }
    assert only(documents, "Issuer", f"{FULLNAME}-selfsigned")["spec"] == {"selfSigned": {}}
    spec = deployment(documents)["spec"]["template"]["spec"]
    assert "initContainers" not in spec
    assert [c["name"] for c in spec["containers"]] == ["webhook"]
    tls = next(v for v in spec["volumes"] if v["name"] == "tls")
    assert tls["secret"]["secretName"] == serving["spec"]["secretName"]
    assert [r["metadata"]["name"] for r in all_of(documents, "Role")] == [f"{FULLNAME}-detector"]


def test_cert_manager_with_an_existing_issuer(render: Render) -> None:
    issuer = {"name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}
    documents = render(values_for("cert-manager", **{"certs.certManager.issuerRef": issuer}))
    assert [d["metadata"]["name"] for d in all_of(documents, "Certificate")] == [
        f"{FULLNAME}-serving"
    ]
    assert all_of(documents, "Issuer") == []
    assert only(documents, "Certificate")["spec"]["issuerRef"] == issuer


@pytest.mark.parametrize("encoding", ["pem", "base64"])
def test_provided_secret_and_ca_bundle(render: Render, encoding: str) -> None:
    given = CA_PEM if encoding == "pem" else base64.b64encode(CA_PEM.encode()).decode()
    documents = render(values_for("provided", **{"certs.provided.caBundle": given}))
    for hook in hooks(documents):
        assert base64.b64decode(hook["clientConfig"]["caBundle"]).decode() == CA_PEM
    spec = deployment(documents)["spec"]["template"]["spec"]
    tls = next(v for v in spec["volumes"] if v["name"] == "tls")
    assert tls["secret"]["secretName"] == "my-webhook-tls"
    assert "initContainers" not in spec
    assert all_of(documents, "Certificate") == [] and all_of(documents, "Secret") == []


# --- values the schema (or the templates) refuse -----------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"mode": "everywhere"}, "/mode"),
        ({"timeoutSeconds": -1}, "/timeoutSeconds"),
        ({"timeoutSeconds": 0}, "/timeoutSeconds"),
        ({"timeoutSeconds": 31}, "/timeoutSeconds"),
        ({"timeoutSeconds": "2"}, "/timeoutSeconds"),
        ({"failurePolicy": "ignore"}, "/failurePolicy"),
        ({"certs.source": "vault"}, "/certs/source"),
        ({"certs.source": "provided"}, "/certs"),
        ({"certs.source": "provided", "certs.provided.secretName": "x"}, "/certs"),
        ({"replicaCount": -1}, "/replicaCount"),
        ({"server.workers": 0}, "/server/workers"),
        ({"server.workers": 65}, "/server/workers"),
        ({"excludedNamespaces": ["Kube_System"]}, "/excludedNamespaces"),
        ({"config": {"prestopSecond": 5}}, "/config"),
        ({"config": {"prestop": "tcp"}}, "/config/prestop"),
        ({"unknownTopLevel": True}, "unknownTopLevel"),
        ({"podDisruptionBudget.unhealthyPodEvictionPolicy": "Never"}, "unhealthyPodEvictionPolicy"),
        ({"image.digest": "sha256:short"}, "/image/digest"),
        ({"certs.self.leafDays": 200}, "caDays"),
        ({"lifecycle.terminationGracePeriodSeconds": 9}, "terminationGracePeriodSeconds"),
        ({"metrics.port": 8443}, "server.port and metrics.port must differ"),
        ({"server.port": 9090}, "server.port and metrics.port must differ"),
        ({"image.tag": 1.5}, "/image/tag"),
        ({"image.tag": -1}, "/image/tag"),
        (values_for("provided", **{"certs.provided.caBundle": " \n "}), "caBundle"),
        # white space to Go's TrimSpace, not to the schema's \S: the template catches it
        (values_for("provided", **{"certs.provided.caBundle": "\u00a0\n"}), "caBundle is empty"),
        ({"excludedNamespaces": ["kube-system", "kube-system"]}, "/excludedNamespaces"),
    ],
)
def test_bad_values_fail_the_render(
    template: Callable[..., subprocess.CompletedProcess[str]], values: dict[str, Any], message: str
) -> None:
    result = template(values)
    assert result.returncode != 0, f"{values} rendered:\n{result.stdout[:400]}"
    assert message in result.stderr, result.stderr


def test_defaults_are_what_the_spec_says(render: Render) -> None:
    from .conftest import CHART

    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["mode"] == "namespace"
    assert values["failurePolicy"] == "Ignore"
    assert values["timeoutSeconds"] == 2
    assert values["replicaCount"] == 2
    assert values["certs"]["source"] == "self"
    assert values["excludedNamespaces"] == []  # in addition to the fixed ones
    assert values["metrics"]["serviceMonitor"]["enabled"] is False
    assert values["networkPolicy"]["enabled"] is False
    assert len(hooks(render())) == 2
