"""`python -m bench reliability`: the figures of the README's Reliability section.

The server runs pinned to CPU 0 with its default flags (10 s stage deadlines, 500
connections), this driver and its clients on CPU 1; all traffic stays on 127.0.0.1.

- capacity: reviews/s of the 9 KB pod with 32 closed-loop keep-alive clients;
- slow: 5,000 connections stalled at each stage (TCP only, mid-handshake, half a head, half a
  body) while a healthy client sends a review every 20 ms: peak memory, that client's p99,
  every stalled connection closed by its deadline;
- burst: 10x capacity offered for 10 s, API-server style (at most 600 in flight, each
  abandoned after 2 s): no crash, peak memory, time until the healthy client's latency is
  normal again;
- soak: half of capacity for --soak-seconds with RSS sampled every 10 s: slope and errors.

Exit 0 when every target is met, 1 when one is missed, 2 when the run itself failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from bench import BenchError, corpus
from bench.clients import STAGES, Probe, percentile, raise_fd_limit, stall
from bench.load import RssSampler, capacity, open_loop, rss_mib, slope_mib_per_10_minutes
from bench.procs import HOST, Server, free_port, make_tls, plain_get
from bench.session import REPO_ROOT, _server_env

SERVER_CPU, CLIENT_CPU = 0, 1
CHART_LIMIT_MIB = 128
SOAK_WARM_UP = 10.0
"""Seconds of the soak's load before the first RSS sample: allocator and caches settle."""
NORMAL_FLOOR_SECONDS = 0.010
"""Below this a healthy review's latency counts as normal whatever the baseline (noise)."""
BURST_IN_FLIGHT = 600
"""Three API servers' default --max-mutating-requests-inflight (200 each): the most reviews a
control plane can have in flight at once."""
TARGETS = {
    "slow_peak_rss_mib": 108.0,  # the chart limit with 20 MiB to spare
    "slow_probe_p99_ms": 50.0,
    "burst_recovery_s": 2.0,
    "soak_slope_mib_per_10min": 1.0,
}


class Harness:
    def __init__(self, directory: Path, extra_args: list[str]) -> None:
        self.directory = directory
        self.tls = make_tls(directory)
        self.body = orjson.dumps(corpus.build()["M"])
        self.body_file = directory / "review-M.json"
        self.body_file.write_bytes(self.body)
        self.extra_args = extra_args
        self.starts = 0

    def server(self) -> tuple[Server, int]:
        self.starts += 1
        port, metrics_port = free_port(), free_port()
        argv = [sys.executable, "-m", "webhook", "serve", "--host", HOST, "--port", str(port)]
        argv += ["--metrics-port", str(metrics_port), "--drain-seconds", "0"]
        argv += ["--tls-cert", str(self.tls.cert), "--tls-key", str(self.tls.key)]
        argv += ["--log-level", "warning", *self.extra_args]
        server = Server(
            f"product-{self.starts}",
            argv,
            port=port,
            cpu=SERVER_CPU,
            tls=self.tls,
            log_path=self.directory / f"server-{self.starts}.log",
            cwd=REPO_ROOT,
            env=_server_env(self.directory),
        )
        server.start()
        server.wait_ready()
        return server, metrics_port

    def probe(self, name: str) -> Probe:
        return Probe(self.tls_port, self.tls.ca, self.body_file, self.directory / f"{name}.txt")

    tls_port = 0


def metrics(port: int) -> dict[str, float]:
    status, body = plain_get(port, "/metrics")
    if status != 200:
        raise BenchError(f"/metrics answered {status}")
    values: dict[str, float] = {}
    for line in body.decode().splitlines():
        if line.startswith("lifecycle_webhook_") and " " in line:
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def _progress(text: str) -> None:
    print(f"reliability: {text}", file=sys.stderr, flush=True)


def measure_capacity(harness: Harness, use_wrk: bool = True) -> float:
    """Reviews/s with 32 closed-loop keep-alive clients: wrk where it is installed (a Python
    client would measure itself), else this driver's own client."""
    import shutil

    from bench.wrk import run_wrk

    server, _ = harness.server()
    wrk = shutil.which("wrk") if use_wrk else None
    try:
        if wrk:
            url = f"https://{HOST}:{server.port}/mutate"
            run_wrk(wrk, url, harness.body_file, 32, 2, CLIENT_CPU)  # warm-up
            rate = run_wrk(wrk, url, harness.body_file, 32, 5, CLIENT_CPU).rps
        else:
            context = harness.tls.client_context()
            asyncio.run(capacity(server.port, context, harness.body, 32, 2))  # warm-up
            rate = asyncio.run(capacity(server.port, context, harness.body, 32, 5))
    finally:
        server.stop()
    tool = "wrk" if wrk else "the Python client"
    _progress(f"capacity {rate:,.0f} reviews/s (9 KB pod, 32 keep-alive clients, {tool})")
    return rate


def slow_clients(harness: Harness) -> dict[str, Any]:
    server, metrics_port = harness.server()
    harness.tls_port = server.port
    probe = harness.probe("slow-probe")
    result: dict[str, Any] = {"stages": {}}
    try:
        time.sleep(1)
        for stage in STAGES:

            async def run(stage: str = stage) -> dict[str, Any]:
                sampler = RssSampler(server.pid, 0.1)
                sampler.start()
                began = time.monotonic()
                stalled, closed = await stall(
                    server.port, harness.tls.client_context(), stage, 5000
                )
                opened = time.monotonic()
                await asyncio.wait_for(closed, 60)
                samples = await sampler.stop()
                lifetimes = stalled.lifetimes()
                return {
                    "held": stalled.opened,
                    "refused": stalled.refused,
                    "open_seconds": round(opened - began, 1),
                    "longest_lifetime_s": round(max(lifetimes, default=0.0), 2),
                    "peak_rss_mib": round(max(m for _, m in samples), 1),
                    "window": (began, opened, time.monotonic()),
                }

            figures = asyncio.run(run())
            result["stages"][stage] = figures
            _progress(f"slow {stage}: {figures}")
            time.sleep(1)
        result["metrics"] = {
            k: v
            for k, v in metrics(metrics_port).items()
            if "connections" in k and "created" not in k
        }
    finally:
        samples = probe.stop()
        server.check_alive()
        server.stop()
    for figures in result["stages"].values():
        began, opened, ended = figures.pop("window")
        flood = [s for t, s, status in samples if began <= t < opened and status == 200]
        held = [s for t, s, status in samples if opened <= t <= ended and status == 200]
        failed = [s for t, s, status in samples if began <= t <= ended and status != 200]
        figures["probe_reviews"] = len(flood) + len(held)
        figures["probe_failures"] = len(failed)
        # While the 5,000 are being opened (a flood of TLS handshakes: CPU-bound) ...
        figures["probe_p99_opening_ms"] = round(percentile(flood, 0.99) * 1000, 2)
        # ... and while they stall, until their deadline closes them.
        figures["probe_p50_ms"] = round(percentile(held, 0.5) * 1000, 2)
        figures["probe_p99_ms"] = round(percentile(held, 0.99) * 1000, 2)
    result["peak_rss_mib"] = max(f["peak_rss_mib"] for f in result["stages"].values())
    result["probe_p99_ms"] = max(f["probe_p99_ms"] for f in result["stages"].values())
    result["probe_p99_opening_ms"] = max(
        f["probe_p99_opening_ms"] for f in result["stages"].values()
    )
    result["probe_failures"] = sum(f["probe_failures"] for f in result["stages"].values())
    return result


def burst(harness: Harness, rate: float) -> dict[str, Any]:
    server, metrics_port = harness.server()
    harness.tls_port = server.port
    probe = harness.probe("burst-probe")
    try:
        time.sleep(5)  # the probe's baseline

        async def run() -> tuple[Any, list[tuple[float, float]]]:
            sampler = RssSampler(server.pid, 0.2)
            sampler.start()
            tally = await open_loop(
                server.port,
                harness.tls.client_context(),
                harness.body,
                10 * rate,
                10,
                BURST_IN_FLIGHT,
            )
            samples = await sampler.stop()
            return tally, samples

        began = time.monotonic()
        tally, rss = asyncio.run(run())
        ended = began + 10
        time.sleep(8)
        server.check_alive()
        counted = metrics(metrics_port)
    finally:
        samples = probe.stop()
        server.stop()
    before = [s for t, s, status in samples if t < began - 0.5 and status == 200]
    normal = max(2 * percentile(before, 0.99), NORMAL_FLOOR_SECONDS)
    after = [(t, s, status) for t, s, status in samples if t >= ended]
    if os.environ.get("RELIABILITY_DEBUG"):
        for t, s, status in samples:
            if t >= began - 1:
                print(f"probe {t - ended:+.2f} {s * 1000:.1f} ms {status}", file=sys.stderr)
    # Recovered: from the first moment after which one second of reviews is all normal.
    recovered_at = after[-1][0] if after else ended
    for index, (t, _, _) in enumerate(after):
        window = [row for row in after[index:] if row[0] < t + 1.0]
        if after[-1][0] >= t + 1.0 and all(st == 200 and s <= normal for _, s, st in window):
            recovered_at = t
            break
    figures = {
        "offered_per_s": round(10 * rate),
        "sent": tally.sent,
        "held_back_by_client": tally.held_back,
        "answered_200": tally.ok,
        "statuses": tally.statuses,
        "abandoned_after_2s": tally.timed_out,
        "transport_errors": tally.transport_errors,
        "new_connections": tally.connects,
        "peak_rss_mib": round(max((m for _, m in rss), default=0.0), 1),
        "probe_p99_before_ms": round(percentile(before, 0.99) * 1000, 2),
        "normal_ms": round(normal * 1000, 2),
        "recovery_s": round(max(0.0, recovered_at - ended), 2),
        "probe_after_max_ms": round(max((s for _, s, _ in after), default=0.0) * 1000, 1),
        "shed": counted.get("lifecycle_webhook_reviews_shed_total", 0.0),
        "refused": counted.get("lifecycle_webhook_connections_refused_total", 0.0),
    }
    _progress(f"burst: {figures}")
    return figures


def soak(harness: Harness, rate: float, seconds: float) -> dict[str, Any]:
    """Half of capacity for `seconds`: wrk, each of 16 connections pausing between reviews so
    that together they send about rate / 2 a second; RSS sampled every 10 s."""
    import threading

    from bench.wrk import LUA_SCRIPT, ensure_wrk, run_wrk

    wrk = ensure_wrk()
    connections = 16
    pause_ms = max(1, round(1000 * connections / (rate / 2)))
    script = harness.directory / "paced.lua"
    script.write_text(LUA_SCRIPT.read_text() + f"\nfunction delay()\n  return {pause_ms}\nend\n")
    server, metrics_port = harness.server()
    url = f"https://{HOST}:{server.port}/mutate"
    samples: list[tuple[float, float]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append((time.monotonic(), rss_mib(server.pid)))
            stop.wait(10.0)

    try:
        run_wrk(
            wrk, url, harness.body_file, connections, int(SOAK_WARM_UP), CLIENT_CPU, script=script
        )
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        result = run_wrk(
            wrk, url, harness.body_file, connections, int(seconds), CLIENT_CPU, script=script
        )
        stop.set()
        sampler.join(15)
        samples.append((time.monotonic(), rss_mib(server.pid)))
        server.check_alive()
        counted = metrics(metrics_port)
    finally:
        stop.set()
        server.stop()
    figures = {
        "target_per_s": round(rate / 2),
        "rate_per_s": round(result.rps),
        "seconds": seconds,
        "reviews": result.checked,
        "errors": result.error_count + result.bad,
        "p99_ms": round(result.latency_us["p99"] / 1000, 2),
        "rss_first_mib": round(samples[0][1], 1),
        "rss_last_mib": round(samples[-1][1], 1),
        "samples": len(samples),
        "slope_mib_per_10min": round(slope_mib_per_10_minutes(samples), 2),
        "server_errors": counted.get(
            'lifecycle_webhook_admission_requests_total{operation="CREATE",outcome="error"}', 0.0
        ),
    }
    _progress(f"soak: {figures}")
    return figures


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench reliability", description=__doc__)
    parser.add_argument("--only", choices=["slow", "burst", "soak"], action="append")
    parser.add_argument("--soak-seconds", type=float, default=120.0)
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    parser.add_argument("--server-arg", action="append", default=[], metavar="ARG")
    args = parser.parse_args(argv)
    parts = args.only or ["slow", "burst", "soak"]
    raise_fd_limit(12_000)
    os.sched_setaffinity(0, {CLIENT_CPU})
    load = os.getloadavg()
    results: dict[str, Any] = {"load_average_before": load}
    with tempfile.TemporaryDirectory(prefix="lifecycle-webhook-reliability-") as directory:
        harness = Harness(Path(directory), args.server_arg)
        try:
            rate = measure_capacity(harness)
            results["capacity_per_s"] = round(rate)
            if "slow" in parts:
                results["slow"] = slow_clients(harness)
            if "burst" in parts:
                results["burst"] = burst(harness, rate)
            if "soak" in parts:
                results["soak"] = soak(harness, rate, args.soak_seconds)
        except BenchError as exc:
            print(f"reliability: cannot measure: {exc}", file=sys.stderr)
            return 2
    results["load_average_after"] = os.getloadavg()
    missed = check(results)
    results["missed"] = missed
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    for line in missed:
        print(f"reliability: MISSED {line}", file=sys.stderr)
    return 1 if missed else 0


def check(results: dict[str, Any]) -> list[str]:
    missed = []
    slow = results.get("slow")
    if slow:
        if slow["peak_rss_mib"] > TARGETS["slow_peak_rss_mib"]:
            missed.append(f"slow clients: peak RSS {slow['peak_rss_mib']} MiB")
        if slow["probe_p99_ms"] > TARGETS["slow_probe_p99_ms"]:
            missed.append(f"slow clients: healthy review p99 {slow['probe_p99_ms']} ms")
        if slow["probe_failures"]:
            missed.append(f"slow clients: {slow['probe_failures']} healthy reviews failed")
        for stage, figures in slow["stages"].items():
            if figures["longest_lifetime_s"] > 10 + 2:
                missed.append(
                    f"slow clients: a {stage} connection lived {figures['longest_lifetime_s']} s"
                )
    burst_figures = results.get("burst")
    if burst_figures and burst_figures["recovery_s"] > TARGETS["burst_recovery_s"]:
        missed.append(f"burst: recovery took {burst_figures['recovery_s']} s")
    soak_figures = results.get("soak")
    if soak_figures:
        if soak_figures["slope_mib_per_10min"] > TARGETS["soak_slope_mib_per_10min"]:
            missed.append(f"soak: RSS slope {soak_figures['slope_mib_per_10min']} MiB/10 min")
        if soak_figures["errors"] or soak_figures["server_errors"]:
            missed.append(f"soak: {soak_figures['errors']} errors")
    return missed
