"""Lifecycle handlers: the preStop and postStart hooks we add, and how long a preStop holds SIGTERM.

Never `tcpSocket`: the API accepts it but the kubelet fails it at run time.
"""

from __future__ import annotations

import re
from typing import Any

SLEEP_ACTION_SINCE = (1, 30)
"""PodLifecycleSleepAction is on by default from 1.30 (beta), GA in 1.34."""
SLEEP_ZERO_SINCE = (1, 33)
"""PodLifecycleSleepActionAllowZero is on by default from 1.33; before it 0 fails validation."""

_SHELL_SLEEP = re.compile(r"\s*sleep\s+([0-9]+)\s*")
_SHELLS = frozenset({"sh", "bash", "ash", "dash"})


def prestop_handler(
    *,
    mode: str,
    delay: int,
    command: list[str] | None,
    http_path: str,
    http_port: int | str | None,
    cluster_version: tuple[int, int],
) -> dict[str, Any] | None:
    """The handler to inject, or None when this container gets no hook.

    `mode` is already resolved (`auto` turned into `sleep` or `exec` by the caller).
    """
    zero_allowed = cluster_version >= SLEEP_ZERO_SINCE
    if mode == "sleep":
        if delay == 0 and not zero_allowed:
            return None
        return {"sleep": {"seconds": delay}}
    if mode == "exec":
        if command is not None:
            return {"exec": {"command": list(command)}}
        if delay == 0 and not zero_allowed:
            return None
        return {"exec": {"command": ["sleep", str(delay)]}}
    if mode == "http":
        if http_port is None:
            return None
        return {"httpGet": {"path": http_path, "port": http_port}}
    return None


def poststart_handler(command: list[str]) -> dict[str, Any]:
    return {"exec": {"command": list(command)}}


MAX_KNOWN_SLEEP = 2**62
"""A longer sleep (no API server accepts one past int64) is not a sleep the grace period can be
computed from: adding the drain to it could overflow the int64 the API server decodes."""


def _known(seconds: int) -> int | None:
    return seconds if 0 <= seconds <= MAX_KNOWN_SLEEP else None


def sleep_seconds(handler: Any) -> int | None:
    """How long a handler is known to sleep: `sleep.seconds`, `sleep N`, or `sh -c "sleep N"`."""
    if not isinstance(handler, dict):
        return None
    sleep = handler.get("sleep")
    if isinstance(sleep, dict):
        seconds = sleep.get("seconds")
        if isinstance(seconds, int) and not isinstance(seconds, bool):
            return _known(seconds)
        return None
    exec_action = handler.get("exec")
    command = exec_action.get("command") if isinstance(exec_action, dict) else None
    if not isinstance(command, list) or not all(isinstance(arg, str) for arg in command):
        return None
    program = command[0].rsplit("/", 1)[-1] if command else ""
    if program == "sleep" and len(command) == 2 and command[1].isascii() and command[1].isdigit():
        return _known(int(command[1])) if len(command[1]) < 20 else None
    if program in _SHELLS and len(command) == 3 and command[1] == "-c":
        match = _SHELL_SLEEP.fullmatch(command[2])
        if match and match.group(1).isascii():
            return _known(int(match.group(1))) if len(match.group(1)) < 20 else None
    return None


def with_delay(
    handler: dict[str, Any], delay: int, cluster_version: tuple[int, int]
) -> dict[str, Any] | None:
    """The same kind of sleep as `handler` (whose `sleep_seconds` is known), `delay` long;
    None when a 0 s delay means no hook (before 1.33, as for a fresh injection)."""
    if delay == 0 and cluster_version < SLEEP_ZERO_SINCE:
        return None
    if "sleep" in handler:
        return {"sleep": {"seconds": delay}}
    command = list(handler["exec"]["command"])
    if len(command) == 2:
        command[1] = str(delay)
    else:
        command[2] = f"sleep {delay}"
    return {"exec": {"command": command}}


def action_sleep_seconds(handler: Any) -> int | None:
    """Only the `sleep` action: the API server checks it against the grace period."""
    if isinstance(handler, dict) and isinstance(handler.get("sleep"), dict):
        seconds = handler["sleep"].get("seconds")
        if isinstance(seconds, int) and not isinstance(seconds, bool):
            return _known(seconds)
    return None
