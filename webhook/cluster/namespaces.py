"""Namespace annotations and labels for the settings layer between the config file and the pod.

The request carries only the namespace's name. A list+watch cache answers almost every
lookup without I/O; a miss costs one live GET with a short budget, and a failure means
"could not be read" (None), which the core turns into a warning.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from webhook.cluster.api import ApiError, ApiServer
from webhook.cluster.live import LOOKUP_TIMEOUT, NEEDS_LOOKUP, LiveReads, Lookup
from webhook.cluster.watch import Informer
from webhook.core.model import PREFIX
from webhook.logs import JsonLog


@dataclass(frozen=True)
class NamespaceInfo:
    """What the webhook keeps of a Namespace: annotations under our prefix, and all labels
    (profiles match namespace labels with a label selector). Treat both as read-only."""

    annotations: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)


EMPTY = NamespaceInfo()
"""A namespace that does not exist, or settings that are not read (no cluster answers)."""


class NamespaceSource(Protocol):
    def peek(self, name: str) -> NamespaceInfo | Literal[Lookup.NEEDED] | None:
        """Without blocking: the namespace's info, None when it could not be read, or
        NEEDS_LOOKUP when only I/O can answer (then call `lookup`, off the event loop)."""
        ...

    def lookup(self, name: str) -> NamespaceInfo | None:
        """Like `peek`, reading live when needed; None when it could not be read. May block
        ~0.5 s."""
        ...


class StaticNamespaces:
    """Fixed annotations (and labels) by namespace name; an unknown namespace has none."""

    def __init__(
        self,
        annotations: Mapping[str, Mapping[str, str]] | None = None,
        labels: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        annotations, labels = annotations or {}, labels or {}
        self.namespaces = {
            name: NamespaceInfo(dict(annotations.get(name, {})), dict(labels.get(name, {})))
            for name in {*annotations, *labels}
        }

    def peek(self, name: str) -> NamespaceInfo:
        return self.namespaces.get(name, EMPTY)

    def lookup(self, name: str) -> NamespaceInfo:
        return self.peek(name)


def _string_map(value: object, prefix: str = "") -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {
        k: v
        for k, v in value.items()
        if isinstance(k, str) and k.startswith(prefix) and isinstance(v, str)
    }


def namespace_info(namespace: dict[str, Any]) -> NamespaceInfo:
    """Only our annotations matter; others (last-applied, ...) are not kept."""
    meta = namespace.get("metadata")
    if not isinstance(meta, dict):
        return EMPTY
    return NamespaceInfo(
        _string_map(meta.get("annotations"), PREFIX), _string_map(meta.get("labels"))
    )


class NamespaceCache:
    """A list+watch cache of Namespaces (our annotations and the labels).

    The watch store is the only source of truth for namespaces it has seen. A namespace it
    has not delivered yet (created a moment ago) is read live (`LiveReads`: one read per
    namespace at a time, kept apart for a few seconds, never written into the store).
    """

    def __init__(
        self, api: ApiServer, log: JsonLog, lookup_timeout: float = LOOKUP_TIMEOUT
    ) -> None:
        self.api = api
        self.lookup_timeout = lookup_timeout
        self.informer = Informer(
            api,
            "/api/v1/namespaces",
            namespace_info,
            name="namespace",
            log=log,
            unreachable_effect="namespace annotations are not read until it is",
            failing_effect="cache misses are read live; failed reads warn per pod",
        )
        self._live = LiveReads(self._read, lookup_timeout)

    def start(self) -> NamespaceCache:
        self.informer.start()
        return self

    def stop(self) -> None:
        self.informer.stop()

    def peek(self, name: str) -> NamespaceInfo | Literal[Lookup.NEEDED] | None:
        info = self.informer.get(name)
        if info is not None:
            return info
        live = self._live.remembered(name)
        if live is not NEEDS_LOOKUP:
            return live
        if self.informer.unreachable and not self.api.reached:
            return EMPTY  # no cluster answers: no namespace settings, and no warning per pod
        return NEEDS_LOOKUP

    def lookup(self, name: str) -> NamespaceInfo | None:
        found = self.peek(name)
        return self._live.read(name) if found is NEEDS_LOOKUP else found

    def _read(self, name: str) -> NamespaceInfo | None:
        try:
            namespace = self.api.get(
                f"/api/v1/namespaces/{urllib.parse.quote(name, safe='')}", self.lookup_timeout
            )
        except ApiError as exc:
            return EMPTY if exc.status == 404 else None
        return namespace_info(namespace) if isinstance(namespace, dict) else None
