"""`serve --workers 2` as a real process: every worker reloads, counts, caps and drains.

Which worker accepts a connection is the kernel's choice (one shared accept queue), so the
tests read each worker's own metrics (ports from the supervisor's `workers started` line) to
prove each worker did its part, and the supervisor's /metrics to prove the sum is right.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from webhook import certs

from .test_server_https import (
    Pki,
    ServerProcess,
    peer_serial,
    post,
    prestop_sleep,
    raw_tls,
    review,
    serial_of,
    tls_args,
    wait_for,
)

pytestmark = pytest.mark.timeout(120)
WORKERS = 2
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


class Workers:
    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        started = server.wait_for_log(event="workers started")
        self.pids: list[int] = started["pids"]
        self.metrics_ports: list[int] = started["worker_metrics_ports"]
        assert len(self.pids) == WORKERS

    def each(self, name: str, **labels: str) -> list[float]:
        key = (name, tuple(sorted(labels.items())))
        return [scrape(port).get(key, 0.0) for port in self.metrics_ports]

    def total(self, name: str, **labels: str) -> float:
        return self.server.metrics().get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path / "pki")


def start(tmp_path: Path, pki: Pki, *extra: str) -> tuple[ServerProcess, Workers]:
    config = tmp_path / "config.yaml"
    if not config.exists():
        config.write_text("{}\n")
    server = ServerProcess(
        tmp_path / "server",
        [*tls_args(pki), f"--workers={WORKERS}", f"--config={config}", *extra],
        pki.ca_file,
    )
    server.wait_ready()
    return server, Workers(server)


@pytest.fixture
def running(tmp_path: Path, pki: Pki) -> Iterator[tuple[ServerProcess, Workers]]:
    server, workers = start(tmp_path, pki, "--drain-seconds=0")
    try:
        yield server, workers
    finally:
        with contextlib.suppress(AssertionError):
            server.stop()


def fresh_review(server: ServerProcess, uid: str) -> dict[str, Any]:
    """One review on a new connection, so the kernel picks the worker anew."""
    with server.client() as client:
        response = post(client, review(uid=uid))
    assert response.status_code == 200
    answer: dict[str, Any] = response.json()
    return answer


REQUESTS = "lifecycle_webhook_admission_requests_total"


def test_metrics_are_the_sum_over_the_workers(running: tuple[ServerProcess, Workers]) -> None:
    server, workers = running
    sent = 0
    while min(workers.each(REQUESTS, operation="CREATE", outcome="mutated")) == 0:
        assert sent < 300, "300 fresh connections all went to one worker"
        fresh_review(server, f"uid-{sent}")
        sent += 1
    each = workers.each(REQUESTS, operation="CREATE", outcome="mutated")
    assert sum(each) == sent
    assert workers.total(REQUESTS, operation="CREATE", outcome="mutated") == sent
    histogram_count = "lifecycle_webhook_admission_duration_seconds_count"
    assert workers.total(histogram_count) == sent == sum(workers.each(histogram_count))
    expiry = "lifecycle_webhook_certificate_expiry_timestamp_seconds"
    assert workers.total(expiry) == min(workers.each(expiry)) > time.time()


def test_certificate_reload_reaches_every_worker(
    running: tuple[ServerProcess, Workers], pki: Pki
) -> None:
    server, workers = running
    rotated = pki.new_serving()
    certs.write_pair(pki.directory, "tls", rotated)
    os.kill(server.proc.pid, signal.SIGHUP)  # forwarded: each worker checks its files now
    reloads = "lifecycle_webhook_certificate_reloads_total"
    wait_for(lambda: workers.each(reloads, result="success") == [1.0, 1.0], 15, "both reloads")
    assert workers.total(reloads, result="success") == WORKERS
    for _ in range(20):
        with raw_tls(server) as tls:
            assert peer_serial(tls) == serial_of(rotated)


def test_config_reload_reaches_every_worker(
    running: tuple[ServerProcess, Workers], tmp_path: Path
) -> None:
    server, workers = running
    assert prestop_sleep(fresh_review(server, "before")) != 17
    staging = tmp_path / "staging.yaml"
    staging.write_text("prestopSeconds: 17\n")
    staging.replace(tmp_path / "config.yaml")
    os.kill(server.proc.pid, signal.SIGHUP)
    reloads = "lifecycle_webhook_config_reloads_total"
    wait_for(lambda: workers.each(reloads, result="success") == [1.0, 1.0], 15, "both reloads")
    served_by = set()
    for index in range(40):
        assert prestop_sleep(fresh_review(server, f"after-{index}")) == 17
    served_by = {
        value > 0 for value in workers.each(REQUESTS, operation="CREATE", outcome="mutated")
    }
    assert served_by == {True}, "one worker answered nothing: reload not proven there"


def test_connection_cap_holds_in_every_worker(tmp_path: Path, pki: Pki) -> None:
    """Stalled TCP connections until both workers are full: neither ever holds more than its
    cap, and each refuses newcomers itself. (The count may then drop below the cap: a worker
    evicts a handshake stalled over a second in favour of one queued for the slot.)"""
    cap = 4
    server, workers = start(
        tmp_path, pki, f"--max-connections={cap}", "--handshake-timeout=60", "--drain-seconds=0"
    )
    opened: list[socket.socket] = []
    attempts = 0
    open_now = "lifecycle_webhook_open_connections"
    refused = "lifecycle_webhook_connections_refused_total"
    try:
        seen = workers.each(open_now)
        while seen != [cap, cap] or min(workers.each(refused)) == 0:
            assert attempts < 600, f"never filled both workers: {seen}"
            assert max(seen) <= cap, f"a worker holds more than its cap: {seen}"
            for _ in range(10):  # TCP only: each stalls in (or queued for) its handshake
                attempts += 1
                with contextlib.suppress(ConnectionResetError):  # refused that fast
                    opened.append(socket.create_connection(("127.0.0.1", server.port), 5))
            time.sleep(0.2)
            seen = workers.each(open_now)
        assert max(workers.each(open_now)) <= cap
        assert workers.total(open_now) <= WORKERS * cap
        assert workers.total(refused) == sum(workers.each(refused)) > 0
    finally:
        for sock in opened:
            sock.close()
        server.stop()


def test_sigterm_drains_every_worker_then_exits_0(tmp_path: Path, pki: Pki) -> None:
    server, workers = start(tmp_path, pki, "--drain-seconds=3")
    server.proc.send_signal(signal.SIGTERM)
    for index in range(WORKERS):
        server.wait_for_log(event="draining", worker=index)
    for index in range(10):  # still served, not ready, on fresh connections
        assert server.get("/readyz")[0] == 503
        fresh_review(server, f"draining-{index}")
    assert server.proc.wait(20) == 0
    for index in range(WORKERS):
        server.wait_for_log(event="stopped", worker=index)
    server.wait_for_log(event="stopped", workers=WORKERS)
    for pid in workers.pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_a_worker_that_dies_stops_the_server_with_1(tmp_path: Path, pki: Pki) -> None:
    server, workers = start(tmp_path, pki, "--drain-seconds=0")
    os.kill(workers.pids[0], signal.SIGKILL)
    assert server.proc.wait(20) == 1
    server.wait_for_log(event="worker exited")
    with pytest.raises(ProcessLookupError):
        os.kill(workers.pids[1], 0)


def test_bad_worker_count_is_a_usage_error(tmp_path: Path, pki: Pki) -> None:
    server = ServerProcess(tmp_path / "server", [*tls_args(pki), "--workers=0"], pki.ca_file)
    assert server.proc.wait(20) == 2
    assert "--workers 0: want 1 to 64" in server.stderr()
