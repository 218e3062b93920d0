"""Continuous detection in the server: the pods that missed the webhook, counted and reported.

A pods informer (the shared `Informer`, page_size 100, finished pods left out by a field
selector) runs `judge` on every pod in the webhook's scope with the settings a review would
get now (the config, the namespace cache's annotations and labels, the Services), and keeps
of an unprotected pod only a small tuple: its direct owner, its revision and the reason.
Protected pods keep nothing. The counts follow the informer's callbacks.

Only the holder of the Lease (webhook/cluster/lease.py) reports: it publishes
`lifecycle_webhook_unprotected_pods{namespace}` (the other replicas export no series), emits one
Warning Event on the owning workload per rollout, and, with `remediate: restart`, restarts the
owners one at a time. Every replica watches, so a new holder reports at once.

A rollout is (namespace, direct owner, revision): a ReplicaSet (one per pod-template-hash of a
Deployment), a StatefulSet or DaemonSet with the pod's controller-revision-hash, a Job, or a
bare pod. Its Event has a name derived from that key, so a second create is 409 AlreadyExists:
never repeated, across replicas and restarts, while the API server keeps the Event (1 h).

A change of the config, of the cluster version or of a namespace's annotations or labels
re-judges every pod (the informer lists again; at most once per RELIST_SECONDS).
"""

from __future__ import annotations

import hashlib
import socket
import sys
import threading
import time
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from webhook.cluster.api import ApiError, ApiServer
from webhook.cluster.lease import LeaderElection, micro_time
from webhook.cluster.namespaces import NamespaceCache, NamespaceInfo
from webhook.cluster.watch import Informer
from webhook.cluster.workloads import middle_metadata
from webhook.core.model import Settings
from webhook.core.profiles import annotations_read_services
from webhook.detection.judge import judge
from webhook.detection.owners import Owner, OwnerResolver, controller_reference, fix_command
from webhook.detection.scope import chart_scope
from webhook.logs import JsonLog

if TYPE_CHECKING:
    from webhook.app import ServerState

Mode = Literal["namespace", "cluster"]

TICK_SECONDS = 1.0
SETTLE_SECONDS = 5.0
"""A rollout's Event waits this long after its first unprotected pod, so it counts the burst."""
RELIST_SECONDS = 10.0
REVISION_LABEL = "controller-revision-hash"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
RESTARTABLE = {
    "Deployment": "deployments",
    "StatefulSet": "statefulsets",
    "DaemonSet": "daemonsets",
}
EVENT_REASON = "PodsMissedWebhook"
COMPONENT = "lifecycle-webhook"
OWNERS_REMEMBERED = 10_000
OWNER_READ_TIMEOUT = 5.0

Unprotected = tuple[str, str, str, str, str]
"""What is kept of an unprotected pod: (owner kind, owner name, owner uid, revision, reason)."""
RolloutKey = tuple[str, str, str, str]
"""(namespace, owner kind, owner name, revision)."""


def _direct_owner(metadata: Mapping[str, Any]) -> tuple[str, str, str]:
    """(kind, name, uid) of the controller reference, else the first one; ("Pod", "", "")."""
    chosen = controller_reference(metadata)
    if chosen is None:
        return "Pod", "", ""
    return str(chosen["kind"]), str(chosen["name"]), str(chosen.get("uid", ""))


RETRY_SECONDS = 60.0
"""After a failed Event or owner read, the next try for that rollout (no log line a second)."""
SCAN_SECONDS = 5.0
"""How often remediation looks for a workload to restart (the restarts are rarer still)."""


@dataclass
class Rollout:
    pods: int = 0
    first_seen: float = 0.0
    reported: bool = False
    next_try: float = 0.0


class Detector:
    """The pods informer, the counts, and (on the Lease holder) the reports and restarts."""

    def __init__(
        self,
        api: ApiServer,
        state: ServerState,
        namespaces: NamespaceCache,
        log: JsonLog,
        *,
        mode: Mode,
        lease_namespace: str | None,
        lease_name: str,
        identity: str | None = None,
        settle_seconds: float = SETTLE_SECONDS,
        lease_seconds: float = 15.0,
    ) -> None:
        self.api = api
        self.state = state
        self.namespaces = namespaces
        self.log = log
        self.mode = mode
        self.settle_seconds = settle_seconds
        self.identity = identity or f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"
        self.metrics = state.metrics
        self._lock = threading.Lock()
        self._by_namespace: Counter[str] = Counter()
        self._rollouts: dict[RolloutKey, Rollout] = {}
        self._published: set[str] = set()
        self._owners = OwnerResolver(
            lambda kind, namespace, name: middle_metadata(
                self.api, kind, namespace, name, OWNER_READ_TIMEOUT
            ),
            remember=OWNERS_REMEMBERED,
        )
        self._restarted: dict[Owner, set[RolloutKey]] = {}
        """Workloads this process restarted, and the rollouts they had then."""
        self._gave_up: set[Owner] = set()
        self._last_restart = float("-inf")
        self._next_scan = 0.0
        self._judged_with: tuple[Any, ...] = ()
        self.webhook_namespace = lease_namespace
        self._scope = chart_scope(mode, state.config.excluded_namespaces, lease_namespace)
        self._rejudge_wanted = False
        self._last_relist = 0.0
        self._stopped = threading.Event()
        self.pods: Informer[Unprotected] = Informer(
            api,
            "/api/v1/pods",
            self._judged,
            name="pod",
            log=log,
            page_size=100,
            field_selector="status.phase!=Succeeded,status.phase!=Failed",
            on_add=lambda key, new: self._count(key, new, +1),
            on_update=self._recount,
            on_delete=lambda key, old: self._count(key, old, -1),
            failing_effect="unprotected pods are not counted until it answers",
        )
        self.lease: LeaderElection | None = None
        if lease_namespace:
            duration = lease_seconds
            self.lease = LeaderElection(
                api,
                lease_namespace,
                lease_name,
                self.identity,
                log,
                duration=duration,
                renew_deadline=duration * 2 / 3,
                retry=duration / 7.5,
                on_change=lambda leading: self.metrics.detector_leader.set(1 if leading else 0),
            )
        self._thread = threading.Thread(target=self._run, name="detector", daemon=True)

    @property
    def leading(self) -> bool:
        return self.lease.leading if self.lease is not None else True

    def start(self) -> Detector:
        previous = self.namespaces.informer.on_update

        def namespace_changed(key: str, old: NamespaceInfo, new: NamespaceInfo) -> None:
            self._rejudge_wanted = True
            if previous is not None:
                previous(key, old, new)

        self.namespaces.informer.on_update = namespace_changed
        if self.lease is not None:
            self.lease.start()
        else:
            self.metrics.detector_leader.set(1)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self.pods.stop()
        if self.lease is not None:
            self.lease.stop()

    # --- the informer thread --------------------------------------------------------------

    def _judged(self, pod: dict[str, Any]) -> Unprotected | None:
        metadata = pod.get("metadata") or {}
        namespace = str(metadata.get("namespace") or "")
        info = self.namespaces.lookup(namespace)
        if info is None or not self._scope.pod_in_scope(info.labels, pod):
            return None  # out of scope, or the namespace cannot be read: not judged
        labels = metadata.get("labels") or {}
        state = self.state
        services = None
        if state.services_needed or annotations_read_services(
            info.annotations, metadata.get("annotations")
        ):
            services = state.services.services_in(namespace)
        settings = Settings(
            config=state.config,
            namespace=namespace,
            namespace_annotations=info.annotations,
            namespace_labels=info.labels,
            services=services,
            cluster_version=state.cluster_version,
        )
        verdict = judge(pod, settings)
        if not verdict.unprotected:
            return None
        kind, name, uid = _direct_owner(metadata)
        if kind == "Pod":
            name = str(metadata.get("name") or "")
        revision = labels.get(REVISION_LABEL, "") if kind in ("StatefulSet", "DaemonSet") else ""
        intern = sys.intern
        return (
            intern(kind),
            intern(name),
            intern(uid),
            intern(str(revision)),
            verdict.reason or "",
        )

    def _recount(self, key: str, old: Unprotected, new: Unprotected) -> None:
        self._count(key, old, -1)
        self._count(key, new, +1)

    def _count(self, key: str, value: Unprotected, sign: int) -> None:
        namespace = key.partition("/")[0]
        rollout = (namespace, value[0], value[1], value[3])
        with self._lock:
            self._by_namespace[namespace] += sign
            if self._by_namespace[namespace] <= 0:
                del self._by_namespace[namespace]
            entry = self._rollouts.get(rollout)
            if entry is None:
                entry = self._rollouts[rollout] = Rollout(first_seen=time.monotonic())
            entry.pods += sign
            if entry.pods <= 0:
                del self._rollouts[rollout]

    def counts(self) -> dict[str, int]:
        """Unprotected pods by namespace, as this replica sees them."""
        with self._lock:
            return dict(self._by_namespace)

    # --- the detector thread --------------------------------------------------------------

    def _run(self) -> None:
        self.namespaces.informer.synced.wait()
        self._judged_with = self._judging_inputs()
        self.pods.start()
        while not self._stopped.wait(TICK_SECONDS):
            try:
                self.tick()
            except Exception as exc:  # a bug here must not stop detection for good
                self.log.event(
                    "detector failed", level="error", error=f"{type(exc).__name__}: {exc}"
                )

    def _judging_inputs(self) -> tuple[Any, ...]:
        state = self.state
        return (id(state.config), state.cluster_version, state.services_needed)

    def tick(self) -> None:
        now = time.monotonic()
        inputs = self._judging_inputs()
        if inputs != self._judged_with:
            self._judged_with, self._rejudge_wanted = inputs, True
            excluded = self.state.config.excluded_namespaces
            self._scope = chart_scope(self.mode, excluded, self.webhook_namespace)
        if self._rejudge_wanted and now - self._last_relist >= RELIST_SECONDS:
            self._rejudge_wanted, self._last_relist = False, now
            self.pods.relist()
        self._publish()
        if not (self.leading and self.pods.current):
            return
        with self._lock:
            due = [
                (key, entry.pods)
                for key, entry in self._rollouts.items()
                if not entry.reported
                and now - entry.first_seen >= self.settle_seconds
                and now >= entry.next_try
            ]
        for key, pods in due:
            self._report(key, pods)
        if self.state.config.remediate == "restart" and now >= self._next_scan:
            self._next_scan = now + SCAN_SECONDS
            self._remediate(now)

    def _publish(self) -> None:
        gauge = self.metrics.unprotected_pods
        if not self.leading:
            for namespace in self._published:
                gauge.remove(namespace)
            self._published.clear()
            return
        counts = self.counts()
        for namespace in self._published - counts.keys():
            gauge.labels(namespace).set(0)
        for namespace, pods in counts.items():
            gauge.labels(namespace).set(pods)
            self._published.add(namespace)

    # --- owners ---------------------------------------------------------------------------

    def owner(self, key: RolloutKey, uid: str) -> tuple[Owner, str]:
        """The workload to report and restart (a ReplicaSet's Deployment, a Job's CronJob),
        and its uid; one GET per ReplicaSet or Job, remembered."""
        namespace, kind, name, _ = key
        return self._owners.resolve(Owner(namespace, kind, name), uid)

    def _uid_of(self, key: RolloutKey) -> str:
        for value in self.pods.snapshot().values():
            if (value[0], value[1], value[3]) == key[1:]:
                return value[2]
        return ""

    # --- Events ---------------------------------------------------------------------------

    def _report(self, key: RolloutKey, pods: int) -> None:
        try:
            workload, uid = self.owner(key, self._uid_of(key))
            created = self._create_event(key, workload, uid, pods)
        except ApiError as exc:
            self.log.event(
                "unprotected pods not reported",
                level="warning",
                namespace=key[0],
                owner=f"{key[1].lower()}/{key[2]}",
                error=str(exc)[:300],
                retry_seconds=RETRY_SECONDS,
            )
            with self._lock:
                entry = self._rollouts.get(key)
                if entry is not None:
                    entry.next_try = time.monotonic() + RETRY_SECONDS
            return
        with self._lock:
            entry = self._rollouts.get(key)
            if entry is not None:
                entry.reported = True
        if created:
            self.log.event(
                "unprotected pods reported",
                level="warning",
                namespace=workload.namespace,
                workload=workload.key,
                pods=pods,
                fix=fix_command(workload),
            )

    def _create_event(self, key: RolloutKey, workload: Owner, uid: str, pods: int) -> bool:
        """One Warning Event per rollout; False when it exists already (reported before)."""
        digest = hashlib.sha256("\0".join(key).encode()).hexdigest()[:16]
        now = micro_time(datetime.now(UTC)).split(".")[0] + "Z"
        plural = "pod" if pods == 1 else "pods"
        message = (
            f"{pods} {plural} started without lifecycle-webhook's shutdown hooks; "
            f"run {fix_command(workload)}"
        )
        involved: dict[str, Any] = {
            "apiVersion": "v1" if workload.kind == "Pod" else _api_version(workload.kind),
            "kind": workload.kind,
            "name": workload.name,
            "namespace": workload.namespace,
        }
        if uid:
            involved["uid"] = uid
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{workload.name[:200]}.{digest}",
                "namespace": workload.namespace,
            },
            "involvedObject": involved,
            "reason": EVENT_REASON,
            "message": message[:1024],
            "type": "Warning",
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": self.identity[:128],
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            self.api.create(f"/api/v1/namespaces/{_q(workload.namespace)}/events", event)
        except ApiError as exc:
            if exc.status == 409:
                return False
            raise
        return True

    # --- remediation ----------------------------------------------------------------------

    def _remediate(self, now: float) -> None:
        """Restarts at most one workload per remediateIntervalSeconds."""
        config = self.state.config
        if now - self._last_restart < config.remediate_interval_seconds:
            return
        with self._lock:
            rollouts = sorted(self._rollouts)
        by_workload: dict[Owner, set[RolloutKey]] = {}
        for key in rollouts:
            if key[0] in config.excluded_namespaces or key[1] in ("Pod", "Job"):
                continue
            try:
                workload, _ = self.owner(key, "")
            except ApiError:
                continue
            by_workload.setdefault(workload, set()).add(key)
        for fixed in self._restarted.keys() - by_workload.keys():
            del self._restarted[fixed]  # its pods are protected now: a later miss counts anew
        self._gave_up &= by_workload.keys()
        for workload, keys in sorted(by_workload.items()):
            if workload.kind not in RESTARTABLE or workload in self._gave_up:
                continue
            before = self._restarted.get(workload)
            if before is not None:
                if keys - before:
                    # pods created after our restart missed the webhook too: restarting
                    # again would only loop while the webhook is not called
                    self._gave_up.add(workload)
                    self._log_remediation(
                        workload, "given_up", "pods created after the restart are unprotected too"
                    )
                continue
            self._restart(workload, keys, now)
            return

    def _restart(self, workload: Owner, keys: set[RolloutKey], now: float) -> None:
        self._last_restart = now
        self._restarted[workload] = set(keys)
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        patch = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}}
        path = (
            f"/apis/apps/v1/namespaces/{_q(workload.namespace)}/"
            f"{RESTARTABLE[workload.kind]}/{_q(workload.name)}"
        )
        try:
            self.api.patch(path, patch)
        except ApiError as exc:
            self._log_remediation(workload, "error", str(exc)[:300])
            return
        self._log_remediation(workload, "restarted", f"{RESTARTED_AT}={stamp}")

    def _log_remediation(self, workload: Owner, result: str, detail: str) -> None:
        self.metrics.remediations.labels(workload.kind, result).inc()
        self.log.event(
            "remediation",
            level="warning" if result != "restarted" else "info",
            namespace=workload.namespace,
            workload=workload.key,
            result=result,
            detail=detail,
        )


def _api_version(kind: str) -> str:
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"):
        return "apps/v1"
    if kind in ("Job", "CronJob"):
        return "batch/v1"
    return "v1"


def _q(text: str) -> str:
    return urllib.parse.quote(text, safe="")
