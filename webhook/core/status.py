"""`lifecycle-webhook.io/status`: what the webhook did, merged over rounds, read back by later
ones (it is how a reinvocation round recognises our own preStops and grace period)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import orjson

from webhook.core import settings as settings_table
from webhook.core.model import Profile
from webhook.core.plan import Plan, mapping


def build(
    plan: Plan,
    resolved: settings_table.Resolved,
    profile: Profile | None,
    earlier: Mapping[str, Any],
    containers: list[Any],
) -> str:
    """`lifecycle-webhook.io/status`: what was added, merged with an earlier round's record."""
    merged: dict[str, Any] = dict(mapping(earlier.get("containers")))
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
        start = mapping(earlier.get("grace")).get("from", plan.grace_record[0])
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


def parse(previous: Any) -> dict[str, Any]:
    if not isinstance(previous, str):
        return {}
    try:
        parsed = json.loads(previous)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}
