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

from webhook.core import handlers, init_order, profiles, traffic
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
    Profile,
    Settings,
)
from webhook.core.patch import set_member
from webhook.core.values import FromLoadBalancer

DEFAULT_GRACE_SECONDS = 30
"""What the API server defaults `terminationGracePeriodSeconds` to; a template may omit it."""


@dataclass(slots=True)
class _Plan:
    """What this pod gets; filled step by step, turned into operations at the end."""

    prestop: dict[int, dict[str, Any]] = field(default_factory=dict)
    resized: dict[int, dict[str, Any] | None] = field(default_factory=dict)
    """Our preStops of an earlier round, shortened (None: removed, a 0 s sleep before 1.33)."""
    poststart: dict[int, dict[str, Any]] = field(default_factory=dict)
    grace: tuple[int | None, int] | None = None
    grace_record: tuple[int, int] | None = None
    """The grace period before and after this round, for the status (also when unchanged)."""
    ceiling: tuple[int, str] | None = None
    """The ceiling that shaped the grace period, and its source, for the status."""
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
    facts = _facts(metadata, labels, namespace, settings)
    choice = _NO_CHOICE
    if settings.config.profiles:
        choice = profiles.choose(settings.config.profiles, facts, explain)
        if choice.exposure_unknown:
            plan.warnings.append(
                warning(
                    "services_unavailable",
                    "could not read the Services of namespace {}; profiles testing exposure "
                    "do not apply",
                    quoted(namespace),
                )
            )
    profile = choice.profile
    resolved = settings_table.resolve(settings.config, profile, namespace_annotations, annotations)
    if resolved["inject"] is False:
        layer = resolved.layers["inject"]
        return Mutation(
            ops=[], outcome="skipped", explanation=(f"skipped: {layer} annotation inject=false",)
        )
    if explain:
        plan.explanation.extend(choice.explanation)
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
            profile=profile.name if profile else None,
            exposure=_exposure(facts),
        )
    plan.warnings[:0] = problems

    earlier = _parse_status(annotations.get(STATUS_KEY))
    ours = _our_prestops(earlier, regular)
    _plan_lifecycle(
        plan, spec, containers, init_containers, regular, resolved, settings, facts, earlier, ours
    )
    _plan_poststart(plan, regular, resolved)
    _plan_init_order(plan, init_containers, init_names, resolved)

    features = _features(plan)
    ops = [] if resolved["report-only"] else _operations(plan, containers, init_containers, spec)
    if features:
        status = _status(plan, resolved, profile, earlier, containers)
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
        profile=profile.name if profile else None,
        exposure=_exposure(facts),
    )


_NO_CHOICE = profiles.Choice(None, (), exposure_unknown=False)


def _facts(
    metadata: Mapping[str, Any], labels: Mapping[str, Any], namespace: str, settings: Settings
) -> profiles.PodFacts:
    if settings.owner_kind is not None:
        kind, reason = settings.owner_kind, "the workload's kind"
    else:
        kind, reason = traffic.owner_kind(metadata)
    return profiles.PodFacts(
        namespace=namespace,
        labels=labels,
        namespace_labels=settings.namespace_labels,
        owner_kind=kind,
        owner_reason=reason,
        services=settings.services,
    )


def _exposure(facts: profiles.PodFacts) -> str | None:
    return facts.traffic.exposure if facts.traffic_known else None


def _our_prestops(
    earlier: Mapping[str, Any], regular: list[tuple[int, dict[str, Any]]]
) -> set[int]:
    """Containers whose preStop the status says we added (in an earlier round), when that
    round changed the pod (report-only changes nothing)."""
    recorded = _mapping(earlier.get("containers"))
    if not recorded or earlier.get("reportOnly") is True:
        return set()
    ours = set()
    for index, container in regular:
        hooks = recorded.get(container["name"])
        lifecycle = container.get("lifecycle")
        if (
            isinstance(hooks, list)
            and "preStop" in hooks
            and isinstance(lifecycle, dict)
            and isinstance(lifecycle.get("preStop"), dict)
        ):
            ours.add(index)
    return ours


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
    facts: profiles.PodFacts,
    earlier: Mapping[str, Any],
    ours: set[int],
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
    # A 0 is kept: the user's, or one a webhook called after us set (over our annotation).
    zero = explicit == 0 or (
        raw_grace == 0 and (explicit is None or (_count(_sized(earlier)) or 0) > 0)
    )
    if zero:
        plan.warnings.append(
            warning(
                "grace_zero",
                "terminationGracePeriodSeconds is 0{}: no preStop added, the kubelet kills at once",
                " (annotation)" if explicit == 0 else "",
            )
        )
        # Our own sleeps from an earlier round must fit a 0 set after us (the API checks them).
        _shorten(plan, containers, ours, dict.fromkeys(ours, 0), settings.cluster_version)
        if explicit == 0:
            target = _floor_at_user_sleeps(plan, 0, containers, init_containers, ours)
            if target != raw_grace:
                plan.grace = (raw_grace, target)
        return

    p = _prestop_seconds(plan, resolved, facts, settings)
    s = resolved["shutdown-seconds"]
    q = resolved["sidecar-shutdown-seconds"]
    sidecars = set(resolved["sidecars"] or ())
    selected = set(resolved["containers"] or (c.get("name") for _, c in regular))
    mode = _handler_mode(plan, resolved["prestop"], settings.cluster_version)

    for index, container in regular:
        name = container.get("name")
        lifecycle = container.get("lifecycle")
        if index in ours:
            plan.explanation.append(f"container {name}: keeps the preStop of an earlier round")
            continue
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

    natives = sum(
        1 for c in init_containers if isinstance(c, dict) and c.get("restartPolicy") == "Always"
    )
    current = DEFAULT_GRACE_SECONDS if raw_grace is None else max(raw_grace, 1)
    ceiling = _ceiling(resolved, earlier, current, containers, ours)
    needed, _ = _required_grace(plan, regular, natives, sidecars, p, s, q)
    shortened: list[str] = []
    if ceiling is not None and needed > ceiling[0] and (explicit is None or explicit > ceiling[0]):
        shortened = _fit_to_ceiling(
            plan, containers, regular, ours, ceiling[0] - q * natives, sidecars, s, q, settings
        )
    if shortened and ceiling is not None:
        plan.explanation.append(
            f"ceiling {ceiling[0]} ({_ceiling_name(ceiling)}) below the {needed} needed: "
            f"injected sleeps shortened: {', '.join(shortened)}"
        )
    required, terms = _required_grace(plan, regular, natives, sidecars, p, s, q)
    if explicit is not None:
        target, source = explicit, f"annotation {explicit}"
    else:
        target, source = max(current, required), f"max(current {current}, required {required})"
    uncapped = target
    capped = ceiling is not None and target > ceiling[0]
    if ceiling is not None and capped:
        target = ceiling[0]
        source += f", capped at {target} ({_ceiling_name(ceiling)})"
    target = _floor_at_user_sleeps(
        plan, target, containers, init_containers, ours, capped, explicit is not None
    )
    if ceiling is not None and (shortened or (capped and target == ceiling[0])):
        plan.warnings.append(_ceiling_warning(ceiling, needed, uncapped, shortened))
    if ceiling is not None and (capped or shortened or ceiling[1] == "webhook"):
        plan.ceiling = ceiling
    if explicit is not None and target < required:
        plan.warnings.append(
            warning(
                "grace_below_required",
                "terminationGracePeriodSeconds {} is below the "
                + f"{required}s the shutdown needs",
                target,
            )
        )
    if plan.explain:
        plan.explanation.append(
            f"grace period: required {required} = {terms}; final {target} = {source}"
        )
    _clamp_sleeps(plan, containers, ours, target)
    if target != (DEFAULT_GRACE_SECONDS if raw_grace is None else raw_grace):
        plan.grace = (raw_grace, target)
    plan.grace_record = (DEFAULT_GRACE_SECONDS if raw_grace is None else raw_grace, target)


def _prestop_seconds(
    plan: _Plan, resolved: settings_table.Resolved, facts: profiles.PodFacts, settings: Settings
) -> int:
    """P; `fromLoadBalancer or N` reads the delay the pod's load-balancer Services state."""
    value = resolved["prestop-seconds"]
    if not isinstance(value, FromLoadBalancer):
        return int(value)
    seen = facts.traffic
    if seen.exposure == "unknown":
        plan.warnings.append(
            warning(
                "services_unavailable",
                "could not read the Services of namespace {}; "
                + f"prestop-seconds is its fallback, {value.fallback}",
                quoted(facts.namespace),
            )
        )
        plan.explanation.append(f"prestop-seconds {value.fallback}: Services unknown, fallback")
        return value.fallback
    stated = seen.deregistration_delay()
    if stated is None:
        plan.explanation.append(
            f"prestop-seconds {value.fallback}: fallback, no load-balancer Service selecting "
            f"the pod states {traffic.DEREGISTRATION_DELAY} ({seen.describe()})"
        )
        return value.fallback
    seconds, service = stated
    bounded = min(seconds, settings.config.max_seconds)
    bound = f", bounded by maxSeconds {bounded}" if bounded < seconds else ""
    plan.explanation.append(
        f"prestop-seconds {bounded}: Service {service} states "
        f"{traffic.DEREGISTRATION_DELAY}={seconds}{bound}"
    )
    return bounded


def _ceiling(
    resolved: settings_table.Resolved,
    earlier: Mapping[str, Any],
    current: int,
    containers: list[Any],
    ours: set[int],
) -> tuple[int, str] | None:
    """The lowest ceiling in force, and its source: `maxGracePeriodSeconds` (its layer), or
    `webhook` when a mutating webhook that ran after us lowered the grace period.

    We never leave a grace period below what our own round set, nor below one of our own
    sleeps; a pod that carries our status and shows either was changed after us. Its grace
    period is then a ceiling, recorded in the status so that later rounds keep to it.
    """
    candidates: list[tuple[int, str]] = []
    configured = resolved["max-grace-period-seconds"]
    if configured is not None:
        candidates.append((configured, resolved.layers["max-grace-period-seconds"]))
    if earlier and earlier.get("reportOnly") is not True:
        recorded = _mapping(earlier.get("ceiling"))
        seconds = _count(recorded.get("seconds"))
        if recorded.get("source") == "webhook" and seconds is not None:
            candidates.append((seconds, "webhook"))
        set_before = _count(_sized(earlier))
        our_delays = [_hook_delay(containers[i]) for i in ours]
        if (set_before is not None and current < set_before) or any(
            delay is not None and delay > current for delay in our_delays
        ):
            candidates.append((current, "webhook"))
    return min(candidates) if candidates else None


def _fit_to_ceiling(
    plan: _Plan,
    containers: list[Any],
    regular: list[tuple[int, dict[str, Any]]],
    ours: set[int],
    room: int,
    sidecars: set[Any],
    s: int,
    q: int,
    settings: Settings,
) -> list[str]:
    """Shorten injected sleeps (new, or ours from an earlier round) until each container's
    sleep + drain fits in `room`; never below 0, never a hook the user wrote."""
    delays: dict[int, int] = {}
    for index, container in regular:
        after = q if container.get("name") in sidecars else s
        delays[index] = max(room - after, 0)
    shortened = []
    for index in sorted(plan.prestop):
        handler = plan.prestop[index]
        delay = handlers.sleep_seconds(handler)
        if delay is None or delay <= delays[index]:
            continue
        resized = handlers.with_delay(handler, delays[index], settings.cluster_version)
        if resized is None:
            del plan.prestop[index]
        else:
            plan.prestop[index] = resized
        shortened.append(f"{containers[index].get('name')} {delay}->{delays[index]}")
    return shortened + _shorten(plan, containers, ours, delays, settings.cluster_version)


def _shorten(
    plan: _Plan,
    containers: list[Any],
    ours: set[int],
    delays: Mapping[int, int],
    version: tuple[int, int],
) -> list[str]:
    """Our own preStops from an earlier round, cut to `delays` where they are longer."""
    shortened = []
    for index in sorted(ours):
        hook = containers[index]["lifecycle"]["preStop"]
        delay = handlers.sleep_seconds(hook)
        if delay is None or delay <= delays[index]:
            continue
        plan.resized[index] = handlers.with_delay(hook, delays[index], version)
        shortened.append(f"{containers[index].get('name')} {delay}->{delays[index]}")
    return shortened


def _clamp_sleeps(plan: _Plan, containers: list[Any], ours: set[int], target: int) -> None:
    """A `sleep` action of ours above the final grace period is cut to it (the API rejects it)."""
    for index in sorted(plan.prestop.keys() | ours):
        handler: dict[str, Any] | None = plan.prestop.get(index)
        if handler is None:
            handler = plan.resized.get(index, containers[index]["lifecycle"]["preStop"])
        seconds = handlers.action_sleep_seconds(handler)
        if seconds is None or seconds <= target:
            continue
        clamped = {"sleep": {"seconds": target}}
        if index in plan.prestop:
            plan.prestop[index] = clamped
        else:
            plan.resized[index] = clamped
        plan.warnings.append(
            warning(
                "sleep_clamped",
                "preStop sleep of container {} "
                + f"cut from {seconds}s to the {target}s grace period",
                containers[index].get("name"),
            )
        )


def _ceiling_name(ceiling: tuple[int, str]) -> str:
    source = ceiling[1]
    if source == "webhook":
        return "set by a later webhook"
    if source.startswith("profile:"):
        return f"profile {source.removeprefix('profile:')}"
    return "maxGracePeriodSeconds"


def _ceiling_warning(
    ceiling: tuple[int, str], needed: int, target: int, shortened: list[str]
) -> AdmissionWarning:
    limit, name = ceiling[0], _ceiling_name(ceiling)
    if not shortened:
        return warning(
            "grace_ceiling",
            "grace period {}" + f"s lowered to the {limit}s ceiling ({name})",
            target,
        )
    return warning(
        "grace_ceiling",
        f"grace period capped at {limit}s ({name}), {needed}s needed; sleeps cut: {{}}",
        ", ".join(shortened),
    )


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
    natives: int,
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
            if index in plan.resized:
                pre = plan.resized[index]
            known = handlers.sleep_seconds(pre)
            delay = 0 if pre is None else known if known is not None else p
        after = q if listed else s
        if delay + after > longest:
            longest, longest_term = delay + after, f"{name}: {delay}+{after}"
    required = longest + q * natives
    terms = f"({longest_term})" + (f" + {natives}x{q} native sidecars" if natives else "")
    return required, terms


def _floor_at_user_sleeps(
    plan: _Plan,
    target: int,
    containers: list[Any],
    init_containers: list[Any],
    ours: set[int],
    capped: bool = False,
    explicit: bool = True,
) -> int:
    """The grace period may not go below a sleep the user wrote (the API rejects the pod)."""
    sleeps = [
        (seconds, container.get("name"))
        for index, container in enumerate((*containers, *init_containers))
        if isinstance(container, dict) and isinstance(container.get("lifecycle"), dict)
        for hook in ("preStop", "postStart")
        if not (hook == "preStop" and index in ours)
        if (seconds := handlers.action_sleep_seconds(container["lifecycle"].get(hook))) is not None
    ]
    largest, name = max(sleeps, default=(0, None), key=lambda item: item[0])
    if largest <= target:
        return target
    if capped:
        plan.warnings.append(
            warning(
                "user_sleep_above_ceiling",
                "container {} " + f"sleeps {largest}s in its own hook, above the {target}s "
                "ceiling: grace period kept at its sleep",
                name,
            )
        )
    else:
        plan.warnings.append(
            warning(
                "grace_raised",
                ("termination-grace-period-seconds {}" if explicit else "grace period {}s")
                + f" raised to {largest}, the pod's longest sleep",
                target,
            )
        )
    return largest


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
    if plan.prestop or plan.resized:
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
    for index, handler in sorted(plan.resized.items()):
        path = f"/spec/containers/{index}/lifecycle/preStop"
        if handler is None:
            ops.append({"op": "remove", "path": path})
        else:
            ops.append({"op": "replace", "path": path, "value": handler})
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
    profile: Profile | None,
    earlier: Mapping[str, Any],
    containers: list[Any],
) -> str:
    """`lifecycle-webhook.io/status`: what was added, merged with an earlier round's record."""
    merged: dict[str, Any] = dict(_mapping(earlier.get("containers")))
    for index in sorted(plan.prestop.keys() | plan.poststart.keys()):
        name = str(containers[index].get("name"))
        merged[name] = [
            hook
            for hook, planned in (("preStop", plan.prestop), ("postStart", plan.poststart))
            if index in planned
        ]
    for index, handler in plan.resized.items():
        name = str(containers[index].get("name"))
        if handler is None and isinstance(merged.get(name), list):
            merged[name] = [hook for hook in merged[name] if hook != "preStop"]
            if not merged[name]:
                del merged[name]
    status: dict[str, Any] = {
        "settings": {key: resolved.layers[key] for key in sorted(resolved.layers)},
    }
    if profile is not None:
        status["profile"] = profile.name
    if merged:
        status["containers"] = merged
    if plan.grace_record is not None:
        start = _mapping(earlier.get("grace")).get("from", plan.grace_record[0])
        status["grace"] = {"from": start, "to": plan.grace_record[1]}
    elif "grace" in earlier:
        status["grace"] = earlier["grace"]
    if plan.ceiling is not None:
        status["ceiling"] = {"seconds": plan.ceiling[0], "source": plan.ceiling[1]}
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


def _hook_delay(container: Mapping[str, Any]) -> int | None:
    return handlers.sleep_seconds(container["lifecycle"]["preStop"])


def _sized(earlier: Mapping[str, Any]) -> Any:
    """The grace period an earlier round of ours set (None if it changed nothing)."""
    if earlier.get("reportOnly") is True:
        return None
    return _mapping(earlier.get("grace")).get("to")


def _count(value: Any) -> int | None:
    """A non-negative integer read back from our status annotation, else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []
