"""Choosing a pod's profile: the first in file order whose every test holds.

Cheap tests first (owner kind, pod labels, namespace labels), exposure last: it is the only
one that looks at every Service of the namespace, and it is computed once, only when a
profile gets that far.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from webhook.core import traffic
from webhook.core.model import PREFIX, Config, Profile
from webhook.core.values import FromLoadBalancer


@dataclass(slots=True)
class PodFacts:
    """What profiles may test about one pod; the owner and `traffic` are read on first use
    (a config without profiles never pays for them)."""

    namespace: str
    metadata: Mapping[str, Any]
    labels: Mapping[str, Any]
    namespace_labels: Mapping[str, Any] | None
    services: Sequence[Mapping[str, Any]] | None
    known_owner_kind: str | None = None
    """The adapter's (a template's workload kind), else read from ownerReferences."""
    _owner: tuple[str, str] | None = field(default=None, init=False)
    _traffic: traffic.Traffic | None = field(default=None, init=False)

    @property
    def owner(self) -> tuple[str, str]:
        """The owner kind and how it was read."""
        if self._owner is None:
            if self.known_owner_kind is not None:
                self._owner = (self.known_owner_kind, "the workload's kind")
            else:
                self._owner = traffic.owner_kind(self.metadata)
        return self._owner

    @property
    def traffic(self) -> traffic.Traffic:
        if self._traffic is None:
            self._traffic = traffic.traffic(self.services, self.labels)
        return self._traffic

    @property
    def traffic_known(self) -> bool:
        return self._traffic is not None


@dataclass(frozen=True, slots=True)
class Choice:
    profile: Profile | None
    explanation: tuple[str, ...]
    exposure_unknown: bool
    """A profile was not applied only because the Services could not be read."""


def choose(profiles: Sequence[Profile], facts: PodFacts, explain: bool) -> Choice:
    lines: list[str] = []
    unknown = False
    if explain:
        lines.append("owner kind {} ({})".format(*facts.owner))
    chosen = None
    for profile in profiles:
        miss = _miss(profile, facts)
        if miss is None:
            chosen = profile
            break
        if miss == "exposure unknown":
            unknown = True
        if explain:
            lines.append(f"profile {profile.name}: not matched ({_why(miss, profile, facts)})")
    if explain:
        lines.append(f"profile {chosen.name}: matched" if chosen else "no profile matched")
        if facts.traffic_known:
            lines.insert(1, facts.traffic.describe())
    return Choice(chosen, tuple(lines), unknown)


def _miss(profile: Profile, facts: PodFacts) -> str | None:
    """Which test of `profile` fails, or None when it applies (no text: that is `_why`)."""
    match = profile.match
    if match.owner_kinds is not None and facts.owner[0] not in match.owner_kinds:
        return "owner"
    if match.pod_selector is not None and not match.pod_selector.matches(facts.labels):
        return "pod"
    if match.namespace_selector is not None:
        if facts.namespace_labels is None:
            return "namespace unknown"
        if not match.namespace_selector.matches(facts.namespace_labels):
            return "namespace"
    if match.exposure is not None:
        exposure = facts.traffic.exposure
        if exposure == "unknown":
            return "exposure unknown"
        if exposure not in match.exposure:
            return "exposure"
    return None


def _why(miss: str, profile: Profile, facts: PodFacts) -> str:
    match = profile.match
    if miss == "owner":
        return f"owner kind {facts.owner[0]}, want {'|'.join(sorted(match.owner_kinds or ()))}"
    if miss == "pod":
        return f"pod labels do not match {match.pod_selector}"
    if miss == "namespace unknown":
        return "the namespace's labels could not be read"
    if miss == "namespace":
        return f"namespace labels do not match {match.namespace_selector}"
    if miss == "exposure unknown":
        return "exposure unknown: the namespace's Services could not be read"
    return f"exposure {facts.traffic.exposure}, want {'|'.join(sorted(match.exposure or ()))}"


_PRESTOP_SECONDS = PREFIX + "prestop-seconds"


def config_reads_services(config: Config) -> bool:
    """Whether pods may need the Services of their namespace under `config`: a profile tests
    exposure, or the file or a profile says `prestopSeconds: fromLoadBalancer or N`. The
    server watches Services only then (annotations alone are served by live reads)."""
    layers = [config.values, *(profile.values for profile in config.profiles)]
    return any(profile.match.exposure is not None for profile in config.profiles) or any(
        isinstance(values.get("prestop-seconds"), FromLoadBalancer) for values in layers
    )


def annotations_read_services(*annotations: Mapping[str, Any] | None) -> bool:
    """Whether a Namespace or Pod annotation asks for `fromLoadBalancer`."""
    return any(
        isinstance(found, str) and found.startswith("fromLoadBalancer")
        for layer in annotations
        if layer
        for found in (layer.get(_PRESTOP_SECONDS),)
    )
