"""What routes traffic to a pod, and what made it: the facts a profile can match on.

Pure. The adapters pass the Services of the pod's namespace as plain dicts
(`{"name", "type", "selector", "annotations"}`, see `service_summary`), or None when they
could not be read; the owner kind comes from the pod's own `ownerReferences` unless the adapter
knows better (a pod template offline).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

Exposure = Literal["none", "cluster", "loadBalancer", "unknown"]
EXPOSURES: tuple[str, ...] = ("none", "cluster", "loadBalancer")
"""What a profile may test; `unknown` (the Services could not be read) matches none of them."""

OWNER_KINDS: tuple[str, ...] = (
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "Job",
    "CronJob",
    "none",
)
_OWNER_GROUPS = {
    "ReplicaSet": ("apps", "extensions"),
    "StatefulSet": ("apps",),
    "DaemonSet": ("apps", "extensions"),
    "Job": ("batch",),
}
_LOAD_BALANCER_TYPES = frozenset({"NodePort", "LoadBalancer"})
TARGET_GROUP_ATTRIBUTES = "service.beta.kubernetes.io/aws-load-balancer-target-group-attributes"
"""The one Service annotation kept: it may state the load balancer's deregistration delay."""
DEREGISTRATION_DELAY = "deregistration_delay.timeout_seconds"

_CRONJOB_JOB = re.compile(r".+-([0-9]{8,10})", re.ASCII)
_CRONJOB_MINUTES = (25_000_000, 10_000_000_000)
"""A CronJob names its Jobs `<cronjob>-<minutes since 1970>` (kube-controller-manager's
getJobName). Minutes from 2017 on: a date-like suffix (`backup-20260101`) is far below."""


class Service(TypedDict):
    name: str
    type: str
    selector: dict[str, str]
    annotations: dict[str, str]


def _strings(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)}


def service_summary(service: Mapping[str, Any]) -> Service | None:
    """What exposure needs of a Service object (from the API server or a manifest); None
    for something without a name.

    `type` defaults to ClusterIP (the API server's default; headless Services are ClusterIP
    too); an ExternalName Service selects no pod; of the annotations only
    TARGET_GROUP_ATTRIBUTES is kept (a cache of every Service stays small).
    """
    meta = service.get("metadata")
    meta = meta if isinstance(meta, dict) else {}
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        return None
    spec = service.get("spec")
    spec = spec if isinstance(spec, dict) else {}
    kind = spec.get("type")
    kind = kind if isinstance(kind, str) else "ClusterIP"
    annotations = _strings(meta.get("annotations"))
    return {
        "name": name,
        "type": kind,
        "selector": {} if kind == "ExternalName" else _strings(spec.get("selector")),
        "annotations": {k: v for k, v in annotations.items() if k == TARGET_GROUP_ATTRIBUTES},
    }


def selects(service: Mapping[str, Any], labels: Mapping[str, Any]) -> bool:
    """Equality-based, as the EndpointSlice controller reads `spec.selector`. A Service
    without a selector (its endpoints are managed by hand) or of type ExternalName selects
    nothing."""
    selector = service.get("selector")
    if not isinstance(selector, Mapping) or not selector or service.get("type") == "ExternalName":
        return False
    return all(labels.get(key) == value for key, value in selector.items())


@dataclass(frozen=True, slots=True)
class Traffic:
    """The Services that select one pod, and what that makes its exposure."""

    exposure: Exposure
    services: tuple[Mapping[str, Any], ...] = ()

    def describe(self) -> str:
        if self.exposure == "unknown":
            return "exposure unknown (the namespace's Services could not be read)"
        if not self.services:
            return "exposure none (no Service selects the pod)"
        names = ", ".join(f"{s.get('name')} ({s.get('type')})" for s in self.services)
        return f"exposure {self.exposure}: {names}"

    def deregistration_delay(self) -> tuple[int, str] | None:
        """The largest delay a load-balancer Service states, and which Service said so."""
        best: tuple[int, str] | None = None
        for service in self.services:
            if service.get("type") not in _LOAD_BALANCER_TYPES:
                continue
            seconds = _stated_delay(service.get("annotations"))
            if seconds is not None and (best is None or seconds > best[0]):
                best = (seconds, str(service.get("name")))
        return best


def traffic(services: Sequence[Mapping[str, Any]] | None, labels: Mapping[str, Any]) -> Traffic:
    if services is None:
        return Traffic("unknown")
    selecting = tuple(s for s in services if isinstance(s, Mapping) and selects(s, labels))
    if not selecting:
        return Traffic("none")
    if any(s.get("type") in _LOAD_BALANCER_TYPES for s in selecting):
        return Traffic("loadBalancer", selecting)
    return Traffic("cluster", selecting)


def _stated_delay(annotations: Any) -> int | None:
    """`deregistration_delay.timeout_seconds=N` in the comma-separated key=value list."""
    if not isinstance(annotations, Mapping):
        return None
    attributes = annotations.get(TARGET_GROUP_ATTRIBUTES)
    if not isinstance(attributes, str):
        return None
    for item in attributes.split(","):
        key, equals, value = item.partition("=")
        value = value.strip()
        if key.strip() == DEREGISTRATION_DELAY and equals and value.isascii() and value.isdigit():
            return int(value)
    return None


def owner_kind(metadata: Mapping[str, Any]) -> tuple[str, str]:
    """The kind of workload that made the pod, and how that was read.

    A Deployment's pods are owned by a ReplicaSet named `<deployment>-<pod-template-hash>`;
    a CronJob's by a Job named `<cronjob>-<minutes>`. Those are reported as the kinds the
    user wrote, so `ownerKind: Deployment` means what it says in the server and offline.
    """
    references = metadata.get("ownerReferences")
    controller = None
    if isinstance(references, list):
        controller = next(
            (r for r in references if isinstance(r, Mapping) and r.get("controller") is True),
            None,
        )
    if controller is None:
        return "none", "no controller ownerReference"
    kind, name = controller.get("kind"), controller.get("name")
    if not isinstance(kind, str) or not kind or not isinstance(name, str):
        return "none", "unreadable controller ownerReference"
    api_version = controller.get("apiVersion")
    group = api_version.rpartition("/")[0] if isinstance(api_version, str) else ""
    if kind in _OWNER_GROUPS and group not in _OWNER_GROUPS[kind]:
        return f"{kind}.{group}", f"controller {kind}.{group} {name}"
    labels = metadata.get("labels")
    template_hash = labels.get("pod-template-hash") if isinstance(labels, Mapping) else None
    if (
        kind == "ReplicaSet"
        and isinstance(template_hash, str)
        and template_hash
        and name.endswith("-" + template_hash)
    ):
        return "Deployment", f"ReplicaSet {name} with pod-template-hash {template_hash}"
    match = _CRONJOB_JOB.fullmatch(name) if kind == "Job" else None
    if match and _CRONJOB_MINUTES[0] <= int(match.group(1)) < _CRONJOB_MINUTES[1]:
        return "CronJob", f"Job {name}, named as a CronJob names its Jobs"
    return kind, f"controller {kind} {name}"
