"""Services per namespace, for a pod's exposure (issue 9: the profiles feature).

The server starts it when its configuration needs exposure (a profile tests it, or a
setting is `fromLoadBalancer`); until then a pod annotated `fromLoadBalancer` is served by
live reads. It keeps, of every Service, only what exposure needs, as a
plain dict the pure core can consume and the CLI can build from manifests alike
(`webhook.core.traffic.service_summary` is that one conversion):

    {"name": "web", "type": "LoadBalancer", "selector": {"app": "web"},
     "annotations": {TARGET_GROUP_ATTRIBUTES: "deregistration_delay.timeout_seconds=120"}}

- `type` is `spec.type`, "ClusterIP" when absent (the API server's default; headless
  Services are ClusterIP too);
- `selector` is `spec.selector`; empty selects no pod, as for a Service without one
  (its endpoints are managed by someone else) and for an ExternalName Service;
- `annotations` holds TARGET_GROUP_ATTRIBUTES only, when set.

`ServiceCache.services_in(namespace)` gives the namespace's Services sorted by name, or
None when they are unknown (the caller warns; an unknown exposure matches no exposure test).
"""

from __future__ import annotations

import threading
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Literal, Protocol

from webhook.cluster.api import ApiError, ApiServer
from webhook.cluster.live import LOOKUP_TIMEOUT, NEEDS_LOOKUP, LiveReads, Lookup
from webhook.cluster.watch import Informer
from webhook.core.traffic import TARGET_GROUP_ATTRIBUTES, Service, service_summary
from webhook.logs import JsonLog

__all__ = [
    "TARGET_GROUP_ATTRIBUTES",
    "Service",
    "ServiceCache",
    "ServiceSource",
    "Services",
    "StaticServices",
    "service_summary",
]

Services = tuple[Service, ...]


class ServiceSource(Protocol):
    def peek(self, namespace: str) -> Services | Literal[Lookup.NEEDED] | None:
        """Without blocking: the namespace's Services, None when unknown, or NEEDS_LOOKUP
        when only I/O can answer (then call `services_in`, off the event loop)."""
        ...

    def services_in(self, namespace: str) -> Services | None:
        """Like `peek`, reading live when needed; None when unknown. May block ~0.5 s."""
        ...


class StaticServices:
    """Fixed Services by namespace (a namespace not listed has none); without a cluster,
    `StaticServices(None)`: unknown everywhere."""

    def __init__(self, by_namespace: Mapping[str, Sequence[Service]] | None = None) -> None:
        self.by_namespace = (
            None
            if by_namespace is None
            else {name: tuple(found) for name, found in by_namespace.items()}
        )

    def peek(self, namespace: str) -> Services | None:
        if self.by_namespace is None:
            return None
        return self.by_namespace.get(namespace, ())

    def services_in(self, namespace: str) -> Services | None:
        return self.peek(namespace)


class ServiceCache:
    """A list+watch cache of all Services, indexed by namespace.

    While the informer is current (synced, not failing) `services_in` answers from memory.
    Otherwise, one live list of the namespace's Services per namespace at a time, with the
    same budget and short memory as a namespace lookup. When nothing has ever answered at
    the API server's address, the answer is None at once (no read that cannot succeed).
    """

    def __init__(
        self, api: ApiServer, log: JsonLog, lookup_timeout: float = LOOKUP_TIMEOUT
    ) -> None:
        self.api = api
        self.lookup_timeout = lookup_timeout
        self._names: dict[str, dict[str, Service]] = {}
        """namespace -> name -> Service, under `_lock`."""
        self._by_namespace: dict[str, Services] = {}
        """What readers get, per namespace; dropped on a change, rebuilt on the next read."""
        self._lock = threading.Lock()
        self._started = False
        self.informer: Informer[Service] = Informer(
            api,
            "/api/v1/services",
            service_summary,
            name="service",
            log=log,
            on_add=self._put,
            on_update=lambda key, _old, new: self._put(key, new),
            on_delete=self._remove,
            unreachable_effect="Service exposure is unknown until it is",
            failing_effect="Services are read live per namespace; failed reads leave exposure "
            "unknown",
        )
        self._live = LiveReads(self._read, lookup_timeout)

    def start(self) -> ServiceCache:
        """Starts the watch; again is a no-op (the server starts it when a config needs it)."""
        with self._lock:
            started, self._started = self._started, True
        if not started:
            self.informer.start()
        return self

    def stop(self) -> None:
        self.informer.stop()

    def peek(self, namespace: str) -> Services | Literal[Lookup.NEEDED] | None:
        """Without blocking: the Services, None when unknown, NEEDS_LOOKUP when only I/O
        can answer (then call `services_in`, off the event loop)."""
        if self.informer.current:
            return self._indexed(namespace)
        live = self._live.remembered(namespace)
        if live is not NEEDS_LOOKUP:
            return live
        if self.informer.unreachable and not self.api.reached:
            return None
        return NEEDS_LOOKUP

    def services_in(self, namespace: str) -> Services | None:
        """The namespace's Services sorted by name; None when they could not be read. May
        block ~0.5 s."""
        found = self.peek(namespace)
        return self._live.read(namespace) if found is NEEDS_LOOKUP else found

    def _indexed(self, namespace: str) -> Services:
        """The namespace's sorted tuple, built on first read after a change (a list of
        thousands of Services then costs one sort per namespace, not one per Service)."""
        services = self._by_namespace.get(namespace)
        if services is None:
            with self._lock:
                names = self._names.get(namespace) or {}
                services = tuple(sorted(names.values(), key=lambda service: service["name"]))
                self._by_namespace[namespace] = services
        return services

    def _put(self, key: str, service: Service) -> None:
        namespace = key.partition("/")[0]
        with self._lock:
            self._names.setdefault(namespace, {})[service["name"]] = service
            self._by_namespace.pop(namespace, None)

    def _remove(self, key: str, service: Service) -> None:
        namespace = key.partition("/")[0]
        with self._lock:
            names = self._names.get(namespace, {})
            names.pop(service["name"], None)
            if not names:
                self._names.pop(namespace, None)
            self._by_namespace.pop(namespace, None)

    def _read(self, namespace: str) -> Services | None:
        try:
            listed = self.api.get(
                f"/api/v1/namespaces/{urllib.parse.quote(namespace, safe='')}/services",
                self.lookup_timeout,
            )
        except ApiError:
            return None
        items = listed.get("items") if isinstance(listed, dict) else None
        if not isinstance(items, list):
            return None
        found = [service_summary(item) for item in items if isinstance(item, dict)]
        return tuple(sorted((s for s in found if s is not None), key=lambda s: s["name"]))
