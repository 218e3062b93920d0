"""Live reads for what a watch cache cannot answer yet: single-flight, briefly remembered.

A namespace created a moment ago, or Services while their informer has not synced: the
request path may read them live, within a short budget. Concurrent misses for one key wait
for one read; an answer is kept for LIVE_TTL, a failure (None) for FAILED_TTL, so an outage
costs one read per key and per few seconds, not one per pod. The answers are kept apart
from the watch store and never written into it: a slow read must not overwrite newer watch
data or revive a deleted object.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable
from typing import Generic, Literal, TypeVar

LOOKUP_TIMEOUT = 0.5
"""The per-read budget of a live read (the request path adds its own overall deadline)."""
LIVE_TTL = 10.0
"""How long a live read answers for an object the watch has not delivered yet."""
FAILED_TTL = 5.0
"""How long a failed live read is remembered: one read per key during an outage."""
REMEMBERED = 1000
"""Past this many remembered answers, expired ones are dropped (bounded memory)."""


class Lookup(enum.Enum):
    NEEDED = "needed"


NEEDS_LOOKUP: Literal[Lookup.NEEDED] = Lookup.NEEDED
"""What a non-blocking `peek` returns when only I/O can answer."""

V = TypeVar("V")


class LiveReads(Generic[V]):
    """`read(key)` calls `fetch(key)` at most once at a time per key and remembers the answer.

    `fetch` returns the value, or None when it could not be read (remembered as a failure).
    """

    def __init__(self, fetch: Callable[[str], V | None], timeout: float) -> None:
        self.fetch = fetch
        self.timeout = timeout
        self._answers: dict[str, tuple[float, V | None]] = {}
        """Answers (None: the read failed) and when they expire."""
        self._running: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def remembered(self, key: str) -> V | Literal[Lookup.NEEDED] | None:
        """The unexpired answer for `key`, without I/O; NEEDS_LOOKUP when there is none."""
        answer = self._answers.get(key)
        if answer is not None and answer[0] > time.monotonic():
            return answer[1]
        return NEEDS_LOOKUP

    def read(self, key: str) -> V | None:
        """A fresh read, or the answer of the read already in flight for `key`."""
        with self._lock:
            running = self._running.get(key)
            if running is None:
                self._running[key] = threading.Event()
        if running is not None:
            running.wait(self.timeout * 4)
            answer = self._answers.get(key)
            return answer[1] if answer is not None else None
        try:
            result = self.fetch(key)
            ttl = LIVE_TTL if result is not None else FAILED_TTL
            with self._lock:
                now = time.monotonic()
                if len(self._answers) > REMEMBERED:
                    self._answers = {k: v for k, v in self._answers.items() if v[0] > now}
                self._answers[key] = (now + ttl, result)
            return result
        finally:
            with self._lock:
                self._running.pop(key).set()
