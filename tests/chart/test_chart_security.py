"""The webhook's own Deployment meets the Pod Security Standards "restricted" profile and
practises the shutdown it preaches (preStop, a grace period covering the drain, readiness).

The checks below are written from the profile's table
(https://kubernetes.io/docs/concepts/security/pod-security-standards/, baseline + restricted),
field by field, and are themselves tested on pods that break each rule.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import pytest
import yaml

from webhook.cli import build_parser

from .conftest import CHART, Obj, Render, only

pytestmark = pytest.mark.chart

SOURCES = ("self", "cert-manager", "provided")
SOURCE_VALUES: dict[str, dict[str, Any]] = {
    "self": {},
    "cert-manager": {"certs.source": "cert-manager"},
    "provided": {
        "certs.source": "provided",
        "certs.provided.secretName": "tls",
        "certs.provided.caBundle": "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----",
    },
}

RESTRICTED_VOLUME_TYPES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}


def all_containers(spec: Mapping[str, Any]) -> list[Obj]:
    return [
        *spec.get("initContainers", []),
        *spec.get("containers", []),
        *spec.get("ephemeralContainers", []),
    ]


def restricted_violations(template: Mapping[str, Any]) -> list[str]:
    """Every rule of the baseline and restricted profiles this pod template breaks."""
    spec = template["spec"]
    annotations = template.get("metadata", {}).get("annotations") or {}
    pod_sc = spec.get("securityContext") or {}
    containers = all_containers(spec)
    problems: list[str] = []

    # baseline
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field):
            problems.append(f"{field} is set")
    if (pod_sc.get("windowsOptions") or {}).get("hostProcess"):
        problems.append("pod windowsOptions.hostProcess")
    for volume in spec.get("volumes", []):
        kinds = set(volume) - {"name"}
        if "hostPath" in kinds:
            problems.append(f"volume {volume['name']} is hostPath")
        if not kinds <= RESTRICTED_VOLUME_TYPES:
            problems.append(f"volume {volume['name']} has type {sorted(kinds)}")
    for key, value in annotations.items():
        if key.startswith("container.apparmor.security.beta.kubernetes.io/") and not (
            value == "runtime/default" or value.startswith("localhost/")
        ):
            problems.append(f"AppArmor annotation {key}={value}")
    for sysctl in pod_sc.get("sysctls") or []:
        if sysctl["name"] not in SAFE_SYSCTLS:
            problems.append(f"unsafe sysctl {sysctl['name']}")

    def check_common(sc: Mapping[str, Any], where: str) -> None:
        apparmor = (sc.get("appArmorProfile") or {}).get("type")
        if apparmor not in (None, "RuntimeDefault", "Localhost"):
            problems.append(f"{where}: appArmorProfile {apparmor}")
        selinux = sc.get("seLinuxOptions") or {}
        if selinux.get("type", "") not in SELINUX_TYPES:
            problems.append(f"{where}: seLinuxOptions.type {selinux['type']}")
        if selinux.get("user") or selinux.get("role"):
            problems.append(f"{where}: seLinuxOptions user/role set")
        if (sc.get("seccompProfile") or {}).get("type") == "Unconfined":
            problems.append(f"{where}: seccomp Unconfined")
        if sc.get("runAsUser") == 0:
            problems.append(f"{where}: runAsUser 0")

    check_common(pod_sc, "pod")
    pod_non_root = pod_sc.get("runAsNonRoot") is True
    pod_seccomp = (pod_sc.get("seccompProfile") or {}).get("type") in (
        "RuntimeDefault",
        "Localhost",
    )
    for c in containers:
        where = f"container {c['name']}"
        sc = c.get("securityContext") or {}
        check_common(sc, where)
        if sc.get("privileged"):
            problems.append(f"{where}: privileged")
        if (sc.get("windowsOptions") or {}).get("hostProcess"):
            problems.append(f"{where}: hostProcess")
        if sc.get("procMount", "Default") != "Default":
            problems.append(f"{where}: procMount {sc['procMount']}")
        for port in c.get("ports", []):
            if port.get("hostPort"):
                problems.append(f"{where}: hostPort {port['hostPort']}")
        # restricted
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where}: allowPrivilegeEscalation is not false")
        if sc.get("runAsNonRoot") is False or not (pod_non_root or sc.get("runAsNonRoot") is True):
            problems.append(f"{where}: runAsNonRoot not true")
        if not pod_seccomp and (sc.get("seccompProfile") or {}).get("type") not in (
            "RuntimeDefault",
            "Localhost",
        ):
            problems.append(f"{where}: seccompProfile not RuntimeDefault/Localhost")
        capabilities = sc.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            problems.append(f"{where}: capabilities do not drop ALL")
        if set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}:
            problems.append(f"{where}: adds capabilities {capabilities['add']}")
    return problems


def pod_template(render: Render, values: Mapping[str, Any] | None = None) -> Obj:
    template: Obj = only(render(values or {}), "Deployment")["spec"]["template"]
    return template


@pytest.mark.parametrize("source", SOURCES)
def test_deployment_meets_restricted_pod_security(render: Render, source: str) -> None:
    template = pod_template(render, SOURCE_VALUES[source])
    assert restricted_violations(template) == []


def _first(template: Obj) -> Obj:
    container: Obj = template["spec"]["containers"][0]
    return container


def _sc(template: Obj) -> Obj:
    context: Obj = _first(template)["securityContext"]
    return context


BREAKAGES: dict[str, tuple[str, Callable[[Obj], Any]]] = {
    "host network": ("hostNetwork", lambda t: t["spec"].update(hostNetwork=True)),
    "hostPath volume": (
        "hostPath",
        lambda t: t["spec"]["volumes"].append({"name": "h", "hostPath": {"path": "/"}}),
    ),
    "privileged": ("privileged", lambda t: _sc(t).update(privileged=True)),
    "escalation": ("allowPrivilegeEscalation", lambda t: _sc(t).pop("allowPrivilegeEscalation")),
    "root allowed": ("runAsNonRoot", lambda t: _sc(t).update(runAsNonRoot=False)),
    "uid 0": ("runAsUser 0", lambda t: _sc(t).update(runAsUser=0)),
    "unconfined": (
        "seccomp Unconfined",
        lambda t: _sc(t).update(seccompProfile={"type": "Unconfined"}),
    ),
    "no seccomp": (
        "seccompProfile not",
        lambda t: (
            t["spec"]["securityContext"].pop("seccompProfile"),
            _sc(t).pop("seccompProfile"),
        ),
    ),
    "keeps caps": ("drop ALL", lambda t: _sc(t).update(capabilities={"drop": ["NET_RAW"]})),
    "adds caps": (
        "adds",
        lambda t: _sc(t).update(capabilities={"drop": ["ALL"], "add": ["SYS_ADMIN"]}),
    ),
    "proc mount": ("procMount", lambda t: _sc(t).update(procMount="Unmasked")),
    "host port": (
        "hostPort",
        lambda t: _first(t)["ports"].append({"containerPort": 1, "hostPort": 1}),
    ),
    "sysctl": (
        "unsafe sysctl",
        lambda t: t["spec"]["securityContext"].update(
            sysctls=[{"name": "kernel.msgmax", "value": "1"}]
        ),
    ),
    "apparmor": (
        "appArmorProfile",
        lambda t: _sc(t).update(appArmorProfile={"type": "Unconfined"}),
    ),
    "selinux": ("seLinuxOptions", lambda t: _sc(t).update(seLinuxOptions={"type": "spc_t"})),
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_the_restricted_checker_catches_each_violation(render: Render, breakage: str) -> None:
    """Each rule above is live: breaking it in the real template is reported."""
    message, breaks = BREAKAGES[breakage]
    template = copy.deepcopy(pod_template(render))
    breaks(template)
    assert any(message in problem for problem in restricted_violations(template))


def test_a_pod_without_any_security_context_is_rejected() -> None:
    bare = {"spec": {"containers": [{"name": "c", "image": "i"}]}}
    problems = restricted_violations(bare)
    assert len(problems) == 4  # privilege escalation, non-root, seccomp, capabilities


@pytest.mark.parametrize("source", SOURCES)
def test_beyond_restricted_read_only_root_numeric_user_scoped_token(
    render: Render, source: str
) -> None:
    documents = render(SOURCE_VALUES[source])
    template = only(documents, "Deployment")["spec"]["template"]
    spec = template["spec"]
    assert isinstance(spec["securityContext"]["runAsUser"], int)
    assert spec["securityContext"]["runAsUser"] >= 1000
    assert spec["securityContext"]["runAsGroup"] >= 1000
    assert spec["automountServiceAccountToken"] is True  # the server watches Namespaces
    assert only(documents, "ServiceAccount")["automountServiceAccountToken"] is False
    assert spec["enableServiceLinks"] is False
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["tmp"]["emptyDir"]["medium"] == "Memory"
    for c in all_containers(spec):
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True, c["name"]
        assert sc["runAsNonRoot"] is True, c["name"]
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, c["name"]
        assert sc["capabilities"] == {"drop": ["ALL"]}, c["name"]
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        assert mounts["/tmp"] == "tmp", c["name"]  # the only writable scratch space
        assert c["resources"]["requests"]["memory"], c["name"]
        assert c["resources"]["limits"]["memory"], c["name"]
        assert all("subPath" not in m for m in c["volumeMounts"]), c["name"]


# --- shutdown and availability ------------------------------------------------------------


def webhook_container(template: Mapping[str, Any]) -> Obj:
    found: list[Obj] = [c for c in template["spec"]["containers"] if c["name"] == "webhook"]
    assert len(found) == 1
    return found[0]


def drain_seconds(container: Mapping[str, Any]) -> float:
    args = build_parser(["serve"]).parse_args(["serve", *container["args"]])
    return float(args.drain_seconds)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({}, 15),
        ({"lifecycle.preStopSleepSeconds": 10, "server.drainSeconds": 20}, 35),
        ({"lifecycle.graceMarginSeconds": 0}, 10),
        ({"lifecycle.terminationGracePeriodSeconds": 60}, 60),
        ({"lifecycle.terminationGracePeriodSeconds": 10}, 10),
    ],
)
def test_grace_period_covers_prestop_and_drain(
    render: Render, values: dict[str, Any], expected: int
) -> None:
    template = pod_template(render, values)
    webhook = webhook_container(template)
    sleep = webhook["lifecycle"]["preStop"]["sleep"]["seconds"]
    grace = template["spec"]["terminationGracePeriodSeconds"]
    assert grace == expected
    assert grace >= sleep + drain_seconds(webhook)
    assert sleep == values.get("lifecycle.preStopSleepSeconds", 5)


def test_probes_use_https_on_the_admission_port(render: Render) -> None:
    webhook = webhook_container(pod_template(render))
    assert webhook["readinessProbe"]["httpGet"] == {
        "path": "/readyz",
        "port": "https",
        "scheme": "HTTPS",
    }
    assert webhook["livenessProbe"]["httpGet"] == {
        "path": "/healthz",
        "port": "https",
        "scheme": "HTTPS",
    }
    # a failed liveness restart is slower to trigger than readiness removal
    liveness, readiness = webhook["livenessProbe"], webhook["readinessProbe"]
    assert (
        liveness["periodSeconds"] * liveness["failureThreshold"]
        > readiness["periodSeconds"] * readiness["failureThreshold"]
    )


def test_replicas_are_spread_across_nodes(render: Render) -> None:
    template = pod_template(render)
    labels = template["metadata"]["labels"]
    (spread,) = template["spec"]["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["maxSkew"] == 1
    assert spread["whenUnsatisfiable"] == "ScheduleAnyway"  # a one-node cluster still runs
    assert spread["labelSelector"]["matchLabels"].items() <= labels.items()
    (term,) = template["spec"]["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"].items() <= labels.items()


def test_spread_and_affinity_can_be_replaced(render: Render) -> None:
    zone = {
        "maxSkew": 1,
        "topologyKey": "topology.kubernetes.io/zone",
        "whenUnsatisfiable": "DoNotSchedule",
        "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "lifecycle-webhook"}},
    }
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [
            {"key": "pool", "operator": "In", "values": ["system"]}
        ]}]
    }}}  # fmt: skip
    template = pod_template(render, {"topologySpreadConstraints": [zone], "affinity": affinity})
    assert template["spec"]["topologySpreadConstraints"] == [zone]
    assert template["spec"]["affinity"] == affinity


def test_rollout_never_drops_below_the_replica_count(render: Render) -> None:
    strategy = only(render(), "Deployment")["spec"]["strategy"]
    assert strategy == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }


def test_image_defaults_to_app_version_and_accepts_a_digest(render: Render) -> None:
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    assert webhook_container(pod_template(render))["image"] == f"lifecycle-webhook:{app_version}"
    digest = "sha256:" + "a" * 64
    template = pod_template(
        render, {"image.repository": "registry.example/lw", "image.digest": digest}
    )
    assert {c["image"] for c in all_containers(template["spec"])} == {
        f"registry.example/lw@{digest}"
    }


APP_VERSION = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        (20240101123, "20240101123"),
        (7, "7"),
        (0, "0"),
        ("1.10", "1.10"),
        ("", APP_VERSION),
        (None, APP_VERSION),
    ],
)
def test_image_tag_may_be_a_whole_number(render: Render, tag: object, expected: str) -> None:
    """`tag: 20240101123` in a values file is a number to Helm; it is used as written (not as
    2.0240101123e+10). Empty or null means the chart's appVersion."""
    template = pod_template(render, {"image.tag": tag})
    assert {c["image"] for c in all_containers(template["spec"])} == {
        f"lifecycle-webhook:{expected}"
    }
