"""Is this live pod protected? The pure core, run again on the pod as it is now, answers.

A pod the webhook mutated is a fixed point of `mutate` (running it on its own output yields no
operations), so any operation it still plans, other than rewriting the status annotation, is
something the pod runs without: a preStop, a grace period, an init order. Pure: no I/O, no
logging, no clock; the caller builds `Settings` as the server does for a review.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from webhook.core import Settings, mutate
from webhook.core.model import STATUS_KEY
from webhook.core.patch import escape

NEVER_SEEN = "never seen by the webhook"
"""No status annotation: the webhook never answered for this pod (it failed open, or was
not registered when the pod was created)."""
SETTINGS_CHANGED = "settings changed since"
"""A status annotation, but the core would now write more than a new status: the
configuration, a namespace annotation or a profile's match changed after the pod started."""

FINISHED_PHASES = frozenset({"Succeeded", "Failed"})
"""Completed pods never shut down again: nothing to protect."""

_STATUS_PATH = "/metadata/annotations/" + escape(STATUS_KEY)


@dataclass(frozen=True, slots=True)
class Verdict:
    unprotected: bool
    reason: str | None
    """`NEVER_SEEN` or `SETTINGS_CHANGED` when unprotected; None otherwise."""


PROTECTED = Verdict(unprotected=False, reason=None)


def judge(pod: Mapping[str, Any], settings: Settings) -> Verdict:
    """Whether `pod` (as the API server has it now) lacks what the webhook would add.

    Out of scope pods (excluded namespace, opted out, mirror pods, the webhook's own pods in
    its excluded namespace) are skipped by the core itself and count as protected, as do
    finished and terminating pods. The caller decides which pods the webhook configuration
    sends to the webhook at all (its namespaceSelector and objectSelector).
    """
    metadata = pod.get("metadata")
    status = pod.get("status")
    if isinstance(status, Mapping) and status.get("phase") in FINISHED_PHASES:
        return PROTECTED
    if isinstance(metadata, Mapping) and metadata.get("deletionTimestamp"):
        return PROTECTED
    mutation = mutate(dict(pod), settings)
    if mutation.outcome == "skipped":
        return PROTECTED
    # A denial (strict mode) means the webhook would have refused it: it was never admitted
    # through the webhook as it stands.
    if mutation.outcome != "denied" and all(_only_status(op) for op in mutation.ops):
        return PROTECTED
    annotations = metadata.get("annotations") if isinstance(metadata, Mapping) else None
    seen = isinstance(annotations, Mapping) and STATUS_KEY in annotations
    return Verdict(unprotected=True, reason=SETTINGS_CHANGED if seen else NEVER_SEEN)


def _only_status(op: Mapping[str, Any]) -> bool:
    """Whether `op` writes the status annotation and nothing else."""
    path = op.get("path")
    value = op.get("value")
    if path == _STATUS_PATH:
        return True
    if path == "/metadata/annotations":
        return isinstance(value, Mapping) and set(value) == {STATUS_KEY}
    if path == "/metadata":
        annotations = value.get("annotations") if isinstance(value, Mapping) else None
        return (
            isinstance(value, Mapping)
            and set(value) == {"annotations"}
            and isinstance(annotations, Mapping)
            and set(annotations) == {STATUS_KEY}
        )
    return False
