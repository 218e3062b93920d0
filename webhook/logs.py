"""JSON log lines on stderr: one per review, one per server event.

Written with one `os.write` per line (no logging-module machinery on the request path, and
lines from threads never interleave). uvicorn's own records are bridged into the same shape.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
from collections.abc import Iterable
from typing import Any

import orjson

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}

_SECRET_MARKERS = (b"earer", b"PRIVATE KEY", b"uthorization", b"eyJ", b"asic ")
"""Cheap substring checks: a line with none of them has nothing `redact` would change."""
_SECRETS = (
    # A private key in PEM, whole or cut off (JSON escapes its newlines as \n).
    (
        re.compile(
            rb"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?"
            rb"(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|(?=\")|$)"
        ),
        b"[redacted private key]",
    ),
    # The value of an Authorization header or field, however it is quoted.
    (
        re.compile(rb"(?i)(authorization\\?[\"']?\s*[:=]\s*(?:\\?[\"'])?)[^\"',}\]\\]+"),
        rb"\1[redacted]",
    ),
    # Credentials after an authorization scheme, anywhere else.
    (
        re.compile(rb"(?i)\b(bearer|basic)(\s+|%20)(?!\[redacted)[^\s\"',;}\]\\]+"),
        rb"\1 [redacted]",
    ),
    # JSON Web Tokens: service-account tokens, OIDC tokens.
    (re.compile(rb"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"), b"[redacted token]"),
)


def redact(line: bytes) -> bytes:
    """The log line with private keys, bearer and basic credentials, Authorization values and
    JSON Web Tokens replaced: no secret reaches a log line, whoever put it in a message (an
    API server echoing headers in an error, an exception, a pod named after a token)."""
    for pattern, replacement in _SECRETS:
        line = pattern.sub(replacement, line)
    return line


_UTC = dt.UTC
_DUMPS_OPTIONS = orjson.OPT_UTC_Z
"""Timestamps are datetimes that orjson writes as RFC 3339 UTC (`...T07:16:16.082123Z`)."""


class JsonLog:
    """Writes JSON lines at or above `level` to a file descriptor (stderr by default)."""

    def __init__(self, level: str = "info", fd: int = 2, worker: int | None = None) -> None:
        if level not in LEVELS:
            raise ValueError(f"unknown log level {level!r}; one of {', '.join(LEVELS)}")
        self.level = level
        self.threshold = LEVELS[level]
        self.fd = fd
        self.identity: dict[str, Any] = {} if worker is None else {"worker": worker}
        """With --workers, every event line says which worker wrote it (review lines do not)."""

    def _write(self, record: dict[str, Any]) -> None:
        data = orjson.dumps(record, default=str, option=_DUMPS_OPTIONS) + b"\n"
        if any(marker in data for marker in _SECRET_MARKERS):
            data = redact(data)
        try:
            while data:
                data = data[os.write(self.fd, data) :]
        except OSError:
            pass  # a closed stderr must not turn a review into an error

    def event(self, event: str, level: str = "info", **fields: Any) -> None:
        """A server event: started, cert reloaded, config reload failed, draining, ..."""
        if LEVELS[level] < self.threshold:
            return
        self._write(
            {"ts": dt.datetime.now(_UTC), "level": level, "event": event, **self.identity, **fields}
        )

    def review(
        self,
        *,
        uid: str,
        namespace: str,
        name: str,
        owner_kind: str,
        owner_name: str,
        operation: str,
        outcome: str,
        features: Iterable[str],
        warnings: int,
        duration_ms: float,
        dry_run: bool = False,
        profile: str | None = None,
        exposure: str | None = None,
        status: int = 200,
        error: str | None = None,
        traceback: str | None = None,
    ) -> None:
        level = "info" if status < 400 else "warning" if status < 500 else "error"
        if LEVELS[level] < self.threshold:
            return
        record: dict[str, Any] = {
            "ts": dt.datetime.now(_UTC),
            "level": level,
            "event": "review",
            "uid": _bounded(uid, FIELD_LIMIT),
            "namespace": _bounded(namespace, FIELD_LIMIT),
            "name": _bounded(name, FIELD_LIMIT),
            "owner_kind": _bounded(owner_kind, FIELD_LIMIT),
            "owner_name": _bounded(owner_name, FIELD_LIMIT),
            "operation": operation,
            "outcome": outcome,
            "features": list(features),
            "warnings": warnings,
            "duration_ms": round(duration_ms, 3),
        }
        if profile is not None:
            record["profile"] = f"profile:{profile}"
        if exposure is not None:
            record["exposure"] = exposure
        if dry_run:
            record["dry_run"] = True
        if status != 200:
            record["status"] = status
        if error:
            record["error"] = _bounded(error, ERROR_LIMIT)
        if traceback:
            record["traceback"] = _bounded(traceback, TRACEBACK_LIMIT)
        self._write(record)


FIELD_LIMIT = 256
ERROR_LIMIT = 1024
TRACEBACK_LIMIT = 8192
"""The fields come from requests not yet validated (a name may be megabytes): a log line stays
a line a log pipeline accepts."""


def _bounded(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f"...[{len(text) - limit} more]"


class BridgeHandler(logging.Handler):
    """Sends stdlib log records (uvicorn's) through a JsonLog, so stderr stays one format."""

    def __init__(self, log: JsonLog) -> None:
        super().__init__()
        self.log = log

    def emit(self, record: logging.LogRecord) -> None:
        level = "debug"
        for name, number in LEVELS.items():
            if record.levelno >= number:
                level = name
        fields: dict[str, Any] = {"logger": record.name, "message": record.getMessage()}
        if record.exc_info and record.exc_info[0] is not None:
            fields["exception"] = logging.Formatter().formatException(record.exc_info)
        self.log.event("server", level=level, **fields)


def bridge_stdlib_logging(log: JsonLog) -> None:
    """Route stdlib logging (uvicorn, the kubernetes client) into `log`.

    uvicorn's per-connection chatter and urllib3's retry notices stay below the threshold
    unless the level is debug: the server logs its own events for what they mean.
    """
    handler = BridgeHandler(log)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LEVELS[log.level])
    quiet = logging.DEBUG if log.level == "debug" else logging.WARNING
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    logging.getLogger("uvicorn").setLevel(quiet)
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    for name in ("urllib3", "kubernetes"):
        logging.getLogger(name).setLevel(logging.DEBUG if log.level == "debug" else logging.ERROR)
