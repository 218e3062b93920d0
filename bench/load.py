"""A load generator that behaves like the API server's webhook client (127.0.0.1 only).

Open loop: reviews arrive at a fixed rate whatever the server does. Each arrival takes an idle
keep-alive connection, or opens a new one while fewer than `pool` are open (the API server's
in-flight limit); with none free it is counted as held back, as the API server would queue it.
Every request carries `?timeout=2s` and is abandoned after 2 s, and its connection closed, as a
Go client does. Closed loop (`capacity`): `connections` clients, each sending the next review
as soon as the previous answer is in, to measure what the server sustains.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from dataclasses import dataclass, field

HOST = "127.0.0.1"
DEADLINE_SECONDS = 2.0
TICK_SECONDS = 0.005


@dataclass
class Tally:
    sent: int = 0
    ok: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    timed_out: int = 0
    transport_errors: int = 0
    held_back: int = 0
    connects: int = 0
    in_flight: int = 0
    latencies: list[tuple[float, float]] = field(default_factory=list)
    """(monotonic time the request was sent, seconds to its answer) for each 200."""

    @property
    def errors(self) -> int:
        """Anything but an admitting 200 (a shed 503 included)."""
        return self.sent - self.ok


class Client:
    """One keep-alive TLS connection that sends `body` as POST /mutate?timeout=2s."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self, port: int, context: ssl.SSLContext) -> None:
        self.reader, self.writer = await asyncio.open_connection(HOST, port, ssl=context)

    async def review(self) -> int:
        assert self.reader is not None
        assert self.writer is not None
        self.writer.write(self.request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        answer = await self.reader.readexactly(length)
        if b"connection: close" in head.lower():
            self.close()
        if status == 200 and b'"allowed":true' not in answer:
            return 299  # a 200 that does not admit: wrong
        return status

    @property
    def usable(self) -> bool:
        return self.writer is not None and not self.writer.is_closing()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def request_bytes(body: bytes) -> bytes:
    return (
        b"POST /mutate?timeout=2s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
    ) + body


async def _one(
    client: Client, port: int, context: ssl.SSLContext, tally: Tally, idle: list[Client]
) -> None:
    sent = time.monotonic()
    try:
        async with asyncio.timeout(DEADLINE_SECONDS):
            if not client.usable:
                tally.connects += 1
                await client.connect(port, context)
            status = await client.review()
    except TimeoutError:
        tally.timed_out += 1
        client.close()  # as the API server does: the connection of an abandoned call goes
        return
    except (OSError, ssl.SSLError, asyncio.IncompleteReadError, ValueError):
        tally.transport_errors += 1
        client.close()
        return
    finally:
        tally.in_flight -= 1
        idle.append(client)
    tally.statuses[status] = tally.statuses.get(status, 0) + 1
    if status == 200:
        tally.ok += 1
        tally.latencies.append((sent, time.monotonic() - sent))


async def open_loop(
    port: int, context: ssl.SSLContext, body: bytes, rate: float, seconds: float, pool: int
) -> Tally:
    """Send `rate` reviews a second for `seconds`, at most `pool` in flight; then wait for
    the last answers."""
    tally = Tally()
    request = request_bytes(body)
    idle: list[Client] = []
    tasks: set[asyncio.Task[None]] = set()
    started = time.monotonic()
    while (now := time.monotonic()) < started + seconds:
        due = rate * (now - started)
        while tally.sent + tally.held_back < due:
            if tally.in_flight >= pool:
                tally.held_back += 1
                continue
            client = idle.pop() if idle else Client(request)
            tally.sent += 1
            tally.in_flight += 1
            task = asyncio.create_task(_one(client, port, context, tally, idle))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.sleep(TICK_SECONDS)
    if tasks:
        await asyncio.wait(tasks, timeout=DEADLINE_SECONDS + 1)
    for client in idle:
        client.close()
    return tally


async def capacity(
    port: int, context: ssl.SSLContext, body: bytes, connections: int, seconds: float
) -> float:
    """Reviews per second answered with 200 by `connections` closed-loop clients."""
    request = request_bytes(body)
    stop = time.monotonic() + seconds
    counts = [0] * connections

    async def loop(index: int) -> None:
        client = Client(request)
        await client.connect(port, context)
        while time.monotonic() < stop:
            if await client.review() == 200:
                counts[index] += 1
            if not client.usable:
                await client.connect(port, context)
        client.close()

    began = time.monotonic()
    await asyncio.gather(*(loop(i) for i in range(connections)))
    return sum(counts) / (time.monotonic() - began)


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class RssSampler:
    """VmRSS of `pid` every `interval` seconds, on the event loop: (monotonic time, MiB)."""

    def __init__(self, pid: int, interval: float) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, float]] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(OSError):
                self.samples.append((time.monotonic(), rss_mib(self.pid)))
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> list[tuple[float, float]]:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        return self.samples

    @property
    def peak(self) -> float:
        return max((mib for _, mib in self.samples), default=0.0)


def slope_mib_per_10_minutes(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of RSS over time, scaled to 10 minutes."""
    if len(samples) < 2:
        return 0.0
    times = [t for t, _ in samples]
    values = [v for _, v in samples]
    mean_t = sum(times) / len(times)
    mean_v = sum(values) / len(values)
    spread = sum((t - mean_t) ** 2 for t in times)
    if spread == 0:
        return 0.0
    per_second = sum((t - mean_t) * (v - mean_v) for t, v in samples) / spread
    return per_second * 600
