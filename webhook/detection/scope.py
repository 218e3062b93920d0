"""Which pods the API server sends to the webhook: its entries' namespaceSelector and
objectSelector, as the chart renders them for a mode or as a live
MutatingWebhookConfiguration has them. Pure (the caller reads the configuration).

A pod is in scope when any entry matches it: the entry's namespaceSelector holds for its
namespace's labels (`kubernetes.io/metadata.name` included, as the API server sets it) and
its objectSelector for the pod's labels. Mirror pods, excluded namespaces and opt-outs are
then the core's business too (`judge` counts them protected).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from webhook.core.model import DEFAULT_EXCLUDED_NAMESPACES, INJECT_KEY
from webhook.core.selectors import Requirement, Selector, parse_selector

NAME_LABEL = "kubernetes.io/metadata.name"
MODES = ("namespace", "cluster")


class ScopeError(ValueError):
    """A webhook configuration whose selectors cannot be read."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One webhook entry of the configuration: where it sends pods from."""

    name: str
    namespace_selector: Selector
    object_selector: Selector


@dataclass(frozen=True, slots=True)
class Scope:
    entries: tuple[Entry, ...]
    webhook_namespace: str | None = None
    """Where the webhook runs (its Service's namespace), always excluded by the server."""

    def namespace_in_scope(self, labels: Mapping[str, Any]) -> bool:
        """Whether any entry may send pods from a namespace with these labels."""
        return any(entry.namespace_selector.matches(labels) for entry in self.entries)

    def pod_in_scope(self, namespace_labels: Mapping[str, Any], pod: Mapping[str, Any]) -> bool:
        metadata = pod.get("metadata")
        labels = metadata.get("labels") if isinstance(metadata, Mapping) else None
        labels = labels if isinstance(labels, Mapping) else {}
        return any(
            entry.namespace_selector.matches(namespace_labels)
            and entry.object_selector.matches(labels)
            for entry in self.entries
        )

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(entry.name for entry in self.entries)


def chart_scope(mode: str, excluded: Iterable[str], webhook_namespace: str | None) -> Scope:
    """The entries `charts/lifecycle-webhook` renders for `mode` (mutatingwebhookconfiguration
    .yaml): the system namespaces, `excluded` and the webhook's namespace never match."""
    names = [*DEFAULT_EXCLUDED_NAMESPACES, *excluded]
    if webhook_namespace:
        names.append(webhook_namespace)
    not_excluded = Requirement(NAME_LABEL, "NotIn", frozenset(names))
    not_opted_out = Requirement(INJECT_KEY, "NotIn", frozenset({"false"}))
    if mode == "cluster":
        return Scope(
            (
                Entry(
                    "all-namespaces.pods.lifecycle-webhook.io",
                    Selector(
                        expressions=(
                            Requirement(INJECT_KEY, "NotIn", frozenset({"disabled"})),
                            not_excluded,
                        )
                    ),
                    Selector(expressions=(not_opted_out,)),
                ),
            ),
            webhook_namespace,
        )
    if mode != "namespace":
        raise ScopeError(f"mode {mode!r}: want one of {', '.join(MODES)}")
    return Scope(
        (
            Entry(
                "namespace-opt-in.pods.lifecycle-webhook.io",
                Selector(
                    expressions=(
                        Requirement(INJECT_KEY, "In", frozenset({"enabled"})),
                        not_excluded,
                    )
                ),
                Selector(expressions=(not_opted_out,)),
            ),
            Entry(
                "pod-opt-in.pods.lifecycle-webhook.io",
                Selector(
                    expressions=(
                        Requirement(INJECT_KEY, "NotIn", frozenset({"enabled", "disabled"})),
                        not_excluded,
                    )
                ),
                Selector(expressions=(Requirement(INJECT_KEY, "In", frozenset({"true"})),)),
            ),
        ),
        webhook_namespace,
    )


def configuration_scope(configuration: Mapping[str, Any]) -> Scope:
    """The entries of a live MutatingWebhookConfiguration that send pod CREATEs.

    A missing selector matches everything, as the API server reads it. Entries whose rules do
    not cover pods are left out; the first Service namespace found is the webhook's.
    """
    hooks = configuration.get("webhooks")
    if not isinstance(hooks, list):
        raise ScopeError("it has no webhooks")
    entries = []
    webhook_namespace = None
    problems: list[str] = []
    for index, hook in enumerate(hooks):
        if not isinstance(hook, Mapping) or not _sends_pod_creates(hook.get("rules")):
            continue
        where = f"webhooks[{index}]"
        selectors = [
            parse_selector(hook.get(key) or {}, f"{where}.{key}", problems)
            for key in ("namespaceSelector", "objectSelector")
        ]
        if selectors[0] is None or selectors[1] is None:
            continue
        entries.append(Entry(str(hook.get("name") or where), selectors[0], selectors[1]))
        client = hook.get("clientConfig")
        service = client.get("service") if isinstance(client, Mapping) else None
        if webhook_namespace is None and isinstance(service, Mapping):
            webhook_namespace = str(service.get("namespace") or "") or None
    if problems:
        raise ScopeError("; ".join(problems))
    if not entries:
        raise ScopeError("none of its webhooks is called for pod CREATE")
    return Scope(tuple(entries), webhook_namespace)


def _sends_pod_creates(rules: Any) -> bool:
    if not isinstance(rules, list):
        return False
    for rule in rules:
        if not isinstance(rule, Mapping):
            continue
        groups = rule.get("apiGroups") or []
        resources = rule.get("resources") or []
        operations = rule.get("operations") or []
        if (
            ("" in groups or "*" in groups)
            and ("pods" in resources or "*" in resources)
            and ("CREATE" in operations or "*" in operations)
        ):
            return True
    return False
