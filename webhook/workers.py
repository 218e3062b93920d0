"""`serve --workers N`: one supervisor, N full server processes on the same listening sockets.

Why this shape:
- The supervisor binds the admission sockets once and the workers inherit them (one shared
  accept queue). With SO_REUSEPORT each worker would own a queue the kernel fills by hash,
  whether that worker is busy or already closing; a shared queue is drained by whichever
  worker is free, and no queued connection is lost while one worker exits before another.
- Workers are fresh interpreters (`python -m webhook serve … --worker-index I`), not forks of a
  process that already runs threads (file poller, metrics, namespace watch). Each is a
  complete server: its own certificate and config reloads, namespace cache, connection cap
  (`--max-connections` is per worker) and drain.
- Metrics: each worker serves its registry on a socket the supervisor bound on 127.0.0.1; the
  supervisor's `--metrics-port` answers with the sum over the workers (counters, histograms and
  connection gauges add up; the certificate expiry is the earliest of them).
- Signals: SIGTERM, SIGINT and SIGHUP are forwarded to every worker; the supervisor exits 0
  when every worker exited 0. A worker that dies unasked stops the others and the supervisor
  exits 1, so the container restarts rather than run with fewer workers than asked for.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable, Sequence
from typing import Any

from webhook.logs import JsonLog

WORKER_SCRAPE_TIMEOUT_SECONDS = 2.0
WORKER_START_TIMEOUT_SECONDS = 60.0
EARLIEST = frozenset({"lifecycle_webhook_certificate_expiry_timestamp_seconds"})
"""Gauges that must not be summed: the expiry that matters is the earliest one."""
PR_SET_PDEATHSIG = 1
_prctl = ctypes.CDLL(None).prctl if sys.platform == "linux" else None


def _die_with_supervisor() -> None:
    """In the worker before exec: SIGTERM it if the supervisor dies, even by SIGKILL."""
    if _prctl is not None:
        _prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def worker_argv(
    argv: Sequence[str], index: int, sockets: Iterable[int], metrics_fd: int
) -> list[str]:
    """The worker's command line: the supervisor's serve flags without --workers, plus where
    its inherited sockets are."""
    kept: list[str] = []
    skip = False
    for item in argv:
        if skip:
            skip = False
            continue
        if item == "--workers":
            skip = True
            continue
        if item.startswith("--workers="):
            continue
        kept.append(item)
    return [
        sys.executable,
        "-m",
        "webhook",
        *kept,
        f"--worker-index={index}",
        f"--worker-sockets={','.join(map(str, sockets))}",
        f"--worker-metrics-socket={metrics_fd}",
    ]


def summed_exposition(texts: Iterable[str]) -> bytes:
    """The workers' expositions as one: samples with the same name and labels added up."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.metrics_core import Metric
    from prometheus_client.parser import text_string_to_metric_families

    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            if family.name not in families:
                families[family.name] = Metric(family.name, family.documentation, family.type)
                values[family.name] = {}
            summed = values[family.name]
            for sample in family.samples:
                key = (sample.name, tuple(sample.labels.items()))
                if key not in summed:
                    summed[key] = sample.value
                elif sample.name.endswith("_created") or family.name in EARLIEST:
                    summed[key] = min(summed[key], sample.value)
                else:
                    summed[key] += sample.value

    class Collected:
        def collect(self) -> Iterable[Metric]:
            for name, family in families.items():
                for (sample_name, labels), value in values[name].items():
                    family.add_sample(sample_name, dict(labels), value)
                yield family

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collected())
    return generate_latest(registry)


class Supervisor:
    """Starts the workers, forwards signals, serves the summed /metrics, reports the exit."""

    def __init__(self, args: argparse.Namespace, argv: Sequence[str], log: JsonLog) -> None:
        self.args = args
        self.argv = argv
        self.log = log
        self.workers: list[subprocess.Popen[bytes]] = []
        self.worker_metrics: list[int] = []
        self.stopping = False
        self.up = False
        """Every worker has its signal handlers in place (its metrics socket answers)."""
        self.pending: list[int] = []

    def scrape(self) -> bytes:
        """Every worker's metrics, summed; OSError (a 503 to the scraper) if one cannot be read,
        since a sum with a worker missing would look like counters going backwards."""
        texts = []
        for port in self.worker_metrics:
            url = f"http://127.0.0.1:{port}/metrics"
            with urllib.request.urlopen(url, timeout=WORKER_SCRAPE_TIMEOUT_SECONDS) as answer:
                texts.append(answer.read().decode())
        return summed_exposition(texts)

    def run(self, admission: list[socket.socket]) -> int:
        from webhook.metrics import serve_metrics

        try:
            metrics_server = serve_metrics(self.scrape, self.args.host, self.args.metrics_port)
        except OSError as exc:
            self.log.event(
                "cannot listen", level="error", port=self.args.metrics_port, error=str(exc)
            )
            return 1
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._forward)
        try:
            for index in range(self.args.workers):
                self._spawn(index, admission)
        finally:
            for sock in admission:
                sock.close()  # the workers hold them; a closed worker's share stays served
        self._wait_until_up()
        self.log.event(
            "workers started",
            workers=len(self.workers),
            pids=[worker.pid for worker in self.workers],
            worker_metrics_ports=self.worker_metrics,
        )
        try:
            return self._wait()
        finally:
            metrics_server.shutdown()

    def _spawn(self, index: int, admission: list[socket.socket]) -> None:
        metrics_sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        metrics_sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        metrics_sock.bind(("127.0.0.1", 0))
        self.worker_metrics.append(metrics_sock.getsockname()[1])
        fds = [sock.fileno() for sock in admission]
        argv = worker_argv(self.argv, index, fds, metrics_sock.fileno())
        try:
            self.workers.append(
                subprocess.Popen(
                    argv,
                    pass_fds=(*fds, metrics_sock.fileno()),
                    preexec_fn=_die_with_supervisor,
                    # A terminal's Ctrl-C reaches the supervisor alone, which forwards it once.
                    process_group=0,
                )
            )
        finally:
            metrics_sock.close()

    def _wait_until_up(self) -> None:
        """A worker's metrics socket answers once its handlers are installed; a signal that came
        earlier is held and forwarded then (the default action would kill a worker outright)."""
        deadline = time.monotonic() + WORKER_START_TIMEOUT_SECONDS
        waiting = set(range(len(self.workers)))
        while waiting and time.monotonic() < deadline:
            for index in list(waiting):
                if self.workers[index].poll() is not None:
                    waiting.discard(index)  # dead: _wait reports it
                    continue
                with contextlib.suppress(OSError):
                    socket.create_connection(("127.0.0.1", self.worker_metrics[index]), 1).close()
                    waiting.discard(index)
            if waiting:
                time.sleep(0.02)
        self.up = True
        for sig in self.pending:
            self._forward(sig, None)
        self.pending.clear()

    def _forward(self, sig: int, frame: Any) -> None:
        if not self.up:
            self.pending.append(sig)
            return
        if sig != signal.SIGHUP:
            self.stopping = True
        for worker in self.workers:
            if worker.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.send_signal(sig)

    def _wait(self) -> int:
        while True:
            codes = [worker.poll() for worker in self.workers]
            if all(code is not None for code in codes):
                break
            if not self.stopping and any(code is not None for code in codes):
                dead = [
                    w.pid for w, code in zip(self.workers, codes, strict=True) if code is not None
                ]
                self.log.event(
                    "worker exited", level="error", pids=dead, detail="stopping the other workers"
                )
                self.stopping = True
                self._forward(signal.SIGTERM, None)
                self._wait_all()
                return 1
            time.sleep(0.1)
        codes = [worker.returncode for worker in self.workers]
        if any(codes):
            self.log.event("workers stopped", level="warning", exit_codes=codes)
            return 1
        self.log.event("stopped", workers=len(codes))
        return 0

    def _wait_all(self) -> None:
        for worker in self.workers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.wait(timeout=60)
