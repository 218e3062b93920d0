"""Strict parsers for setting values, shared by annotations and the configuration file.

Each parser takes the raw value and the `maxSeconds` bound and returns the parsed value or
raises `InvalidValue` with a short reason ("want integer 0..3600"). Python's own `int()` is too
lenient for this (it accepts " 30", "+30", "3_0" and non-ASCII digits), hence the grammars here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_ASCII_DIGITS = re.compile(r"[0-9]+")
_PORT_NAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")
_CLUSTER_VERSION = re.compile(r"1\.([0-9]{1,3})")
_FROM_LOAD_BALANCER = re.compile(r"fromLoadBalancer or ([0-9]+)")
_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS_SUBDOMAIN = re.compile(rf"{_DNS_LABEL}(\.{_DNS_LABEL})*", re.ASCII)
_NAME_PART = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?", re.ASCII)
SHELL = "/bin/sh"


class InvalidValue(ValueError):
    """A value that does not follow its setting's grammar; `reason` says what was wanted."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


Parser = Callable[[Any, int], Any]


def parse_seconds(raw: Any, max_seconds: int) -> int:
    if isinstance(raw, bool):
        raise InvalidValue(f"want integer 0..{max_seconds}")
    if isinstance(raw, int):
        value = raw
    elif isinstance(raw, str) and _ASCII_DIGITS.fullmatch(raw):
        value = int(raw)
    else:
        raise InvalidValue(f"want integer 0..{max_seconds}")
    if not 0 <= value <= max_seconds:
        raise InvalidValue(f"want integer 0..{max_seconds}")
    return value


@dataclass(frozen=True, slots=True)
class FromLoadBalancer:
    """`prestop-seconds: fromLoadBalancer or N`: the deregistration delay that the load-balancer
    Services selecting the pod state, else N."""

    fallback: int

    def __str__(self) -> str:
        return f"fromLoadBalancer or {self.fallback}"


def parse_prestop_seconds(raw: Any, max_seconds: int) -> int | FromLoadBalancer:
    if isinstance(raw, str) and raw.startswith("fromLoadBalancer"):
        match = _FROM_LOAD_BALANCER.fullmatch(raw)
        if match and match.group(1).isascii() and int(match.group(1)) <= max_seconds:
            return FromLoadBalancer(int(match.group(1)))
        raise InvalidValue(f'want "fromLoadBalancer or N", N 0..{max_seconds}')
    return parse_seconds(raw, max_seconds)


def parse_ceiling(raw: Any, max_seconds: int) -> int:
    """A grace-period ceiling: at least 1 (a grace period of 0 means "kill at once")."""
    try:
        value = parse_seconds(raw, max_seconds)
    except InvalidValue:
        value = 0
    if value < 1:
        raise InvalidValue(f"want integer 1..{max_seconds}")
    return value


def is_qualified_name(key: Any) -> bool:
    """A label or annotation key: an optional DNS-subdomain prefix and `/`, then a name part
    of at most 63 characters (Kubernetes' IsQualifiedName)."""
    if not isinstance(key, str):
        return False
    prefix, slash, name = key.rpartition("/")
    if slash and not (len(prefix) <= 253 and _DNS_SUBDOMAIN.fullmatch(prefix)):
        return False
    return len(name) <= 63 and bool(_NAME_PART.fullmatch(name))


def is_label_value(value: Any) -> bool:
    """At most 63 characters, empty or a name part (Kubernetes' IsValidLabelValue)."""
    return isinstance(value, str) and (
        value == "" or (len(value) <= 63 and bool(_NAME_PART.fullmatch(value)))
    )


def parse_bool(raw: Any, _max_seconds: int = 0) -> bool:
    if isinstance(raw, bool):
        return raw
    if raw == "true":
        return True
    if raw == "false":
        return False
    raise InvalidValue("want true or false")


def choice(*options: str) -> Parser:
    def parse_choice(raw: Any, _max_seconds: int) -> str:
        if isinstance(raw, str) and raw in options:
            return raw
        raise InvalidValue("want " + "|".join(options))

    return parse_choice


def parse_command(raw: Any, _max_seconds: int = 0) -> list[str]:
    """A JSON array of strings is the argv; any other string is run by `/bin/sh -c`."""
    if isinstance(raw, list):
        argv: Any = raw
    elif isinstance(raw, str) and raw.strip().startswith("["):
        try:
            argv = json.loads(raw)
        except ValueError:
            raise InvalidValue("want JSON array of strings or a command") from None
    elif isinstance(raw, str) and raw.strip():
        return [SHELL, "-c", raw]
    else:
        raise InvalidValue("want JSON array of strings or a command")
    if (
        not isinstance(argv, list)
        or not argv
        or not all(isinstance(arg, str) for arg in argv)
        or not argv[0]
    ):
        raise InvalidValue("want non-empty JSON array of strings")
    return list(argv)


def parse_http_path(raw: Any, _max_seconds: int = 0) -> str:
    if (
        isinstance(raw, str)
        and raw.startswith("/")
        and raw.isascii()
        and raw.isprintable()
        and " " not in raw
    ):
        return raw
    raise InvalidValue("want an absolute path")


def parse_port(raw: Any, _max_seconds: int = 0) -> int | str:
    """A port number 1..65535 or an IANA service name, as `httpGet.port` accepts."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        number: int | None = raw
    elif isinstance(raw, str) and _ASCII_DIGITS.fullmatch(raw):
        number = int(raw)
    else:
        number = None
    if number is not None:
        if 1 <= number <= 65535:
            return number
        raise InvalidValue("want port 1..65535 or port name")
    if (
        isinstance(raw, str)
        and len(raw) <= 15
        and _PORT_NAME.fullmatch(raw)
        and "--" not in raw
        and any(c.isalpha() for c in raw)
    ):
        return raw
    raise InvalidValue("want port 1..65535 or port name")


def parse_names(raw: Any, _max_seconds: int = 0) -> tuple[str, ...]:
    """A comma list: items trimmed of white space (a YAML block scalar brings newlines), empty
    items and repeats dropped, at least one."""
    if not isinstance(raw, str):
        raise InvalidValue("want a comma list of names")
    names: list[str] = []
    for item in raw.split(","):
        name = item.strip()
        if name and name not in names:
            names.append(name)
    if not names:
        raise InvalidValue("want at least one name")
    return tuple(names)


def parse_init_order(raw: Any, _max_seconds: int = 0) -> tuple[str, ...]:
    """Like `parse_names`, with at most one `*` and at least one real name."""
    names = parse_names(raw)
    stars = sum(1 for item in raw.split(",") if item.strip() == "*")
    if stars > 1:
        raise InvalidValue("want at most one *")
    if all(name == "*" for name in names):
        raise InvalidValue("want at least one name")
    return names


def parse_cluster_version(raw: Any) -> tuple[int, int] | None:
    """`auto` (None) or "1.NN"."""
    if raw == "auto":
        return None
    if isinstance(raw, str) and (match := _CLUSTER_VERSION.fullmatch(raw)):
        return (1, int(match.group(1)))
    raise InvalidValue('want "auto" or "1.NN"')
