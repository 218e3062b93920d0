"""`mutate(pod, settings) -> Mutation`: the whole decision for one pod, as patch operations.

Pure: no I/O, no clock, no logging; the pod is read, never modified. Every operation is
chosen against the exact object passed in (see `patch`), and running `mutate` on its own
output yields no operations.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from webhook.core import handlers, init_order
from webhook.core import settings as settings_table
from webhook.core.messages import WARNING_PREFIX, printable, quoted, warning
from webhook.core.model import (
    INJECT_KEY,
    MIRROR_ANNOTATION,
    PREFIX,
    STATUS_KEY,
    AdmissionWarning,
    Feature,
    Mutation,
    PatchOp,
    Pod,
    Settings,
)
from webhook.core.patch import set_member

DEFAULT_GRACE_SECONDS = 30
"""What the API server defaults `terminationGracePeriodSeconds` to; a template may omit it."""


@dataclass(slots=True)
class _Plan:
    """What this pod gets; filled step by step, turned into operations at the end."""

    prestop: dict[int, dict[str, Any]] = field(default_factory=dict)
    poststart: dict[int, dict[str, Any]] = field(default_factory=dict)
    grace: tuple[int | None, int] | None = None
    init_order: list[str] | None = None
    warnings: list[AdmissionWarning] = field(default_factory=list)
    explanation: list[str] = field(default_factory=list)
    explain: bool = False


def mutate(pod: Pod, settings: Settings, *, explain: bool = False) -> Mutation:
    """The operations for `pod`; with `explain`, also each decision in words (for the CLI)."""
    metadata = _mapping(pod.get("metadata"))
    annotations = _mapping(metadata.get("annotations"))
    labels = _mapping(metadata.get("labels"))
    namespace = settings.namespace or str(metadata.get("namespace") or "")

    skip = _skip_reason(annotations, labels, namespace, settings)
    if not isinstance(pod.get("spec"), dict):
        skip = "spec is not an object"  # no API server sends this; no patch could apply to it
    if skip:
        return Mutation(ops=[], outcome="skipped", explanation=(printable(f"skipped: {skip}"),))

    plan = _Plan(explain=explain)
    namespace_annotations = settings.namespace_annotations
    if namespace_annotations is None:
        plan.warnings.append(
            warning(
                "namespace_unavailable",
                "could not read namespace {}; its annotations are not applied",
                quoted(namespace),
            )
        )
        namespace_annotations = {}
    resolved = settings_table.resolve(settings.config, namespace_annotations, annotations)
    if resolved["inject"] is False:
        layer = resolved.layers["inject"]
        return Mutation(
            ops=[], outcome="skipped", explanation=(f"skipped: {layer} annotation inject=false",)
        )
    if explain:
        plan.explanation.extend(_explain_settings(resolved))

    spec = _mapping(pod.get("spec"))
    containers = _list(spec.get("containers"))
    init_containers = _list(spec.get("initContainers"))
    # A container without a string name cannot be valid; it is left alone (and not counted).
    regular = [
        (i, c)
        for i, c in enumerate(containers)
        if isinstance(c, dict) and isinstance(c.get("name"), str)
    ]
    regular_names = [c.get("name") for _, c in regular]
    init_names = [c.get("name") if isinstance(c, dict) else None for c in init_containers]

    problems = list(resolved.problems)
    problems += _unmatched("containers", resolved["containers"], regular_names, "container")
    problems += _unmatched("sidecars", resolved["sidecars"], regular_names, "container")
    problems += _unmatched("init-order", resolved["init-order"], init_names, "init container")
    if problems and settings.config.strict and not resolved["report-only"]:
        denial = "lifecycle-webhook: strict mode: " + "; ".join(
            problem.text.removeprefix(WARNING_PREFIX) for problem in problems
        )
        return Mutation(
            ops=[],
            outcome="denied",
            warnings=tuple(problems),
            denial=denial,
            explanation=tuple(
                printable(line) for line in (*plan.explanation, "denied: strict mode")
            ),
        )
    plan.warnings[:0] = problems

    _plan_lifecycle(plan, spec, containers, init_containers, regular, resolved, settings)
    _plan_poststart(plan, regular, resolved)
    _plan_init_order(plan, init_containers, init_names, resolved)

    features = _features(plan)
    ops = [] if resolved["report-only"] else _operations(plan, containers, init_containers, spec)
    if features:
        status = _status(plan, resolved, annotations.get(STATUS_KEY), containers)
        if status != annotations.get(STATUS_KEY) and isinstance(pod.get("metadata", {}), dict):
            ops.append(_annotation_op(pod, STATUS_KEY, status))
    if resolved["report-only"] and features:
        plan.explanation.append("report-only: nothing but the status annotation is changed")
    return Mutation(
        ops=ops,
        outcome="mutated" if ops else "unchanged",
        warnings=tuple(_unique(plan.warnings)),
        features=features,
        explanation=tuple(printable(line) for line in plan.explanation),
    )


def _skip_reason(
    annotations: Mapping[str, Any],
    labels: Mapping[str, Any],
    namespace: str,
    settings: Settings,
) -> str | None:
    if MIRROR_ANNOTATION in annotations:
        return "mirror pod (static pods are the kubelet's)"
    if namespace in settings.config.excluded_namespaces:
        return f"namespace {namespace} is excluded"
    if labels.get(INJECT_KEY) == "false":
        return f"label {INJECT_KEY}=false"
    return None


def _plan_lifecycle(
    plan: _Plan,
    spec: Mapping[str, Any],
    containers: list[Any],
    init_containers: list[Any],
    regular: list[tuple[int, dict[str, Any]]],
    resolved: settings_table.Resolved,
    settings: Settings,
) -> None:
    """preStop hooks and the grace period: they are sized together (SPEC 4.1, 4.2)."""
    restart_policy = spec.get("restartPolicy") or "Always"
    if restart_policy != "Always" and resolved["jobs"] != "inject":
        plan.explanation.append(
            f"restartPolicy {restart_policy}: no preStop, grace period unchanged (jobs=skip)"
        )
        return
    raw_grace = spec.get("terminationGracePeriodSeconds")
    if raw_grace is not None and (not isinstance(raw_grace, int) or isinstance(raw_grace, bool)):
        plan.warnings.append(
            warning(
                "invalid_pod",
                "terminationGracePeriodSeconds {} is not an integer; no preStop added",
                quoted(printable(raw_grace)),
            )
        )
        return
    explicit = resolved["termination-grace-period-seconds"]
    zero = explicit == 0 if explicit is not None else raw_grace == 0
    if zero:
        plan.warnings.append(
            warning(
                "grace_zero",
                "terminationGracePeriodSeconds is 0{}: no preStop added, the kubelet kills at once",
                " (annotation)" if explicit == 0 else "",
            )
        )
        if explicit == 0:
            target = _floor_at_user_sleeps(plan, 0, containers, init_containers)
            if target != raw_grace:
                plan.grace = (raw_grace, target)
        return

    p = resolved["prestop-seconds"]
    s = resolved["shutdown-seconds"]
    q = resolved["sidecar-shutdown-seconds"]
    sidecars = set(resolved["sidecars"] or ())
    selected = set(resolved["containers"] or (c.get("name") for _, c in regular))
    mode = _handler_mode(plan, resolved["prestop"], settings.cluster_version)

    for index, container in regular:
        name = container.get("name")
        lifecycle = container.get("lifecycle")
        if name not in selected:
            plan.explanation.append(f"container {name}: not selected, no preStop")
            continue
        if lifecycle is not None and not isinstance(lifecycle, dict):
            plan.explanation.append(f"container {name}: unreadable lifecycle, left alone")
            continue
        if lifecycle and lifecycle.get("preStop") is not None:
            plan.explanation.append(f"container {name}: keeps its own preStop")
            continue
        delay = p + s if name in sidecars else p
        port = resolved["prestop-http-port"] or _first_container_port(container)
        handler = handlers.prestop_handler(
            mode=mode,
            delay=delay,
            command=resolved["prestop-exec"],
            http_path=resolved["prestop-http-path"],
            http_port=port,
            cluster_version=settings.cluster_version,
        )
        if handler is None:
            if mode == "http":
                plan.warnings.append(
                    warning("no_port", "container {} has no port for an http preStop", name)
                )
            plan.explanation.append(f"container {name}: no preStop ({_why_no_handler(mode)})")
            continue
        plan.prestop[index] = handler
        role = "listed sidecar, P+S" if name in sidecars else "P"
        plan.explanation.append(f"container {name}: preStop {_describe(handler)} ({role})")

    required, terms = _required_grace(plan, regular, init_containers, sidecars, p, s, q)
    current = DEFAULT_GRACE_SECONDS if raw_grace is None else max(raw_grace, 1)
    if explicit is not None:
        target = _floor_at_user_sleeps(plan, explicit, containers, init_containers)
        if target < required:
            plan.warnings.append(
                warning(
                    "grace_below_required",
                    "terminationGracePeriodSeconds {} is below the "
                    + f"{required}s the shutdown needs",
                    target,
                )
            )
        source = f"annotation {explicit}"
    else:
        target = max(current, required)
        source = f"max(current {current}, required {required})"
    if plan.explain:
        plan.explanation.append(
            f"grace period: required {required} = {terms}; final {target} = {source}"
        )

    for index, handler in plan.prestop.items():
        seconds = handlers.action_sleep_seconds(handler)
        if seconds is not None and seconds > target:
            handler["sleep"] = {"seconds": target}
            plan.warnings.append(
                warning(
                    "sleep_clamped",
                    "preStop sleep of container {} "
                    + f"cut from {seconds}s to the {target}s grace period",
                    containers[index].get("name"),
                )
            )
    if target != (DEFAULT_GRACE_SECONDS if raw_grace is None else raw_grace):
        plan.grace = (raw_grace, target)


def _handler_mode(plan: _Plan, mode: str, version: tuple[int, int]) -> str:
    has_sleep = version >= handlers.SLEEP_ACTION_SINCE
    if mode == "auto":
        return "sleep" if has_sleep else "exec"
    if mode == "sleep" and not has_sleep:
        plan.warnings.append(
            warning(
                "sleep_unsupported",
                "prestop=sleep needs Kubernetes 1.30+, cluster is {}; using exec sleep instead",
                f"{version[0]}.{version[1]}",
            )
        )
        return "exec"
    return mode


def _required_grace(
    plan: _Plan,
    regular: list[tuple[int, dict[str, Any]]],
    init_containers: list[Any],
    sidecars: set[Any],
    p: int,
    s: int,
    q: int,
) -> tuple[int, str]:
    """max over regular containers of (delay + after), plus Q per native sidecar (SPEC 4.2)."""
    longest, longest_term = 0, "0"
    for index, container in regular:
        name = container.get("name")
        listed = name in sidecars
        if index in plan.prestop:
            known = handlers.sleep_seconds(plan.prestop[index])
            delay = known if known is not None else (p + s if listed else p)
        else:
            lifecycle = container.get("lifecycle")
            pre = lifecycle.get("preStop") if isinstance(lifecycle, dict) else None
            known = handlers.sleep_seconds(pre)
            delay = 0 if pre is None else known if known is not None else p
        after = q if listed else s
        if delay + after > longest:
            longest, longest_term = delay + after, f"{name}: {delay}+{after}"
    natives = sum(
        1 for c in init_containers if isinstance(c, dict) and c.get("restartPolicy") == "Always"
    )
    required = longest + q * natives
    terms = f"({longest_term})" + (f" + {natives}x{q} native sidecars" if natives else "")
    return required, terms


def _floor_at_user_sleeps(
    plan: _Plan, target: int, containers: list[Any], init_containers: list[Any]
) -> int:
    """An explicit grace period may not go below a sleep the user wrote (the API rejects it)."""
    sleeps = [
        seconds
        for container in (*containers, *init_containers)
        if isinstance(container, dict) and isinstance(container.get("lifecycle"), dict)
        for hook in ("preStop", "postStart")
        if (seconds := handlers.action_sleep_seconds(container["lifecycle"].get(hook))) is not None
    ]
    largest = max(sleeps, default=0)
    if largest > target:
        plan.warnings.append(
            warning(
                "grace_raised",
                "termination-grace-period-seconds {} "
                + f"raised to {largest}, the pod's longest sleep",
                target,
            )
        )
        return largest
    return target


def _plan_poststart(
    plan: _Plan, regular: list[tuple[int, dict[str, Any]]], resolved: settings_table.Resolved
) -> None:
    command = resolved["poststart-exec"]
    if command is None:
        return
    selected = set(resolved["containers"] or (c.get("name") for _, c in regular))
    for index, container in regular:
        lifecycle = container.get("lifecycle")
        name = container.get("name")
        if name not in selected or (lifecycle is not None and not isinstance(lifecycle, dict)):
            continue
        if lifecycle and lifecycle.get("postStart") is not None:
            plan.explanation.append(f"container {name}: keeps its own postStart")
            continue
        plan.poststart[index] = handlers.poststart_handler(command)
        plan.explanation.append(f"container {name}: postStart exec {command}")


def _plan_init_order(
    plan: _Plan,
    init_containers: list[Any],
    init_names: list[Any],
    resolved: settings_table.Resolved,
) -> None:
    order = resolved["init-order"]
    if order is None or not init_containers:
        return
    if not all(isinstance(name, str) for name in init_names) or len(set(init_names)) != len(
        init_names
    ):
        plan.explanation.append("init order: init container names missing or repeated, left alone")
        return
    new_order = init_order.reorder(init_names, order)
    if new_order == init_names:
        plan.explanation.append(f"init order: already {','.join(init_names)}")
        return
    plan.init_order = new_order
    plan.explanation.append(f"init order: {','.join(init_names)} -> {','.join(new_order)}")


def _features(plan: _Plan) -> tuple[Feature, ...]:
    features: list[Feature] = []
    if plan.prestop:
        features.append("prestop")
    if plan.grace is not None:
        features.append("grace")
    if plan.init_order is not None:
        features.append("init_order")
    if plan.poststart:
        features.append("poststart")
    return tuple(features)


def _operations(
    plan: _Plan, containers: list[Any], init_containers: list[Any], spec: Mapping[str, Any]
) -> list[PatchOp]:
    ops: list[PatchOp] = []
    for index in sorted(plan.prestop.keys() | plan.poststart.keys()):
        container = containers[index]
        additions = {}
        if index in plan.prestop:
            additions["preStop"] = plan.prestop[index]
        if index in plan.poststart:
            additions["postStart"] = plan.poststart[index]
        base = f"/spec/containers/{index}"
        lifecycle = container.get("lifecycle")
        if isinstance(lifecycle, dict):
            parent = base + "/lifecycle"
            ops.extend(set_member(lifecycle, parent, k, v) for k, v in additions.items())
        else:
            ops.append(set_member(container, base, "lifecycle", additions))
    if plan.grace is not None:
        ops.append(set_member(spec, "/spec", "terminationGracePeriodSeconds", plan.grace[1]))
    if plan.init_order is not None:
        by_name = {c["name"]: c for c in init_containers}
        ops.append(
            {
                "op": "replace",
                "path": "/spec/initContainers",
                "value": [by_name[name] for name in plan.init_order],
            }
        )
    return ops


def _annotation_op(pod: Pod, key: str, value: str) -> PatchOp:
    metadata = pod.get("metadata")
    if not isinstance(metadata, dict):
        return {"op": "add", "path": "/metadata", "value": {"annotations": {key: value}}}
    annotations = metadata.get("annotations")
    if not isinstance(annotations, dict):
        return set_member(metadata, "/metadata", "annotations", {key: value})
    return set_member(annotations, "/metadata/annotations", key, value)


def _status(
    plan: _Plan,
    resolved: settings_table.Resolved,
    previous: Any,
    containers: list[Any],
) -> str:
    """`lifecycle-webhook.io/status`: what was added, merged with an earlier round's record."""
    added: dict[str, list[str]] = {}
    for index in sorted(plan.prestop.keys() | plan.poststart.keys()):
        name = str(containers[index].get("name"))
        added[name] = [
            hook
            for hook, planned in (("preStop", plan.prestop), ("postStart", plan.poststart))
            if index in planned
        ]
    status: dict[str, Any] = {
        "settings": {key: resolved.layers[key] for key in sorted(resolved.layers)},
    }
    earlier = _parse_status(previous)
    merged_containers = {**_mapping(earlier.get("containers")), **added}
    if merged_containers:
        status["containers"] = merged_containers
    if plan.grace is not None:
        earlier_grace = _mapping(earlier.get("grace"))
        before = DEFAULT_GRACE_SECONDS if plan.grace[0] is None else plan.grace[0]
        start = earlier_grace.get("from", before)
        status["grace"] = {"from": start, "to": plan.grace[1]}
    elif "grace" in earlier:
        status["grace"] = earlier["grace"]
    if plan.init_order is not None:
        status["initOrder"] = plan.init_order
    elif "initOrder" in earlier:
        status["initOrder"] = earlier["initOrder"]
    if resolved["report-only"]:
        status["reportOnly"] = True
    return orjson.dumps(status, option=orjson.OPT_SORT_KEYS).decode()


def _parse_status(previous: Any) -> dict[str, Any]:
    if not isinstance(previous, str):
        return {}
    try:
        parsed = json.loads(previous)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _unmatched(
    key: str, listed: tuple[str, ...] | None, pool: list[Any], what: str
) -> list[AdmissionWarning]:
    if not listed:
        return []
    missing = [name for name in listed if name != "*" and name not in pool]
    if not missing:
        return []
    return [warning("unmatched_name", f"{PREFIX}{key}: no {what} named {{}}", ",".join(missing))]


def _explain_settings(resolved: settings_table.Resolved) -> Iterable[str]:
    for key in sorted(resolved.layers):
        yield f"setting {key} = {_show(resolved[key])} ({resolved.layers[key]})"


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _describe(handler: Mapping[str, Any]) -> str:
    if "sleep" in handler:
        return f"sleep {handler['sleep']['seconds']}s"
    if "exec" in handler:
        return f"exec {handler['exec']['command']}"
    return f"httpGet {handler['httpGet']['path']} port {handler['httpGet']['port']}"


def _why_no_handler(mode: str) -> str:
    if mode == "none":
        return "prestop=none"
    if mode == "http":
        return "no port for httpGet"
    return "a 0 s delay needs Kubernetes 1.33+"


def _first_container_port(container: Mapping[str, Any]) -> int | None:
    for port in _list(container.get("ports")):
        if isinstance(port, dict):
            number = port.get("containerPort")
            if isinstance(number, int) and not isinstance(number, bool):
                return number
    return None


def _unique(warnings: list[AdmissionWarning]) -> list[AdmissionWarning]:
    seen: set[str] = set()
    out = []
    for item in warnings:
        if item.text not in seen:
            seen.add(item.text)
            out.append(item)
    return out


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []
