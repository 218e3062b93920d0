"""Leader election with a coordination.k8s.io/v1 Lease, as client-go's leaderelection does it.

Every replica watches pods, but only one reports (the unprotected-pods gauge, Events,
restarts): the holder of the Lease `<release>-detector` in the release namespace.

- A replica takes the Lease when it does not exist (create: one creator wins, the others get
  409), when it has no holder (released), or when its record has not changed for
  `duration` seconds *as this replica observed it*: expiry is measured on the local
  monotonic clock from the moment the record last changed, never by comparing the holder's
  wall-clock renewTime with ours, so clock skew between nodes cannot elect two leaders.
- Every write is a PUT carrying the resourceVersion that was read: two replicas racing for
  an expired Lease cannot both win (the second gets 409 Conflict).
- The holder renews every `retry` seconds; when it could not renew for `renew_deadline`
  (shorter than `duration`), it stops leading before anyone else may take over.
- `release()` (on shutdown) empties holderIdentity, so a successor takes over at its next
  try rather than after `duration`.
"""

from __future__ import annotations

import threading
import time
import urllib.parse
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from webhook.cluster.api import ApiError
from webhook.logs import JsonLog

LEASE_SECONDS = 15.0
RENEW_DEADLINE_SECONDS = 10.0
RETRY_SECONDS = 2.0
REQUEST_TIMEOUT = 5.0


class LeaseApi(Protocol):
    """What the Lease needs of `ApiServer`."""

    def get(self, path: str, timeout: float, query: Any = None) -> Any: ...
    def create(self, path: str, body: Any, timeout: float = ...) -> Any: ...
    def replace(self, path: str, body: Any, timeout: float = ...) -> Any: ...


def micro_time(moment: datetime) -> str:
    """A MicroTime as the API server writes it: RFC 3339 with microseconds, UTC."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElection:
    """Campaigns for one Lease on a daemon thread; `leading` says whether we hold it now."""

    def __init__(
        self,
        api: LeaseApi,
        namespace: str,
        name: str,
        identity: str,
        log: JsonLog,
        *,
        duration: float = LEASE_SECONDS,
        renew_deadline: float = RENEW_DEADLINE_SECONDS,
        retry: float = RETRY_SECONDS,
        on_change: Callable[[bool], object] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if not retry < renew_deadline < duration:
            raise ValueError("want retry < renew_deadline < duration")
        self.api = api
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.log = log
        self.duration = duration
        self.renew_deadline = renew_deadline
        self.retry = retry
        self.on_change = on_change
        self.clock = clock
        self.wall = wall
        self.collection = (
            f"/apis/coordination.k8s.io/v1/namespaces/{urllib.parse.quote(namespace)}/leases"
        )
        self.path = f"{self.collection}/{urllib.parse.quote(name)}"
        self.leading = False
        self._observed: tuple[Any, ...] | None = None
        """(holder, renewTime, transitions) of the record last read, to see it change."""
        self._observed_at = 0.0
        self._renewed_at = 0.0
        self._failing = False
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease", daemon=True)

    def start(self) -> LeaderElection:
        self._thread.start()
        return self

    def stop(self, release: bool = True) -> None:
        """Stops campaigning; the holder releases the Lease for a fast handover."""
        self._stopped.set()
        self._thread.join(REQUEST_TIMEOUT * 2)
        if release and self.leading:
            self.release()

    def _run(self) -> None:
        while not self._stopped.is_set():
            self.try_once()
            self._stopped.wait(self.retry)

    # --- one round (also called by tests) -------------------------------------------------

    def try_once(self) -> bool:
        """Acquire or renew once; returns whether this replica leads afterwards."""
        try:
            acquired = self._acquire_or_renew()
        except ApiError as exc:
            acquired = False
            if not self._failing:
                self._failing = True
                self.log.event(
                    "lease unavailable",
                    level="warning",
                    lease=f"{self.namespace}/{self.name}",
                    error=str(exc)[:300],
                )
        else:
            self._failing = False
        now = self.clock()
        if acquired:
            self._renewed_at = now
            self._set_leading(True)
        elif self.leading and now - self._renewed_at >= self.renew_deadline:
            self._set_leading(False)  # could not renew in time: step down before expiry
        elif self.leading and self._lost:
            self._set_leading(False)
        return self.leading

    _lost = False
    """Set when the Lease was read with another holder: we lead no more, at once."""

    def _acquire_or_renew(self) -> bool:
        self._lost = False
        now_wall = self.wall()
        try:
            lease = self.api.get(self.path, REQUEST_TIMEOUT)
        except ApiError as exc:
            if exc.status != 404:
                raise
            return self._create(now_wall)
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        record = (holder, spec.get("renewTime"), spec.get("leaseTransitions"))
        now = self.clock()
        if record != self._observed:
            self._observed, self._observed_at = record, now
        duration = float(spec.get("leaseDurationSeconds") or self.duration)
        if holder and holder != self.identity:
            self._lost = True
            if now - self._observed_at < duration:
                return False  # held, and renewed within its duration as we saw it
        transitions = int(spec.get("leaseTransitions") or 0)
        new_spec = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": int(self.duration),
            "acquireTime": spec.get("acquireTime")
            if holder == self.identity
            else micro_time(now_wall),
            "renewTime": micro_time(now_wall),
            "leaseTransitions": transitions if holder == self.identity else transitions + 1,
        }
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "resourceVersion": lease["metadata"]["resourceVersion"],
            },
            "spec": new_spec,
        }
        try:
            self.api.replace(self.path, body, REQUEST_TIMEOUT)
        except ApiError as exc:
            if exc.status == 409:
                return False  # someone wrote in between: read again next round
            raise
        self._lost = False
        self._observed = (self.identity, new_spec["renewTime"], new_spec["leaseTransitions"])
        self._observed_at = self.clock()
        return True

    def _create(self, now_wall: datetime) -> bool:
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": int(self.duration),
                "acquireTime": micro_time(now_wall),
                "renewTime": micro_time(now_wall),
                "leaseTransitions": 0,
            },
        }
        try:
            self.api.create(self.collection, body, REQUEST_TIMEOUT)
        except ApiError as exc:
            if exc.status == 409:
                return False  # another replica created it first
            raise
        return True

    def release(self) -> None:
        """Empties holderIdentity if we still hold the Lease (a conditional PUT)."""
        self._set_leading(False)
        try:
            lease = self.api.get(self.path, REQUEST_TIMEOUT)
            spec = dict(lease.get("spec") or {})
            if spec.get("holderIdentity") != self.identity:
                return
            spec["holderIdentity"] = None
            spec["leaseDurationSeconds"] = 1
            lease["spec"] = spec
            self.api.replace(self.path, lease, REQUEST_TIMEOUT)
        except ApiError as exc:
            self.log.event("lease not released", level="warning", error=str(exc)[:300])

    def _set_leading(self, leading: bool) -> None:
        if leading == self.leading:
            return
        self.leading = leading
        self.log.event(
            "leading" if leading else "not leading",
            lease=f"{self.namespace}/{self.name}",
            identity=self.identity,
        )
        if self.on_change is not None:
            self.on_change(leading)
