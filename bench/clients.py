"""Misbehaving and measuring clients for the reliability runs and tests (127.0.0.1 only).

- `stall`: opens connections that stop at one stage (TCP only, mid-handshake, half a request
  head, half a body) and keeps them open until the server closes them.
- `Probe`: a separate process that plays a healthy API server: one keep-alive TLS connection,
  one review every `interval` seconds, every answer checked, each latency recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"
STAGES = ("tcp", "handshake", "head", "body")
HALF_HEAD = b"POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: appli"
HALF_BODY = (
    b"POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    b'Content-Length: 3000\r\n\r\n{"apiVersion":"admission.k8s.io/v1",'
)


def raise_fd_limit(wanted: int) -> int:
    """Raise the soft descriptor limit towards `wanted` (up to the hard limit); the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


@dataclass
class Stalled:
    """Connections one `stall` call holds, and when (monotonic) the server closed each."""

    stage: str
    attempted: int
    opened_at: dict[int, float] = field(default_factory=dict)
    closed_at: dict[int, float] = field(default_factory=dict)
    refused: int = 0
    answers: dict[bytes, int] = field(default_factory=dict)
    """First bytes of what the server sent before closing (e.g. b'HTTP/1.1 408'), counted."""

    @property
    def opened(self) -> int:
        return len(self.opened_at)

    def still_open(self) -> int:
        return self.opened - len(self.closed_at)

    def lifetimes(self) -> list[float]:
        return [self.closed_at[i] - self.opened_at[i] for i in self.closed_at]


async def _client_hello(context: ssl.SSLContext) -> bytes:
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=HOST)
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


async def _hold(
    index: int,
    stage: str,
    port: int,
    context: ssl.SSLContext,
    result: Stalled,
    hello: bytes,
    connected: asyncio.Event,
) -> None:
    try:
        if stage in ("tcp", "handshake"):
            reader, writer = await asyncio.open_connection(HOST, port)
            if stage == "handshake":
                writer.write(hello)  # the server answers with its flight; we never reply
        else:
            reader, writer = await asyncio.open_connection(HOST, port, ssl=context)
            writer.write(HALF_HEAD if stage == "head" else HALF_BODY)
    except (OSError, ssl.SSLError):
        result.refused += 1
        connected.set()
        return
    result.opened_at[index] = time.monotonic()
    connected.set()
    first = b""
    try:
        while True:
            chunk = await reader.read(4096)
            if not chunk:
                break
            first = first or chunk[:12]
    except (OSError, ssl.SSLError):
        pass
    result.closed_at[index] = time.monotonic()
    if stage in ("tcp", "handshake"):
        first = b"(tls bytes)" if first else b""
    result.answers[first] = result.answers.get(first, 0) + 1
    writer.close()


async def stall(
    port: int, context: ssl.SSLContext, stage: str, count: int, parallel: int = 100
) -> tuple[Stalled, asyncio.Task[None]]:
    """Open `count` stalled connections (at most `parallel` connecting at once); returns once
    all were tried, with a task that finishes when the server has closed every one."""
    result = Stalled(stage, count)
    hello = await _client_hello(context)
    gate = asyncio.Semaphore(parallel)
    holders: list[asyncio.Task[None]] = []

    async def one(index: int) -> None:
        async with gate:
            connected = asyncio.Event()
            holders.append(
                asyncio.create_task(_hold(index, stage, port, context, result, hello, connected))
            )
            await connected.wait()

    await asyncio.gather(*(one(i) for i in range(count)))

    async def all_closed() -> None:
        await asyncio.gather(*holders)

    return result, asyncio.create_task(all_closed())


# --- the probe: a healthy client in its own process ---------------------------------------


class Probe:
    """`python -m bench.clients probe ...` in the background; `stop()` returns the latencies."""

    def __init__(
        self, port: int, ca_file: Path, body_file: Path, out: Path, interval: float = 0.02
    ) -> None:
        self.out = out
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.clients", "probe", str(port), str(ca_file),
             str(body_file), str(out), str(interval)],
            cwd=Path(__file__).resolve().parent.parent,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while not out.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the probe did not start")
            time.sleep(0.05)

    def samples(self) -> list[tuple[float, float, int]]:
        """(monotonic time sent, seconds, HTTP status or 0 for a transport error) so far."""
        rows = []
        for line in self.out.read_text().splitlines():
            with contextlib.suppress(ValueError):
                sent, seconds, status = line.split()
                rows.append((float(sent), float(seconds), int(status)))
        return rows

    def stop(self) -> list[tuple[float, float, int]]:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        return self.samples()


def _probe(port: int, ca_file: str, body_file: str, out: str, interval: float) -> None:
    import http.client
    import signal

    body = Path(body_file).read_bytes()
    context = ssl.create_default_context(cafile=ca_file)
    stop = False

    def on_term(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    connection: http.client.HTTPSConnection | None = None
    with open(out, "w", buffering=1) as log:
        while not stop:
            sent = time.monotonic()
            status = 0
            try:
                if connection is None:
                    connection = http.client.HTTPSConnection(HOST, port, context=context, timeout=2)
                connection.request(
                    "POST", "/mutate?timeout=2s", body, {"Content-Type": "application/json"}
                )
                response = connection.getresponse()
                answer = response.read()
                status = response.status
                if status == 200 and b'"allowed":true' not in answer:
                    status = 299  # a 200 that is not an admitting review: counted as wrong
            except (OSError, http.client.HTTPException):
                if connection is not None:
                    connection.close()
                connection = None
            log.write(f"{sent:.6f} {time.monotonic() - sent:.6f} {status}\n")
            time.sleep(max(0.0, interval - (time.monotonic() - sent)))


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


if __name__ == "__main__":
    if sys.argv[1] == "probe":
        _probe(int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], float(sys.argv[6]))
    else:
        print(json.dumps({"error": f"unknown mode {sys.argv[1]}"}))
        sys.exit(2)
