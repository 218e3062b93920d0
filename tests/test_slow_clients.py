"""Slow, stalled and surplus clients against a real server process (127.0.0.1 only).

The server closes a connection that has not finished its TLS handshake, request head or body
within the configured time, resets newcomers before any TLS work when --max-connections are
open (after evicting the longest-waiting slow client, if one waited over a second), and keeps
healthy keep-alive connections. The 5,000-connection test checks memory and that a healthy
client is served throughout; latency figures are `python -m bench reliability`'s job.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from bench.clients import STAGES, Probe, percentile, raise_fd_limit, stall

from .test_server_https import (
    JSON,
    Pki,
    ServerProcess,
    post,
    raw_tls,
    read_response,
    review,
    tls_args,
)

pytestmark = pytest.mark.timeout(300)
CHART_MEMORY_LIMIT_MIB = 128
CLOSED = "lifecycle_webhook_connections_closed_early_total"


def metric(server: ServerProcess, name: str, **labels: str) -> float:
    return server.metrics()[name, tuple(sorted(labels.items()))]


def run(coroutine: Any) -> Any:
    import uvloop

    return uvloop.run(coroutine)


async def stall_and_wait(server: ServerProcess, stage: str, count: int, within: float) -> Any:
    result, closed = await stall(server.port, server.context(), stage, count)
    await asyncio.wait_for(closed, within)
    return result


def test_each_stage_has_a_deadline(tmp_path: Path, start: Callable[..., ServerProcess]) -> None:
    pki = Pki(tmp_path / "pki")
    timeout = 1.0
    flags = ["--handshake-timeout", "1", "--header-timeout", "1", "--body-timeout", "1"]
    server = start([*tls_args(pki), *flags], pki.ca_file)
    server.wait_ready()

    async def all_stages() -> dict[str, Any]:
        # One stage at a time: 20 stalled handshakes would hold the slots the next stage's
        # handshakes need for as long as the 1 s deadline (eviction starts after 1 s too).
        return {stage: await stall_and_wait(server, stage, 20, within=30) for stage in STAGES}

    results = run(all_stages())
    for stage, result in results.items():
        assert result.opened == 20 and result.refused == 0, (stage, result)
        lifetimes = result.lifetimes()
        assert len(lifetimes) == 20
        # Closed by the server after its deadline (not before), within the sweep's slack.
        assert min(lifetimes) >= timeout - 0.1, (stage, sorted(lifetimes)[:3])
        assert max(lifetimes) < timeout + 5, (stage, sorted(lifetimes)[-3:])
    assert results["head"].answers == {b"HTTP/1.1 408": 20}
    assert results["body"].answers == {b"HTTP/1.1 408": 20}
    assert results["tcp"].answers == {b"": 20}  # no request, no TLS: closed without a word
    assert metric(server, CLOSED, reason="handshake_timeout") == 40
    assert metric(server, CLOSED, reason="head_timeout") == 20
    assert metric(server, CLOSED, reason="body_timeout") == 20
    with server.client() as client:
        assert post(client, review(uid="after")).status_code == 200


def test_an_idle_keep_alive_connection_is_not_held_to_the_header_timeout(
    tmp_path: Path, start: Callable[..., ServerProcess]
) -> None:
    """Between requests a healthy API server's connection is idle, not slow: keep-alive rules."""
    pki = Pki(tmp_path / "pki")
    server = start([*tls_args(pki), "--header-timeout", "1"], pki.ca_file)
    server.wait_ready()
    conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=server.context())
    try:
        conn.request("POST", "/mutate", orjson.dumps(review(uid="first")), JSON)
        assert conn.getresponse().read()
        sock = conn.sock
        time.sleep(2.5)
        conn.request("POST", "/mutate", orjson.dumps(review(uid="second")), JSON)
        response = conn.getresponse()
        assert response.status == 200
        assert orjson.loads(response.read())["response"]["uid"] == "second"
        assert conn.sock is sock
    finally:
        conn.close()


def tls_connect(server: ServerProcess) -> ssl.SSLSocket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    return server.context().wrap_socket(sock, server_hostname="127.0.0.1")


def test_at_the_cap_newcomers_are_reset_before_tls_then_the_slowest_is_evicted(
    tmp_path: Path, start: Callable[..., ServerProcess]
) -> None:
    pki = Pki(tmp_path / "pki")
    server = start([*tls_args(pki), "--max-connections", "4"], pki.ca_file)
    server.wait_ready()
    slow = []
    with contextlib.ExitStack() as stack:
        for _ in range(4):
            sock = stack.enter_context(contextlib.closing(tls_connect(server)))
            sock.sendall(b"POST /mutate HTTP/1.1\r\nHost: x\r\n")  # half a head
            slow.append(sock)
        time.sleep(0.2)
        raw = stack.enter_context(socket.create_connection(("127.0.0.1", server.port), timeout=5))
        with contextlib.suppress(ConnectionResetError):
            # Reset at accept: not one byte of TLS, though we never sent a ClientHello.
            assert raw.recv(1024) == b""
        assert metric(server, "lifecycle_webhook_connections_refused_total") == 1

        time.sleep(1.2)  # now the slow ones have waited over a second: the oldest is evicted
        with contextlib.closing(tls_connect(server)) as healthy:
            body = orjson.dumps(review(uid="newcomer"))
            healthy.sendall(
                b"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            response = http.client.HTTPResponse(healthy)
            response.begin()
            assert response.status == 200
            assert orjson.loads(response.read())["response"]["uid"] == "newcomer"
        assert metric(server, CLOSED, reason="evicted") == 1
        with contextlib.suppress(OSError):
            assert slow[0].recv(1024) == b""  # the oldest slow client is the one that went
    assert metric(server, "lifecycle_webhook_connections_refused_total") == 1


class PeakRss:
    """Samples a process's VmRSS every 0.1 s on a thread; `peak` in MiB."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def now(self) -> float:
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            with contextlib.suppress(OSError):
                self.peak = max(self.peak, self.now())

    def stop(self) -> float:
        self._stop.set()
        self._thread.join(5)
        return self.peak


def test_5000_stalled_connections_per_stage_leave_memory_bounded_and_reviews_served(
    tmp_path: Path, start: Callable[..., ServerProcess]
) -> None:
    raise_fd_limit(12_000)  # the client holds up to 5,000 sockets; the server inherits it
    pki = Pki(tmp_path / "pki")
    timeout = 3.0
    flags = ["--handshake-timeout", "3", "--header-timeout", "3", "--body-timeout", "3"]
    server = start([*tls_args(pki), *flags, "--log-level", "warning"], pki.ca_file)
    server.wait_ready()
    body_file = tmp_path / "review.json"
    body_file.write_bytes(orjson.dumps(review(uid="probe")))
    probe = Probe(server.port, pki.ca_file, body_file, tmp_path / "probe.txt")
    rss = PeakRss(server.proc.pid)
    figures = {}
    try:
        for stage in STAGES:
            begun = time.monotonic()
            result = run(stall_and_wait(server, stage, 5000, within=timeout + 60))
            held = result.opened
            # All were accepted or refused; the ones held were closed after the deadline.
            assert held + result.refused == 5000
            assert result.still_open() == 0
            assert max(result.lifetimes()) < timeout + 10
            figures[stage] = (held, result.refused, time.monotonic() - begun, rss.peak)
            assert server.proc.poll() is None
        wait_open = 0.0
        while metric(server, "lifecycle_webhook_open_connections") > 1 and wait_open < 10:
            time.sleep(0.2)  # only the probe's connection is left
            wait_open += 0.2
        assert metric(server, "lifecycle_webhook_open_connections") == 1
    finally:
        samples = probe.stop()
        peak = rss.stop()
    with server.client() as client:
        assert post(client, review(uid="afterwards")).status_code == 200
    latencies = [seconds for _, seconds, status in samples if status == 200]
    failures = [s for s in samples if s[2] != 200]
    print(
        f"\npeak RSS {peak:.1f} MiB (chart limit {CHART_MEMORY_LIMIT_MIB} Mi); "
        + "; ".join(
            f"{s}: {h} held, {r} refused, {t:.1f} s, peak so far {p:.0f} MiB"
            for s, (h, r, t, p) in figures.items()
        )
        + f"; probe: {len(latencies)} reviews, p50 {percentile(latencies, 0.5) * 1000:.1f} ms, "
        f"p99 {percentile(latencies, 0.99) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms"
    )
    # 77-84 MiB measured with 500 held at a time (the default cap); the default of 1,000
    # that this replaced peaked at 92-110 MiB here, too close to the limit.
    assert peak < CHART_MEMORY_LIMIT_MIB - 28, peak
    assert not failures, failures[:5]
    assert len(latencies) > 100
    assert max(latencies) < 2.0  # the API server's timeout: no review lost while under attack


def test_a_review_older_than_its_timeout_is_shed_not_reviewed() -> None:
    """The API server gave up on it (its `timeout` passed): answering would only delay the
    reviews queued behind it. Younger reviews, and ones without an arrival time, are served."""
    from webhook.app import ServerState, create_app
    from webhook.cluster.namespaces import StaticNamespaces
    from webhook.connections import ARRIVED
    from webhook.core.model import Config
    from webhook.logs import JsonLog
    from webhook.metrics import Metrics

    metrics = Metrics()
    app = create_app(ServerState(Config(), StaticNamespaces({}), metrics, JsonLog("error")))
    body = orjson.dumps(review(uid="queued"))

    async def call(query: bytes, waited: float | None) -> tuple[int, dict[str, Any]]:
        scope: dict[str, Any] = {
            "type": "http",
            "method": "POST",
            "path": "/mutate",
            "query_string": query,
            "headers": [(b"content-type", b"application/json")],
        }
        if waited is not None:
            scope[ARRIVED] = asyncio.get_running_loop().time() - waited
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await app(scope, receive, send)  # type: ignore[arg-type]
        return sent[0]["status"], orjson.loads(sent[1]["body"])

    async def calls() -> list[tuple[int, dict[str, Any]]]:
        return [
            await call(b"timeout=2s", 2.5),
            await call(b"timeout=10s", 2.5),
            await call(b"timeout=2s", 0.2),
            await call(b"", 2.5),  # no timeout: the API server's default, 10 s
            await call(b"", 10.5),
            await call(b"timeout=2s", None),  # not from the listener (in-process use)
        ]

    (shed, kept, young, default, default_shed, untimed) = run(calls())
    assert shed[0] == 503 and "longer than its timeout" in shed[1]["error"]
    assert default_shed[0] == 503
    for status, answer in (kept, young, default, untimed):
        assert status == 200 and answer["response"]["uid"] == "queued"
    assert metrics.reviews_shed._value.get() == 2


def test_a_connection_queued_behind_stalled_handshakes_gets_a_slot_within_seconds(
    tmp_path: Path, start: Callable[..., ServerProcess]
) -> None:
    """--max-connections 8 leaves 2 handshake slots; 2 clients that never send a ClientHello
    hold them; a real client arriving at once waits unread, then takes the slot of the oldest
    staller once it has waited over a second — long before its 10 s deadline."""
    pki = Pki(tmp_path / "pki")
    server = start([*tls_args(pki), "--max-connections", "8"], pki.ca_file)
    server.wait_ready()
    with contextlib.ExitStack() as stack:
        for _ in range(2):
            stack.enter_context(socket.create_connection(("127.0.0.1", server.port), timeout=5))
        began = time.monotonic()
        with server.client() as client:
            assert post(client, review(uid="queued")).status_code == 200
        waited = time.monotonic() - began
    assert 0.9 < waited < 5, waited
    assert metric(server, CLOSED, reason="evicted") >= 1
    assert metric(server, "lifecycle_webhook_connections_refused_total") == 0


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_reset_connections_leave_no_memory_behind(tmp_path: Path) -> None:
    """A client that resets its connection after an answer (what a load balancer or a killed
    API server does) must not leave the connection's buffers resident: uvicorn's keep-alive
    timer used to keep each one (~150 KiB with an 84 KB review) for 120 s."""
    pki = Pki(tmp_path / "pki")
    server = ServerProcess(tmp_path / "server", tls_args(pki), pki.ca_file)
    large = review(uid="large")
    env = [{"name": f"VAR_{index}", "value": "x" * 30} for index in range(2000)]
    large["request"]["object"]["spec"]["containers"][0]["env"] = env
    body = orjson.dumps(large)
    request = (
        b"POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )

    def wave(count: int) -> None:
        sockets = [raw_tls(server) for _ in range(count)]
        for tls in sockets:
            tls.sendall(request)
        for tls in sockets:
            assert read_response(tls).status == 200
            tls.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            tls.close()  # RST: connection_lost with an error

    try:
        server.wait_ready()
        wave(50)
        time.sleep(1.5)  # closed, swept and trimmed
        before = _rss_mib(server.proc.pid)
        for _ in range(4):
            wave(50)
        time.sleep(1.5)
        grown = _rss_mib(server.proc.pid) - before
        # measured: 51 MiB before the fix, 5-7 MiB after (allocator high-water, not connections)
        assert grown < 20, f"RSS grew {grown:.1f} MiB after 200 reset connections"
    finally:
        server.stop()
