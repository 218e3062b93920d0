"""The workload that owns a pod, and the command that gives its pods the webhook's hooks.

Pod -> ReplicaSet -> Deployment and Pod -> Job -> CronJob take one read of the middle
object; StatefulSet, DaemonSet and any other controller are read off the pod itself. The
reads go through a callable the caller supplies (a GET, an informer's cache, a test's dict),
so this module stays pure; `OwnerResolver` asks once per middle object.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True, order=True)
class Owner:
    """What to restart: `kind` is "Pod" for a pod no controller owns."""

    namespace: str
    kind: str
    name: str

    @property
    def key(self) -> str:
        """`kind/name` as kubectl names it, e.g. `deployment/web`."""
        return f"{self.kind.lower()}/{self.name}"


MIDDLE_KINDS: Mapping[str, tuple[str, str]] = {
    "ReplicaSet": ("apps/v1", "replicasets"),
    "Job": ("batch/v1", "jobs"),
}
"""Controllers that are themselves usually owned: (apiVersion, resource) to read them."""
_ABOVE = {"ReplicaSet": "Deployment", "Job": "CronJob"}
_ROLLOUT_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet"})

Fetch = Callable[[str, str, str], Mapping[str, Any] | None]
"""(kind, namespace, name) -> the object's metadata, or None when it is gone."""


def controller_reference(metadata: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The owner reference marked controller, else the first one (of those with a kind and
    a name)."""
    refs = metadata.get("ownerReferences")
    if not isinstance(refs, list):
        return None
    valid = [r for r in refs if isinstance(r, Mapping) and r.get("kind") and r.get("name")]
    chosen = next((r for r in valid if r.get("controller") is True), None)
    if chosen is None and valid:
        chosen = valid[0]
    return chosen


def controller(metadata: Mapping[str, Any]) -> tuple[str, str] | None:
    """(kind, name) of `controller_reference`."""
    chosen = controller_reference(metadata)
    if chosen is None:
        return None
    return str(chosen["kind"]), str(chosen["name"])


def pod_owner(pod: Mapping[str, Any]) -> Owner:
    """The pod's direct owner (before a ReplicaSet or Job is looked up), or the pod itself."""
    metadata = pod.get("metadata")
    metadata = metadata if isinstance(metadata, Mapping) else {}
    namespace = str(metadata.get("namespace") or "")
    found = controller(metadata)
    if found is None:
        return Owner(namespace, "Pod", str(metadata.get("name") or ""))
    return Owner(namespace, found[0], found[1])


def above(owner: Owner, metadata: Mapping[str, Any] | None) -> Owner:
    """The Deployment of a ReplicaSet or the CronJob of a Job, given the middle object's
    metadata; the owner itself when it has none (or it could not be read)."""
    expected = _ABOVE.get(owner.kind)
    if expected is None or metadata is None:
        return owner
    found = controller(metadata)
    if found is None or found[0] != expected:
        return owner
    return Owner(owner.namespace, found[0], found[1])


class OwnerResolver:
    """`pod -> Owner` with one fetch per ReplicaSet or Job, remembered (only keys and uids
    are kept); past `remember` entries the memory starts over, so it stays bounded."""

    def __init__(self, fetch: Fetch, remember: int | None = None) -> None:
        self.fetch = fetch
        self.remember = remember
        self.resolved: dict[Owner, tuple[Owner, str]] = {}

    def __call__(self, pod: Mapping[str, Any]) -> Owner:
        return self.resolve(pod_owner(pod))[0]

    def resolve(self, direct: Owner, uid: str = "") -> tuple[Owner, str]:
        """The workload to report for a pod whose direct owner is `direct` (uid `uid`): a
        ReplicaSet's Deployment or a Job's CronJob, with its uid; else `direct` itself."""
        if direct.kind not in MIDDLE_KINDS:
            return direct, uid
        known = self.resolved.get(direct)
        if known is None:
            metadata = self.fetch(direct.kind, direct.namespace, direct.name)
            found = above(direct, metadata)
            if found != direct and metadata is not None:
                reference = controller_reference(metadata)
                uid = str(reference.get("uid", "")) if reference is not None else ""
            known = (found, uid)
            if self.remember is not None and len(self.resolved) >= self.remember:
                self.resolved.clear()
            self.resolved[direct] = known
        return known


def fix_command(owner: Owner) -> str:
    """What gives the owner's pods the webhook's hooks (new pods pass through the webhook)."""
    where = f"-n {owner.namespace}"
    if owner.kind in _ROLLOUT_KINDS:
        return f"kubectl rollout restart {owner.key} {where}"
    if owner.kind == "Pod":
        return (
            f"no controller recreates it: kubectl delete pod {owner.name} {where}, "
            "then create it again from its manifest"
        )
    if owner.kind == "ReplicaSet":
        return (
            f"delete its pods one at a time (kubectl delete pod <pod> {where}); "
            f"{owner.key} recreates them"
        )
    if owner.kind == "Job":
        return (
            f"a Job cannot be restarted: its running pods keep no hooks until they finish; "
            f"recreate it from its manifest (kubectl delete {owner.key} {where}, then apply it)"
        )
    if owner.kind == "CronJob":
        return (
            f"the next scheduled Job is protected; for the running one wait, or "
            f"kubectl delete job <job> {where} and kubectl create job --from={owner.key} "
            f"<name> {where}"
        )
    return f"restart {owner.key} {where} the way its controller allows (its pods are recreated)"
