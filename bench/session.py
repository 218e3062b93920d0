"""One benchmark session: both servers, the same corpus, the same machine, interleaved runs.

Baseline and product run side by side (each pinned to the server CPU, idle while the other
is loaded) and every scenario loads them one right after the other, so drifting background
load hits both alike. The load generator and this driver sit on the client CPU.
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bench import BenchError, corpus, verify
from bench.procs import HOST, Server, Tls, cpu_busy_seconds, free_port, make_tls, plain_get
from bench.procs import request as https_request
from bench.wrk import WrkResult, ensure_wrk, run_wrk

REPO_ROOT = Path(__file__).resolve().parent.parent
BASELINE = "baseline"
PRODUCT = "product"
SERVERS = (BASELINE, PRODUCT)
DRIVER_ENV_DROP = ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT", "POD_NAMESPACE")


@dataclass(frozen=True)
class Scenario:
    size: str
    connections: int

    @property
    def key(self) -> str:
        return f"{self.size}/c{self.connections}"


THROUGHPUT = tuple(Scenario(size, 32) for size in corpus.NAMES)
LATENCY = Scenario("M", 1)
SCENARIOS = (THROUGHPUT[0], THROUGHPUT[1], LATENCY, THROUGHPUT[2])
"""Everything with S and M first, so the RSS after them shows the steady state before L."""


@dataclass(frozen=True)
class Options:
    warmup_seconds: int
    measure_seconds: int
    repeat: int
    starts: int
    server_cpu: int
    client_cpu: int
    baseline_only: bool
    product_args: tuple[str, ...]
    keep_dir: bool
    nice: int = 0


@dataclass(frozen=True)
class Run:
    """One measured wrk run against one server."""

    server: str
    scenario: Scenario
    wrk: WrkResult
    server_cpu_share: float
    """Fraction of the server CPU the server process used during the run."""
    others_cpu_share: float
    """Fraction of the server CPU used by anything else (other users: noise)."""
    client_others_share: float
    """Fraction of the client CPU used by anything but wrk and this driver (noise too)."""
    rss_kib: int

    def as_json(self) -> dict[str, Any]:
        return {
            "server": self.server,
            "size": self.scenario.size,
            "connections": self.scenario.connections,
            "requests": self.wrk.requests,
            "seconds": self.wrk.seconds,
            "rps": round(self.wrk.rps, 1),
            "latency_us": self.wrk.latency_us,
            "errors": self.wrk.errors,
            "checked": self.wrk.checked,
            "bad": self.wrk.bad,
            "server_cpu_share": round(self.server_cpu_share, 3),
            "others_cpu_share": round(self.others_cpu_share, 3),
            "client_others_share": round(self.client_others_share, 3),
            "rss_kib": self.rss_kib,
        }


@dataclass
class Results:
    started: str
    machine: dict[str, Any]
    options: Options
    sizes: dict[str, int]
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    runs: list[Run] = field(default_factory=list)
    rss_after_kib: dict[str, int] = field(default_factory=dict)
    peak_rss_kib: dict[str, int] = field(default_factory=dict)
    ready_ms: dict[str, list[float]] = field(default_factory=dict)
    outcomes: dict[str, float] = field(default_factory=dict)
    product_log_errors: int = 0

    def servers(self) -> tuple[str, ...]:
        return (BASELINE,) if self.options.baseline_only else SERVERS

    def runs_for(self, server: str, scenario: Scenario) -> list[Run]:
        return [r for r in self.runs if r.server == server and r.scenario == scenario]

    def median_rps(self, server: str, scenario: Scenario) -> float | None:
        runs = self.runs_for(server, scenario)
        return statistics.median(r.wrk.rps for r in runs) if runs else None

    def median_rps_per_cpu(self, server: str, scenario: Scenario) -> float | None:
        """Reviews per second of server CPU time: throughput corrected for CPU stolen by others."""
        runs = [r for r in self.runs_for(server, scenario) if r.server_cpu_share > 0.05]
        return statistics.median(r.wrk.rps / r.server_cpu_share for r in runs) if runs else None

    def noise(self, scenario: Scenario) -> float | None:
        """The largest share of the server or wrk CPU other processes took in these runs."""
        shares = [
            max(r.others_cpu_share, r.client_others_share)
            for r in self.runs
            if r.scenario == scenario
        ]
        return max(shares) if shares else None

    def median_latency_us(self, server: str, scenario: Scenario, pct: str) -> float | None:
        runs = self.runs_for(server, scenario)
        return statistics.median(r.wrk.latency_us[pct] for r in runs) if runs else None

    def rss_before_large_kib(self, server: str) -> int | None:
        """RSS after the last run before any L run: memory with typical (3-9 KB) Pods."""
        before = [r for r in self.runs if r.server == server and r.scenario == LATENCY]
        return before[-1].rss_kib if before else None

    def median_ready_ms(self, server: str) -> float | None:
        times = self.ready_ms.get(server)
        return statistics.median(times) if times else None

    def as_json(self) -> dict[str, Any]:
        return {
            "started": self.started,
            "machine": self.machine,
            "options": {
                "warmup_seconds": self.options.warmup_seconds,
                "measure_seconds": self.options.measure_seconds,
                "repeat": self.options.repeat,
                "starts": self.options.starts,
                "server_cpu": self.options.server_cpu,
                "client_cpu": self.options.client_cpu,
                "nice": self.options.nice,
            },
            "corpus_bytes": self.sizes,
            "load_average_before": self.load_before,
            "load_average_after": self.load_after,
            "runs": [r.as_json() for r in self.runs],
            "rss_after_load_kib": self.rss_after_kib,
            "peak_rss_kib": self.peak_rss_kib,
            "ready_ms": self.ready_ms,
            "product_outcomes": self.outcomes,
            "product_log_errors": self.product_log_errors,
        }


def _progress(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


def _machine() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions: dict[str, str] = {}
    from importlib.metadata import PackageNotFoundError, version

    for package in ("fastapi", "uvicorn", "uvloop", "httptools", "orjson"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "missing"
    return {
        "cpu_model": model,
        "cpus_online": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "packages": versions,
    }


def _server_env(directory: Path) -> dict[str, str]:
    """No cluster: the product must not find a kubeconfig or in-cluster credentials."""
    env = {k: v for k, v in os.environ.items() if k not in DRIVER_ENV_DROP}
    env["KUBECONFIG"] = str(directory / "no-kubeconfig")
    return env


class Session:
    def __init__(self, options: Options, directory: Path) -> None:
        self.options = options
        self.directory = directory
        self.wrk = ensure_wrk()
        self.bodies = corpus.write(directory / "corpus")
        self.reviews = corpus.build()
        self.tls: Tls = make_tls(directory)
        self.env = _server_env(directory)
        self.starts = 0

    def _server(self, label: str) -> tuple[Server, int | None]:
        self.starts += 1
        port = free_port()
        log_path = self.directory / f"{label}-{self.starts}.log"
        metrics_port: int | None = None
        if label == BASELINE:
            argv = [sys.executable, "-m", "bench.baseline_app", "--port", str(port)]
            argv += ["--tls-cert", str(self.tls.cert), "--tls-key", str(self.tls.key)]
        else:
            metrics_port = free_port()
            argv = [sys.executable, "-m", "webhook", "serve", "--host", HOST, "--port", str(port)]
            argv += ["--metrics-port", str(metrics_port), "--drain-seconds", "0"]
            argv += ["--tls-cert", str(self.tls.cert), "--tls-key", str(self.tls.key)]
            argv += list(self.options.product_args)
        server = Server(
            label,
            argv,
            port=port,
            cpu=self.options.server_cpu,
            tls=self.tls,
            log_path=log_path,
            cwd=REPO_ROOT,
            env=self.env,
            nice=self.options.nice,
        )
        return server, metrics_port

    def _check_answers(self, server: Server) -> None:
        context = self.tls.client_context()
        for size in corpus.NAMES:
            status, body = https_request(
                server.port, context, "POST", "/mutate", self.bodies[size].read_bytes()
            )
            ops = verify.check_answer(
                server.label,
                size,
                self.reviews[size],
                status,
                body,
                full=server.label == PRODUCT,
            )
            _progress(f"{server.label} answers {size} correctly ({len(ops)} patch operations)")

    def _load(self, server: Server, scenario: Scenario, seconds: int) -> WrkResult:
        url = f"https://{HOST}:{server.port}/mutate"
        result = run_wrk(
            self.wrk,
            url,
            self.bodies[scenario.size],
            scenario.connections,
            seconds,
            self.options.client_cpu,
            self.options.nice,
        )
        server.check_alive()
        if result.bad or result.error_count or result.checked == 0:
            raise BenchError(
                f"{server.label} {scenario.key}: {result.bad} wrong answers of {result.checked}, "
                f"wrk errors {result.errors}; first wrong answer: {result.first_bad!r}"
            )
        return result

    def _measure(self, server: Server, scenario: Scenario) -> Run:
        self._load(server, scenario, self.options.warmup_seconds)
        server_cpu, client_cpu = self.options.server_cpu, self.options.client_cpu
        before = (
            cpu_busy_seconds(server_cpu),
            server.cpu_seconds(),
            cpu_busy_seconds(client_cpu),
            _own_and_children_cpu_seconds(),
            time.perf_counter(),
        )
        result = self._load(server, scenario, self.options.measure_seconds)
        after = (
            cpu_busy_seconds(server_cpu),
            server.cpu_seconds(),
            cpu_busy_seconds(client_cpu),
            _own_and_children_cpu_seconds(),
            time.perf_counter(),
        )
        busy, own, client_busy, client_own, elapsed = (
            b - a for a, b in zip(before, after, strict=True)
        )
        run = Run(
            server.label,
            scenario,
            result,
            server_cpu_share=own / elapsed,
            others_cpu_share=max(0.0, busy - own) / elapsed,
            client_others_share=max(0.0, client_busy - client_own) / elapsed,
            rss_kib=server.rss_kib(),
        )
        lat = result.latency_us
        _progress(
            f"{server.label:8} {scenario.key:6} {result.rps:9,.0f}/s  "
            f"p50 {lat['p50'] / 1000:.2f} ms  p99 {lat['p99'] / 1000:.2f} ms  "
            f"server CPU {run.server_cpu_share:.0%}, others there {run.others_cpu_share:.0%}, "
            f"others on the client CPU {run.client_others_share:.0%}"
        )
        return run

    def load_phase(self, results: Results) -> None:
        servers: dict[str, Server] = {}
        metrics_port: int | None = None
        try:
            for label in results.servers():
                server, port = self._server(label)
                server.start()
                servers[label] = server
                metrics_port = port if label == PRODUCT else metrics_port
            for server in servers.values():
                server.wait_ready()
                self._check_answers(server)
            for scenario in SCENARIOS:
                for _ in range(self.options.repeat):
                    for server in servers.values():
                        results.runs.append(self._measure(server, scenario))
            time.sleep(0.5)  # let in-flight work and freed buffers settle before reading RSS
            for label, server in servers.items():
                server.check_alive()
                results.rss_after_kib[label] = server.rss_kib()
                results.peak_rss_kib[label] = server.peak_rss_kib()
            if PRODUCT in servers and metrics_port is not None:
                results.outcomes = self._product_outcomes(metrics_port, results)
        finally:
            for server in servers.values():
                server.stop()
        if PRODUCT in servers:
            results.product_log_errors = _count_error_lines(servers[PRODUCT].log_path)
            if results.product_log_errors:
                raise BenchError(
                    f"the product logged {results.product_log_errors} error lines; "
                    f"see {servers[PRODUCT].log_path} (rerun with --keep to keep it)"
                )

    def _product_outcomes(self, metrics_port: int, results: Results) -> dict[str, float]:
        status, body = plain_get(metrics_port, "/metrics")
        if status != 200:
            raise BenchError(f"product /metrics answered HTTP {status}")
        counts = verify.outcome_counts(body.decode("utf-8", "replace"))
        unexpected = {k: v for k, v in counts.items() if k not in verify.GOOD_OUTCOMES and v}
        if unexpected:
            raise BenchError(f"the product counted failed reviews: {unexpected}")
        answered = sum(r.wrk.checked for r in results.runs if r.server == PRODUCT)
        if sum(counts.values()) < answered:
            raise BenchError(
                f"the product counted {sum(counts.values()):.0f} reviews, wrk saw {answered}"
            )
        return counts

    def startup_phase(self, results: Results) -> None:
        """Spawn -> first 200 on /readyz, alternating the servers, one process at a time."""
        for _ in range(self.options.starts):
            for label in results.servers():
                server, _ = self._server(label)
                server.start()
                try:
                    seconds = server.wait_ready()
                finally:
                    server.stop()
                results.ready_ms.setdefault(label, []).append(seconds * 1000)
        for label, times in results.ready_ms.items():
            _progress(
                f"{label:8} ready in {', '.join(f'{t:.0f}' for t in times)} ms "
                f"(median {statistics.median(times):.0f} ms)"
            )


def _own_and_children_cpu_seconds() -> float:
    """CPU time of this driver and its finished children (wrk): both live on the client CPU."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _count_error_lines(log_path: Path) -> int:
    count = 0
    with open(log_path, "rb") as log:
        for line in log:
            json_error = line.startswith(b"{") and b'"level":"error"' in line
            if json_error or b"Traceback (most recent call last)" in line:
                count += 1
    return count


def check_cpus(options: Options) -> None:
    usable = os.sched_getaffinity(0)
    for role, cpu in (("server", options.server_cpu), ("client", options.client_cpu)):
        if cpu not in usable:
            raise BenchError(f"{role} CPU {cpu} is not available (usable: {sorted(usable)})")
    if options.server_cpu == options.client_cpu:
        raise BenchError("server and client CPUs must differ")
    if options.nice < 0 and os.geteuid() != 0:
        raise BenchError("a negative --nice needs root")


def run(options: Options) -> Results:
    check_cpus(options)
    os.sched_setaffinity(0, {options.client_cpu})
    results = Results(
        started=datetime.now(UTC).isoformat(timespec="seconds"),
        machine=_machine(),
        options=options,
        sizes={},
        load_before=os.getloadavg(),
    )
    directory = Path(tempfile.mkdtemp(prefix="lifecycle-webhook-bench-"))
    try:
        session = Session(options, directory)
        results.sizes = {name: path.stat().st_size for name, path in session.bodies.items()}
        session.load_phase(results)
        session.startup_phase(results)
    finally:
        if options.keep_dir:
            _progress(f"kept {directory}")
        else:
            _remove_tree(directory)
    results.load_after = os.getloadavg()
    return results


def _remove_tree(directory: Path) -> None:
    import shutil

    shutil.rmtree(directory, ignore_errors=True)


def dump_json(results: Results, path: Path) -> None:
    path.write_bytes(orjson.dumps(results.as_json(), option=orjson.OPT_INDENT_2) + b"\n")
