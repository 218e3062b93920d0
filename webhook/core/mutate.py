"""`mutate(pod, settings) -> Mutation`: the whole decision for one pod, as patch operations.

Pure: no I/O, no clock, no logging; the pod is read, never modified. Every operation is
chosen against the exact object passed in (see `patch`), and running `mutate` on its own
output yields no operations.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from webhook.core import ceilings, handlers, init_order, profiles, status, traffic
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
from webhook.core.plan import DEFAULT_GRACE_SECONDS, Plan, mapping
from webhook.core.values import FromLoadBalancer


def mutate(pod: Pod, settings: Settings, *, explain: bool = False) -> Mutation:
    """The operations for `pod`; with `explain`, also each decision in words (for the CLI)."""
    metadata = mapping(pod.get("metadata"))
    annotations = mapping(metadata.get("annotations"))
    labels = mapping(metadata.get("labels"))
    namespace = settings.namespace or str(metadata.get("namespace") or "")

    skip = _skip_reason(annotations, labels, namespace, settings)
    if not isinstance(pod.get("spec"), dict):
        skip = "spec is not an object"  # no API server sends this; no patch could apply to it
    if skip:
        return Mutation(ops=[], outcome="skipped", explanation=(printable(f"skipped: {skip}"),))

    plan = Plan(explain=explain)
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
    facts = profiles.PodFacts(
        namespace=namespace,
        metadata=metadata,
        labels=labels,
        namespace_labels=settings.namespace_labels,
        services=settings.services,
        known_owner_kind=settings.owner_kind,
    )
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

    spec = mapping(pod.get("spec"))
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

    earlier = status.parse(annotations.get(STATUS_KEY))
    ours = _our_prestops(earlier, regular)
    _plan_lifecycle(
        plan, spec, containers, init_containers, regular, resolved, settings, facts, earlier, ours
    )
    _plan_poststart(plan, regular, resolved)
    _plan_init_order(plan, init_containers, init_names, resolved)

    features = _features(plan)
    ops = [] if resolved["report-only"] else _operations(plan, containers, init_containers, spec)
    if features:
        record = status.build(plan, resolved, profile, earlier, containers)
        if record != annotations.get(STATUS_KEY) and isinstance(pod.get("metadata", {}), dict):
            ops.append(_annotation_op(pod, STATUS_KEY, record))
    if resolved["report-only"] and features:
        plan.explanation.append("report-only: nothing but the status annotation is changed")
    return Mutation(
        ops=ops,
        outcome="mutated" if ops else "unchanged",
        warnings=tuple(_unique(plan.warnings)),
        features=features,
        # Escaped only when asked for: the server never shows it, and it is per review.
        explanation=tuple(printable(line) for line in plan.explanation) if explain else (),
        profile=profile.name if profile else None,
        exposure=_exposure(facts),
    )


_NO_CHOICE = profiles.Choice(None, (), exposure_unknown=False)


def _exposure(facts: profiles.PodFacts) -> str | None:
    return facts.traffic.exposure if facts.traffic_known else None


def _our_prestops(
    earlier: Mapping[str, Any], regular: list[tuple[int, dict[str, Any]]]
) -> set[int]:
    """Containers whose preStop the status says we added (in an earlier round), when that
    round changed the pod (report-only changes nothing)."""
    recorded = mapping(earlier.get("containers"))
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
    plan: Plan,
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
        raw_grace == 0 and (explicit is None or (ceilings.count(ceilings.sized(earlier)) or 0) > 0)
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
        ceilings.shorten(plan, containers, ours, dict.fromkeys(ours, 0), settings.cluster_version)
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
    ceiling = ceilings.ceiling(resolved, earlier, current, containers, ours)
    needed, terms = _required_grace(plan, regular, natives, sidecars, p, s, q)
    required = needed
    shortened: list[str] = []
    if ceiling is not None and needed > ceiling[0] and (explicit is None or explicit > ceiling[0]):
        shortened = ceilings.fit(
            plan, containers, regular, ours, ceiling[0] - q * natives, sidecars, s, q, settings
        )
    if shortened and ceiling is not None:
        plan.explanation.append(
            f"ceiling {ceiling[0]} ({ceilings.describe(ceiling)}) below the {needed} needed: "
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
        source += f", capped at {target} ({ceilings.describe(ceiling)})"
    target = _floor_at_user_sleeps(
        plan, target, containers, init_containers, ours, capped, explicit is not None
    )
    if ceiling is not None and (shortened or (capped and target == ceiling[0])):
        plan.warnings.append(ceilings.warning_for(ceiling, needed, uncapped, shortened))
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
    ceilings.clamp_sleeps(plan, containers, ours, target)
    if target != (DEFAULT_GRACE_SECONDS if raw_grace is None else raw_grace):
        plan.grace = (raw_grace, target)
    plan.grace_record = (DEFAULT_GRACE_SECONDS if raw_grace is None else raw_grace, target)


def _prestop_seconds(
    plan: Plan, resolved: settings_table.Resolved, facts: profiles.PodFacts, settings: Settings
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


def _handler_mode(plan: Plan, mode: str, version: tuple[int, int]) -> str:
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
    plan: Plan,
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
    plan: Plan,
    target: int,
    containers: list[Any],
    init_containers: list[Any],
    ours: set[int],
    capped: bool = False,
    explicit: bool = True,
) -> int:
    """The grace period may not go below a sleep the user wrote (the API rejects the pod)."""
    largest, name = 0, None
    for index, container in enumerate((*containers, *init_containers)):
        lifecycle = container.get("lifecycle") if isinstance(container, dict) else None
        if not lifecycle or not isinstance(lifecycle, dict):
            continue
        for hook in ("preStop", "postStart"):
            seconds = handlers.action_sleep_seconds(lifecycle.get(hook))
            if (
                seconds is not None
                and seconds > largest
                and not (hook == "preStop" and index in ours)
            ):
                largest, name = seconds, container.get("name")
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
    plan: Plan, regular: list[tuple[int, dict[str, Any]]], resolved: settings_table.Resolved
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
    plan: Plan,
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


def _features(plan: Plan) -> tuple[Feature, ...]:
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
    plan: Plan, containers: list[Any], init_containers: list[Any], spec: Mapping[str, Any]
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


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []
