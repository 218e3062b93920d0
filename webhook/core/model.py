"""Data that crosses the core's boundary: what `mutate` reads and what it returns.

Pure. Pods stay the plain dicts that orjson or PyYAML produced; nothing here copies them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from webhook.core.selectors import Selector

Pod = dict[str, Any]
PatchOp = dict[str, Any]

PREFIX = "lifecycle-webhook.io/"
STATUS_KEY = PREFIX + "status"
INJECT_KEY = PREFIX + "inject"
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"

NEWEST_KNOWN_VERSION: tuple[int, int] = (1, 37)
"""What `clusterVersion: auto` assumes when the API server's version cannot be read."""

DEFAULT_EXCLUDED_NAMESPACES: tuple[str, ...] = ("kube-system", "kube-public", "kube-node-lease")
"""The adapters add the namespace the webhook runs in, which only they know."""

Outcome = Literal["mutated", "unchanged", "skipped", "denied"]
Layer = str
"""Where a setting came from: `default`, `config`, `profile:<name>`, `namespace` or `pod`."""
Feature = Literal["prestop", "grace", "init_order", "poststart"]


@dataclass(frozen=True, slots=True)
class Match:
    """What a profile tests; None is "anything". All tests must hold."""

    exposure: frozenset[str] | None = None
    owner_kinds: frozenset[str] | None = None
    pod_selector: Selector | None = None
    namespace_selector: Selector | None = None


@dataclass(frozen=True, slots=True)
class Profile:
    """One entry of the config's `profiles`: its settings become the layer above the file's."""

    name: str
    match: Match = field(default_factory=Match)
    values: Mapping[str, Any] = field(default_factory=dict)
    """Parsed like `Config.values`: annotation key to final value."""

    @property
    def layer(self) -> Layer:
        return f"profile:{self.name}"


@dataclass(frozen=True, slots=True)
class Config:
    """The configuration-file layer, already validated by `core.config.parse_config`.

    `values` holds only the settings the file set, keyed by annotation key
    (`prestop-seconds`), parsed to their final type.
    """

    values: Mapping[str, Any] = field(default_factory=dict)
    max_seconds: int = 3600
    strict: bool = False
    excluded_namespaces: frozenset[str] = frozenset(DEFAULT_EXCLUDED_NAMESPACES)
    cluster_version: tuple[int, int] | None = None
    """None means `auto`: the adapter detects it and passes it in `Settings.cluster_version`."""
    profiles: tuple[Profile, ...] = ()
    """In file order: the first whose match holds applies."""
    remediate: Literal["off", "restart"] = "off"
    """`restart`: the server restarts the owners of pods that missed the webhook."""
    remediate_interval_seconds: int = 300
    """At most one remediation restart per this many seconds, cluster-wide."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything outside the pod that decides its mutation."""

    config: Config = field(default_factory=Config)
    namespace: str = ""
    """The request's namespace (checked against `excludedNamespaces`)."""
    namespace_annotations: Mapping[str, str] | None = field(default_factory=dict)
    """The Namespace object's annotations; None when they could not be read (a warning)."""
    namespace_labels: Mapping[str, str] | None = field(default_factory=dict)
    """The Namespace object's labels, for profiles' namespaceSelector; None: could not be read."""
    services: Sequence[Mapping[str, Any]] | None = None
    """The Services of the pod's namespace (`core.traffic.service_view` dicts), for exposure;
    None when they are not known, which matches no exposure test."""
    owner_kind: str | None = None
    """The workload kind when the adapter knows it (a pod template offline); None: read from
    the pod's ownerReferences."""
    cluster_version: tuple[int, int] = NEWEST_KNOWN_VERSION


@dataclass(frozen=True, slots=True)
class AdmissionWarning:
    """One warning: `reason` labels the metric, `text` goes to the client as is."""

    reason: str
    text: str


@dataclass(frozen=True, slots=True)
class Mutation:
    """The core's answer for one pod."""

    ops: list[PatchOp]
    """RFC 6902 operations against the exact pod that was passed in; empty means no patch."""
    outcome: Outcome
    warnings: tuple[AdmissionWarning, ...] = ()
    denial: str | None = None
    """Set only when outcome is `denied` (strict mode): the message listing every problem."""
    features: tuple[Feature, ...] = ()
    """What the patch changes (or, in report-only mode, would change)."""
    explanation: tuple[str, ...] = ()
    """Each decision and the layer each setting came from, for `mutate --explain` and logs."""
    profile: str | None = None
    """The name of the profile that applied, if any."""
    exposure: str | None = None
    """The pod's exposure, when a profile or `fromLoadBalancer` needed it."""
