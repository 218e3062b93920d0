"""Ceilings of the grace period: `maxGracePeriodSeconds`, and one a later webhook set.

When the shutdown the settings ask for does not fit under the ceiling, the sleeps we inject
(now, or in an earlier round) give way first; a hook the user wrote never does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from webhook.core import handlers
from webhook.core import settings as settings_table
from webhook.core.messages import warning
from webhook.core.model import AdmissionWarning, Settings
from webhook.core.plan import Plan, mapping


def ceiling(
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
        recorded = mapping(earlier.get("ceiling"))
        seconds = count(recorded.get("seconds"))
        if recorded.get("source") == "webhook" and seconds is not None:
            candidates.append((seconds, "webhook"))
        set_before = count(sized(earlier))
        our_delays = [_hook_delay(containers[i]) for i in ours]
        if (set_before is not None and current < set_before) or any(
            delay is not None and delay > current for delay in our_delays
        ):
            candidates.append((current, "webhook"))
    return min(candidates) if candidates else None


def fit(
    plan: Plan,
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
    return shortened + shorten(plan, containers, ours, delays, settings.cluster_version)


def shorten(
    plan: Plan,
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


def clamp_sleeps(plan: Plan, containers: list[Any], ours: set[int], target: int) -> None:
    """A `sleep` action of ours above the final grace period is cut to it (the API rejects it)."""
    # In container order (the warnings' order); plan.prestop was filled in that order.
    for index in sorted((*plan.prestop, *ours)) if ours else list(plan.prestop):
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


def describe(ceiling: tuple[int, str]) -> str:
    source = ceiling[1]
    if source == "webhook":
        return "set by a later webhook"
    if source.startswith("profile:"):
        return f"profile {source.removeprefix('profile:')}"
    return "maxGracePeriodSeconds"


def warning_for(
    ceiling: tuple[int, str], needed: int, target: int, shortened: list[str]
) -> AdmissionWarning:
    limit, name = ceiling[0], describe(ceiling)
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


def _hook_delay(container: Mapping[str, Any]) -> int | None:
    return handlers.sleep_seconds(container["lifecycle"]["preStop"])


def sized(earlier: Mapping[str, Any]) -> Any:
    """The grace period an earlier round of ours set (None if it changed nothing)."""
    if earlier.get("reportOnly") is True:
        return None
    return mapping(earlier.get("grace")).get("to")


def count(value: Any) -> int | None:
    """A non-negative integer read back from our status annotation, else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None
