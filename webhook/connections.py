"""The admission port's connections: a cap, a deadline for each stage, eviction of slow clients.

uvicorn on uvloop starts TLS on every accepted socket, gives a handshake 60 s and a request head
or body no limit at all, and its `limit_concurrency` answers 503 only after the handshake. A
client that stops halfway therefore holds memory forever: a handshake in progress costs ~45 KiB
of OpenSSL state, a finished TLS connection ~25 KiB, uvicorn's protocol ~4 KiB more (measured
on this machine with 3,000 connections). So this module accepts the connections itself:

- at most `max_connections` per process, whatever their state; at the cap a newcomer first
  evicts the connection that has waited longest for its client (a handshake, a request head
  or body not finished, or an idle keep-alive connection) if that one has waited over
  `EVICT_AFTER_SECONDS`; otherwise it is reset at once, before any TLS work, and counted;
- at most 32 of them in a TLS handshake (the costliest state); a newcomer beyond that
  evicts the oldest handshake if it is that old, or else waits unread (a socket, no TLS state)
  for a slot: a real client's handshake takes milliseconds, so slots come free at once;
- a deadline per stage: the TLS handshake (from accept), the request head (from the handshake
  or the request's first byte), the body (from the end of the head). Past it the connection is
  closed (408 when part of a request came) and counted. Idle keep-alive connections keep
  uvicorn's keep-alive timeout (120 s); a request being answered has no deadline here.

A healthy API server sends each request in one go and keeps its connections busy or briefly
idle, so it is never the one evicted. The limits are per process: a server with several worker
processes gives each its own `Listener` on the shared (or SO_REUSEPORT) sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import socket
import ssl
import struct
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from webhook.logs import JsonLog

if TYPE_CHECKING:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from webhook.metrics import Metrics

DEFAULT_MAX_CONNECTIONS = 500
"""Sized to the chart's 128 Mi with every feature on. Stalled connections cost 37-58 KiB each
once clients are evicted and replaced (fragmentation included): measured with 5,000 stalled
per stage, 1,000 held peaked at 92-110 MiB on a ~55 MiB server, 500 held at 77-84 MiB. A
server attached to a cluster whose detector watches 10,000 pods peaks at 79 MiB on its own
(`bench detection-watch`): 1,000 stalled connections on top reach 116-134 MiB, 500 101-108.
An API server opens one connection per call in flight, and all its requests in flight share
600 seats by default (API Priority and Fairness); idle keep-alive connections are evicted at
the cap."""
HANDSHAKE_SLOTS = 32
"""TLS handshakes in progress at once (fewer with a smaller --max-connections). Handshakes are
CPU-bound, one after the other on the event loop, so more slots would not finish more of them;
they would only let one loop iteration run hundreds of handshake steps (~1 ms each) while a
review waits. Measured during floods of 5,000 handshakes, a healthy review's p99: 120-190 ms
with 250 slots, 6-63 ms with 32, no better with 16."""
DEFAULT_STAGE_SECONDS = 10.0
EVICT_AFTER_SECONDS = 1.0
"""Only a connection that has waited this long for its client may be evicted: a real client
finishes a handshake or sends a request within milliseconds."""
SWEEP_SECONDS = 0.5
"""How often deadlines are checked: a stalled connection lives at most this much past its own."""
ACCEPT_BATCH = 32
"""Connections accepted per readiness event, so a flood of connects cannot starve reviews."""
TLS_SHUTDOWN_SECONDS = 5.0
"""How long a closing TLS connection may take to flush and exchange close_notify (uvloop: 30)."""
LISTEN_BACKLOG = 1024
TRIM_AFTER_CLOSING = 16
"""Hand freed memory back once this many connections (and half of the high-water mark) have
closed: each TLS connection leaves ~100-250 KiB of freed heap (uvloop's 256 KiB read buffer,
the request body, OpenSSL's buffers) that glibc would otherwise keep resident. Measured: after
32 connections of 84 KB reviews, 59 MiB without, 55 MiB with; malloc_trim takes well under
1 ms here and runs at most once per sweep."""
_RESET = struct.pack("ii", 1, 0)
"""SO_LINGER on, 0 s: close() sends a RST and leaves no TIME_WAIT behind."""

QUEUED, HANDSHAKE, HEAD, BODY = "queued", "handshake", "head", "body"
BUSY, IDLE, CLOSING = "busy", "idle", "closing"
WAITING_FOR_CLIENT = (HANDSHAKE, HEAD, BODY)


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-process connection limits; the serve flags of the same names."""

    max_connections: int = DEFAULT_MAX_CONNECTIONS
    handshake_seconds: float = DEFAULT_STAGE_SECONDS
    head_seconds: float = DEFAULT_STAGE_SECONDS
    body_seconds: float = DEFAULT_STAGE_SECONDS

    def deadline(self, stage: str) -> float:
        if stage in (QUEUED, HANDSHAKE):
            return self.handshake_seconds
        return self.head_seconds if stage == HEAD else self.body_seconds


class Connection:
    """One accepted connection: its stage and since when (loop time) it is in it."""

    __slots__ = ("partial", "protocol", "since", "sock", "stage", "task")

    def __init__(self, since: float) -> None:
        self.stage = HANDSHAKE
        self.since = since
        self.partial = False
        """Part of a request has arrived: a timeout answers 408 before closing."""
        self.protocol: HttpToolsProtocol | None = None
        self.sock: socket.socket | None = None
        """Only while queued for a handshake slot."""
        self.task: asyncio.Task[Any] | None = None


ProtocolFactory = Callable[[Connection], "HttpToolsProtocol"]


class Listener:
    """Accepts on bound sockets, starts TLS and HTTP on each connection, enforces `Limits`.

    Looks like an `asyncio.Server` to uvicorn (`close`, `wait_closed`, `sockets`), which closes
    it when the drain ends.
    """

    def __init__(
        self,
        sockets: list[socket.socket],
        context: ssl.SSLContext,
        protocol_factory: ProtocolFactory,
        limits: Limits,
        metrics: Metrics,
        log: JsonLog,
    ) -> None:
        self.sockets = sockets
        self.context = context
        self.protocol_factory = protocol_factory
        self.limits = limits
        self.metrics = metrics
        self.log = log
        self.open = 0
        self.max_handshakes = max(1, min(HANDSHAKE_SLOTS, limits.max_connections // 4))
        self.handshakes: OrderedDict[Connection, None] = OrderedDict()
        """Connections in their TLS handshake, oldest first."""
        self.queued: OrderedDict[Connection, None] = OrderedDict()
        """Accepted, waiting unread (cheap: a socket) for a handshake slot, oldest first."""
        self.waiting: OrderedDict[Connection, None] = OrderedDict()
        """Connections waiting for a request's head or body, oldest stage first."""
        self.idle: OrderedDict[Connection, None] = OrderedDict()
        """Keep-alive connections between requests, longest idle first."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False
        self._accept_paused = False
        self._high_water = 0
        """Most connections open since memory was last handed back (see `_trim`)."""
        self._shortest = min(limits.handshake_seconds, limits.head_seconds, limits.body_seconds)
        metrics.open_connections.set_function(lambda: self.open)
        metrics.handshakes_in_progress.set_function(lambda: len(self.handshakes))

    # --- accepting ------------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        for sock in self.sockets:
            sock.setblocking(False)
            sock.listen(LISTEN_BACKLOG)
            loop.add_reader(sock.fileno(), self._accept, sock)
        self._sweeper = loop.call_later(SWEEP_SECONDS, self._sweep)

    def _accept(self, listening: socket.socket) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                sock, _ = listening.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE, ENFILE, ENOBUFS: out of descriptors or memory
                self._pause_accepting(exc)
                return
            if self.open >= self.limits.max_connections and not self._evict_one():
                self.metrics.connections_refused.inc()
                _reset(sock)
                continue
            self._start(sock)

    def _pause_accepting(self, exc: OSError) -> None:
        """The listening socket stays readable while accept fails: stop polling for a moment."""
        if self._accept_paused or self._loop is None:
            return
        self._accept_paused = True
        self.log.event("accept failed", level="error", error=str(exc), open_connections=self.open)
        for sock in self.sockets:
            self._loop.remove_reader(sock.fileno())

        def resume() -> None:
            self._accept_paused = False
            if not self._closed and self._loop is not None:
                for sock in self.sockets:
                    self._loop.add_reader(sock.fileno(), self._accept, sock)

        self._loop.call_later(0.1, resume)

    def _start(self, sock: socket.socket) -> None:
        """Start TLS, or queue the socket unread while the handshake slots are all taken."""
        assert self._loop is not None
        sock.setblocking(False)
        connection = Connection(self._loop.time())
        self.open += 1
        if len(self.handshakes) < self.max_handshakes or self._evict_handshake():
            self._begin_tls(connection, sock)
        else:
            connection.stage, connection.sock = QUEUED, sock
            self.queued[connection] = None

    def _begin_tls(self, connection: Connection, sock: socket.socket) -> None:
        assert self._loop is not None
        connection.stage = HANDSHAKE
        self.handshakes[connection] = None
        connection.task = self._loop.create_task(self._handshake(connection, sock))

    def _next_handshakes(self) -> None:
        """A handshake slot came free: start the longest-queued connection's TLS."""
        while self.queued and len(self.handshakes) < self.max_handshakes:
            connection, _ = self.queued.popitem(last=False)
            sock, connection.sock = connection.sock, None
            assert sock is not None
            self._begin_tls(connection, sock)

    async def _handshake(self, connection: Connection, sock: socket.socket) -> None:
        assert self._loop is not None
        try:
            await self._loop.connect_accepted_socket(
                lambda: self.protocol_factory(connection),
                sock,
                ssl=self.context,
                # The sweep enforces the deadline; uvloop's own timer is only a backstop.
                ssl_handshake_timeout=self.limits.handshake_seconds + 2 * SWEEP_SECONDS,
                ssl_shutdown_timeout=TLS_SHUTDOWN_SECONDS,
            )
        except asyncio.CancelledError:
            self._released(connection)  # timed out, evicted or shutting down: counted there
        except Exception:  # a failed handshake: bad client, wrong CA, reset, not TLS at all
            self.metrics.connections_closed.labels("handshake_failed").inc()
            self._released(connection)
        finally:
            connection.task = None

    # --- stages, reported by the protocol -------------------------------------------------

    def handshake_done(self, connection: Connection, protocol: HttpToolsProtocol) -> None:
        connection.protocol = protocol
        self.handshakes.pop(connection, None)
        self._enter(connection, HEAD)
        self._next_handshakes()

    def request_begins(self, connection: Connection) -> float:
        """The request's first byte arrived; returns the arrival time for the request's age."""
        assert self._loop is not None
        now = self._loop.time()
        connection.partial = True
        if connection.stage == IDLE:
            del self.idle[connection]
            connection.stage, connection.since = HEAD, now
            self.waiting[connection] = None
        elif connection.stage == BUSY:  # pipelined behind a request being answered
            connection.stage, connection.since = HEAD, now
            self.waiting[connection] = None
        return now

    def head_done(self, connection: Connection) -> None:
        if connection.stage == HEAD:
            self._enter(connection, BODY)

    def body_done(self, connection: Connection) -> None:
        if connection.stage in WAITING_FOR_CLIENT:
            del self.waiting[connection]
            connection.stage = BUSY
            connection.partial = False

    def response_done(self, connection: Connection) -> None:
        if connection.stage == BUSY:
            assert self._loop is not None
            connection.stage, connection.since = IDLE, self._loop.time()
            self.idle[connection] = None

    def _enter(self, connection: Connection, stage: str) -> None:
        assert self._loop is not None
        connection.stage, connection.since = stage, self._loop.time()
        self.waiting[connection] = None
        self.waiting.move_to_end(connection)

    def connection_lost(self, connection: Connection) -> None:
        self._released(connection)

    def _released(self, connection: Connection) -> None:
        if connection.stage is None:
            return  # already released
        freed = self.handshakes.pop(connection, False) is None
        self.queued.pop(connection, None)
        self.waiting.pop(connection, None)
        self.idle.pop(connection, None)
        connection.stage = None  # type: ignore[assignment]
        connection.protocol = None
        if connection.sock is not None:
            _reset(connection.sock)
            connection.sock = None
        self.open -= 1
        if freed:
            self._next_handshakes()

    # --- closing slow clients -------------------------------------------------------------

    def _evict_one(self) -> bool:
        """Close the connection that has waited longest for its client, if it waited long."""
        assert self._loop is not None
        pools = (self.queued, self.handshakes, self.waiting, self.idle)
        fronts = [next(iter(pool)) for pool in pools if pool]
        return bool(fronts) and self._evict(min(fronts, key=lambda c: c.since))

    def _evict_handshake(self) -> bool:
        return bool(self.handshakes) and self._evict(next(iter(self.handshakes)))

    def _evict(self, oldest: Connection) -> bool:
        assert self._loop is not None
        if oldest.since > self._loop.time() - EVICT_AFTER_SECONDS:
            return False
        self._close(oldest, "evicted", polite=False)
        return True

    def _sweep(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        expired = []
        for pool in (self.queued, self.handshakes, self.waiting):
            for connection in pool:
                age = now - connection.since
                if age < self._shortest:
                    break  # every later connection entered its stage later still
                if age >= self.limits.deadline(connection.stage):
                    expired.append(connection)
        for connection in expired:
            stage = HANDSHAKE if connection.stage == QUEUED else connection.stage
            self._close(connection, f"{stage}_timeout", polite=True)
        # Connections queued for a slot evict stalled handshakes too, not only newcomers.
        while self.queued and len(self.handshakes) >= self.max_handshakes:
            if not self._evict_handshake():
                break
        self._next_handshakes()
        self._trim()
        if not self._closed:
            self._sweeper = self._loop.call_later(SWEEP_SECONDS, self._sweep)

    def _trim(self) -> None:
        """After many connections closed, hand their freed memory back to the kernel.

        glibc keeps freed heap pages resident; after a wave of clients (slow ones, or a burst of
        large reviews) the holes would stay at the wave's high-water mark.
        """
        self._high_water = max(self._high_water, self.open)
        if self._high_water - self.open >= TRIM_AFTER_CLOSING and self.open < self._high_water // 2:
            _malloc_trim()
            self._high_water = self.open

    def _close(self, connection: Connection, reason: str, polite: bool) -> None:
        self.metrics.connections_closed.labels(reason).inc()
        stage = connection.stage
        if stage == QUEUED:
            self._released(connection)
            return
        self.handshakes.pop(connection, None)
        self.waiting.pop(connection, None)
        self.idle.pop(connection, None)
        if stage == HANDSHAKE:
            if connection.task is not None:
                connection.task.cancel()  # uvloop aborts the transport
            return
        connection.stage = CLOSING
        protocol = connection.protocol
        if protocol is None or protocol.transport is None:
            return
        transport = protocol.transport
        if polite and connection.partial and stage in (HEAD, BODY):
            transport.write(REQUEST_TIMEOUT)
            transport.close()
        else:
            transport.abort()

    # --- asyncio.Server's shape, for uvicorn's shutdown -----------------------------------

    def close(self) -> None:
        """Stop accepting and abandon handshakes; uvicorn then closes the HTTP connections."""
        if self._closed:
            return
        self._closed = True
        if self._loop is not None:
            for sock in self.sockets:
                if not self._accept_paused:
                    self._loop.remove_reader(sock.fileno())
        for sock in self.sockets:
            sock.close()
        for connection in list(self.queued):
            self._released(connection)
        for connection in list(self.handshakes):
            if connection.task is not None:
                connection.task.cancel()

    async def wait_closed(self) -> None:
        """Nothing to wait for: `close` is immediate."""

    def is_serving(self) -> bool:
        return not self._closed


def _malloc_trim() -> None:
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL("libc.so.6")
            _libc.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):  # not glibc: nothing to trim this way
            _libc = False
    if _libc:
        _libc.malloc_trim(0)


_libc: Any = None


def _reset(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
    sock.close()


_TIMEOUT_BODY = b'{"error":"request not received in time"}'
REQUEST_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
    b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(_TIMEOUT_BODY), _TIMEOUT_BODY)
)


def guarded_protocol(
    config: Any, server_state: Any, app_state: dict[str, Any], listener: Listener
) -> ProtocolFactory:
    """uvicorn's httptools protocol, reporting each request's stages to `listener`."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        connection: Connection

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            listener.handshake_done(self.connection, self)

        def connection_lost(self, exc: Exception | None) -> None:
            super().connection_lost(exc)
            # uvicorn cancels the keep-alive timer only on a clean close; after a reset the
            # timer would keep this protocol, its transport and uvloop's 256 KiB TLS read
            # buffer alive for the whole keep-alive (120 s): with 32 clients that reconnect,
            # ~10 MiB per wave. Cancel it whatever the cause.
            self._unset_keepalive_if_required()
            listener.connection_lost(self.connection)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self.scope[ARRIVED] = listener.request_begins(self.connection)  # type: ignore[literal-required]

        def on_headers_complete(self) -> None:
            super().on_headers_complete()
            listener.head_done(self.connection)

        def on_message_complete(self) -> None:
            super().on_message_complete()
            listener.body_done(self.connection)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            listener.response_done(self.connection)

    def factory(connection: Connection) -> HttpToolsProtocol:
        protocol = GuardedHttpToolsProtocol(config, server_state, app_state)
        protocol.connection = connection
        return protocol

    return factory


ARRIVED = "lifecycle_webhook.arrived"
"""Scope key: loop time at which the request's first byte was read (for shedding stale ones)."""
