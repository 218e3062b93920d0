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
    """What profiles may test about one pod; `traffic` is read on first use."""

    namespace: str
    labels: Mapping[str, Any]
    namespace_labels: Mapping[str, Any] | None
    owner_kind: str
    owner_reason: str
    services: Sequence[Mapping[str, Any]] | None
    _traffic: traffic.Traffic | None = field(default=None, init=False)

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
        lines.append(f"owner kind {facts.owner_kind} ({facts.owner_reason})")
    chosen = None
    for profile in profiles:
        miss = _miss(profile, facts)
        if miss is None:
            chosen = profile
            break
        if miss == _UNKNOWN_EXPOSURE:
            unknown = True
        if explain:
            lines.append(f"profile {profile.name}: not matched ({miss})")
    if explain:
        lines.append(f"profile {chosen.name}: matched" if chosen else "no profile matched")
        if facts.traffic_known:
            lines.insert(1, facts.traffic.describe())
    return Choice(chosen, tuple(lines), unknown)


_UNKNOWN_EXPOSURE = "exposure unknown: the namespace's Services could not be read"


def _miss(profile: Profile, facts: PodFacts) -> str | None:
    """Why `profile` does not apply, or None when it does."""
    match = profile.match
    if match.owner_kinds is not None and facts.owner_kind not in match.owner_kinds:
        return f"owner kind {facts.owner_kind}, want {'|'.join(sorted(match.owner_kinds))}"
    if match.pod_selector is not None and not match.pod_selector.matches(facts.labels):
        return f"pod labels do not match {match.pod_selector}"
    if match.namespace_selector is not None:
        if facts.namespace_labels is None:
            return "the namespace's labels could not be read"
        if not match.namespace_selector.matches(facts.namespace_labels):
            return f"namespace labels do not match {match.namespace_selector}"
    if match.exposure is not None:
        exposure = facts.traffic.exposure
        if exposure == "unknown":
            return _UNKNOWN_EXPOSURE
        if exposure not in match.exposure:
            return f"exposure {exposure}, want {'|'.join(sorted(match.exposure))}"
    return None


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
