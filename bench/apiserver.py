"""`python -m bench apiserver`: pod creates through a real kube-apiserver, as users feel them.

The end-to-end suite's etcd and kube-apiserver (tests/e2e/cluster.py) run on this machine; the
product runs as tests/e2e/server.py runs it (a kubeconfig, so its namespace cache is live).
Three phases, in one run, each with the same pods at the same concurrency into a fresh
namespace labelled for injection:

- **none**: no MutatingWebhookConfiguration at all;
- **baseline**: the chart's configuration (same selectors, TLS, timeoutSeconds and
  failurePolicy) pointed at bench/baseline_app.py, which returns a fixed patch;
- **product**: the same configuration pointed at lifecycle-webhook.

Both webhooks serve the same certificate. For each phase: the client-side latency of every
`POST /api/v1/namespaces/NS/pods` (p50/p99), and the API server's own
`apiserver_admission_webhook_admission_duration_seconds` histogram for that webhook (delta of
/metrics before and after the phase; p50/p99 interpolated like PromQL's histogram_quantile,
and the exact mean from _sum/_count, since the API server's buckets start at 5 ms).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import ssl
import sys
import tempfile
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import BenchError
from bench.procs import CLOCK_TICKS

ADMISSION_METRIC = "apiserver_admission_webhook_admission_duration_seconds"
BASELINE_NAME_PREFIX = "baseline-"
ACTIVATION_TIMEOUT_SECONDS = 30.0
REQUEST_TIMEOUT_SECONDS = 30.0
TARGET_RATIO = 1.1
PHASES = ("none", "baseline", "product")


@dataclass
class Phase:
    """One phase's measurements, summed over the rounds."""

    name: str
    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0
    admission: dict[str, float] = field(default_factory=dict)
    """Delta of the API server's admission histogram for this phase's webhook (le -> count)."""
    server_cpu_seconds: float = 0.0
    handler_seconds: float = 0.0
    """lifecycle-webhook's own duration histogram _sum delta (product phase only)."""

    def quantile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def webhook(self, key: str) -> float:
        if key == "mean":
            return self.admission.get("sum", 0.0) / max(1.0, self.admission.get("count", 0.0))
        return histogram_quantile(float(key[1:]) / 100, self.admission)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench apiserver",
        description="Pod create latency through a real kube-apiserver: no webhook, a trivial "
        "webhook, lifecycle-webhook.",
    )
    parser.add_argument("--pods", type=int, default=1000, help="pods per phase (1000)")
    parser.add_argument("--concurrency", type=int, default=50, help="creates in flight (50)")
    parser.add_argument(
        "--warmup", type=int, default=100, help="pods created before each phase is measured (100)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="the pods of each phase are split over this many rounds, in alternating order "
        "(a b c, c b a, …), so drifting background load hits every phase alike (2)",
    )
    parser.add_argument(
        "--product-arg", action="append", default=[], metavar="ARG", help="extra serve flag"
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write results as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    if not 1 <= args.concurrency <= 500 or not 1 <= args.pods <= 100_000:
        parser.error("--pods wants 1 to 100000, --concurrency 1 to 500")
    if not 1 <= args.rounds <= min(10, args.pods):
        parser.error("--rounds wants 1 to 10 (and at most --pods)")
    return args


def histogram(text: str, metric: str) -> dict[str, dict[str, float]]:
    """{webhook name: {le: cumulative count, "sum": s, "count": n}} for type=admit CREATEs."""
    found: dict[str, dict[str, float]] = defaultdict(dict)
    for line in text.splitlines():
        if not line.startswith(metric):
            continue
        series, _, value = line.rpartition(" ")
        suffix = series[len(metric) :].split("{", 1)[0]
        labels = dict(
            part.split("=", 1) for part in series.partition("{")[2].rstrip("}").split(",") if part
        )
        labels = {key: val.strip('"') for key, val in labels.items()}
        if labels.get("operation") != "CREATE" or labels.get("type") != "admit":
            continue
        name = labels.get("name", "")
        if suffix == "_bucket":
            found[name][labels["le"]] = found[name].get(labels["le"], 0.0) + float(value)
        elif suffix in ("_sum", "_count"):
            found[name][suffix[1:]] = found[name].get(suffix[1:], 0.0) + float(value)
    return found


def histogram_quantile(q: float, buckets: dict[str, float]) -> float:
    """PromQL's linear interpolation within the bucket holding the q-th observation."""
    bounds = sorted(
        (float("inf") if le == "+Inf" else float(le), count)
        for le, count in buckets.items()
        if le not in ("sum", "count")
    )
    if not bounds or bounds[-1][1] <= 0:
        return float("nan")
    rank = q * bounds[-1][1]
    lower, below = 0.0, 0.0
    for upper, count in bounds:
        if count >= rank:
            if upper == float("inf"):
                return lower
            inside = count - below
            return lower + (upper - lower) * ((rank - below) / inside if inside else 0.0)
        lower, below = upper, count
    return lower


def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {key: after[key] - before.get(key, 0.0) for key in after}


class PodCreator:
    """Creates pods over kept-alive HTTPS connections, one per client thread, admin cert."""

    def __init__(self, port: int, pki: Path) -> None:
        self.port = port
        self.context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        self.context.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        self.local = threading.local()

    def _connection(self) -> http.client.HTTPSConnection:
        connection = getattr(self.local, "connection", None)
        if connection is None:
            connection = http.client.HTTPSConnection(
                "127.0.0.1", self.port, context=self.context, timeout=REQUEST_TIMEOUT_SECONDS
            )
            self.local.connection = connection
        return connection

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        connection = self._connection()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, response.read()
        except (OSError, http.client.HTTPException):
            connection.close()
            self.local.connection = None
            raise

    def create(
        self, namespace: str, name: str, dry_run: bool = False
    ) -> tuple[float, dict[str, Any]]:
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": "bench"}},
            "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:1"}]},
        }
        body = json.dumps(pod).encode()
        query = "?dryRun=All" if dry_run else ""
        started = time.perf_counter()
        status, answer = self.request("POST", f"/api/v1/namespaces/{namespace}/pods{query}", body)
        took = time.perf_counter() - started
        if status != 201 and not (dry_run and status == 200):
            raise BenchError(f"creating pod {namespace}/{name}: HTTP {status}: {answer[:500]!r}")
        return took, json.loads(answer)

    def metrics(self) -> str:
        status, body = self.request("GET", "/metrics")
        if status != 200:
            raise BenchError(f"GET /metrics of the API server: HTTP {status}")
        return body.decode()


def state_of(pod: dict[str, Any]) -> str:
    """Which phase's webhook touched this pod: none, baseline (fixed patch) or product."""
    from webhook.core.model import STATUS_KEY

    if STATUS_KEY in (pod["metadata"].get("annotations") or {}):
        return "product"
    return "baseline" if pod["spec"]["containers"][0].get("lifecycle") else "none"


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def run_phase(
    phase: Phase,
    pods: int,
    creator: PodCreator,
    kube: Any,
    args: argparse.Namespace,
    webhook_name: str,
    server: Any,
) -> None:
    """Creates `pods` pods (after the warm-up) into a fresh namespace; adds to `phase`."""
    from tests.e2e.kube import INJECT

    name = phase.name
    namespace = kube.create_namespace(f"bench-{name}", labels={INJECT: "enabled"})
    deadline = time.monotonic() + ACTIVATION_TIMEOUT_SECONDS
    probe = 0
    while True:  # the API server learns of configuration changes through an informer
        probe += 1
        _, pod = creator.create(namespace, f"probe-{probe}", dry_run=True)
        if state_of(pod) == name:
            break
        if time.monotonic() > deadline:
            raise BenchError(f"phase {name}: pods still look {state_of(pod)!r} after 30 s")
        time.sleep(0.2)

    def create_all(prefix: str, count: int) -> list[float]:
        def one(index: int) -> float:
            took, pod = creator.create(namespace, f"{prefix}-{index}")
            if state_of(pod) != name:
                raise BenchError(f"phase {name}: pod {prefix}-{index} is {state_of(pod)!r}")
            return took

        with ThreadPoolExecutor(args.concurrency) as pool:
            return list(pool.map(one, range(count)))

    create_all("warm", args.warmup)
    before = histogram(creator.metrics(), ADMISSION_METRIC).get(webhook_name, {})
    pid = server.pid if server else None
    cpu_before = cpu_seconds(pid) if pid else 0.0
    handler_before = handler_sum(server) if name == "product" else 0.0
    started = time.perf_counter()
    phase.latencies += create_all("pod", pods)
    phase.seconds += time.perf_counter() - started
    if pid:
        phase.server_cpu_seconds += cpu_seconds(pid) - cpu_before
    if name == "product":
        phase.handler_seconds += handler_sum(server) - handler_before
    if webhook_name:
        after = histogram(creator.metrics(), ADMISSION_METRIC).get(webhook_name, {})
        counted = delta(before, after)
        if counted.get("count", 0.0) < pods:
            raise BenchError(f"phase {name}: the API server counted {counted.get('count')} calls")
        for key, value in counted.items():
            phase.admission[key] = phase.admission.get(key, 0.0) + value


def handler_sum(server: Any) -> float:
    from tests.e2e.server import metric_value

    return metric_value(server.metrics(), "lifecycle_webhook_admission_duration_seconds_sum", {})


def register(kube: Any, configuration: dict[str, Any] | None, names: list[str]) -> None:
    """Exactly `configuration` registered (or none): every other bench configuration deleted."""
    for existing in names:
        if configuration is None or existing != configuration["metadata"]["name"]:
            kube.delete_mutating_webhook_configuration(existing)
    if configuration is not None:
        kube.apply_mutating_webhook_configuration(configuration)


def start_baseline(workdir: Path, cert: Path, key: Path, stack: contextlib.ExitStack) -> Any:
    from tests.e2e.procs import ManagedProcess, free_port, wait_until

    port = free_port()
    process = ManagedProcess(
        "baseline",
        [
            sys.executable,
            "-m",
            "bench.baseline_app",
            f"--port={port}",
            f"--tls-cert={cert}",
            f"--tls-key={key}",
        ],
        workdir / "baseline.log",
        cwd=Path(__file__).resolve().parent.parent,
    )
    stack.callback(process.stop)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE

    def ready() -> bool:
        process.check_alive()
        connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=2)
        try:
            connection.request("GET", "/readyz")
            return connection.getresponse().status == 200
        finally:
            connection.close()

    wait_until(ready, 30, "baseline /readyz", on_timeout=process.tail)
    return process, port


def measure(args: argparse.Namespace, workdir: Path) -> dict[str, Phase]:
    import pytest

    from tests.e2e.cluster import start_control_plane
    from tests.e2e.server import WebhookServer
    from tests.e2e.webhooks import mutating_configuration, point_at, render_chart
    from tests.tools import build_tools

    with contextlib.ExitStack() as stack:
        try:
            tools = build_tools("all")
        except (pytest.skip.Exception, pytest.fail.Exception) as exc:
            raise BenchError(f"kube-apiserver, etcd and helm are needed: {exc}") from None
        plane = start_control_plane(tools, workdir, stack)
        server = WebhookServer(
            workdir, plane.ca, plane.kubeconfig, drain_seconds=0, extra_args=args.product_arg
        )
        stack.callback(server.stop)
        server.start()
        baseline, baseline_port = start_baseline(workdir, server.cert_path, server.key_path, stack)
        chart = mutating_configuration(
            render_chart(tools.helm, workdir, {"mode": "namespace", "failurePolicy": "Fail"})
        )
        product = point_at(chart, server.url, plane.ca.cert_pem)
        yardstick = point_at(chart, f"https://127.0.0.1:{baseline_port}/mutate", plane.ca.cert_pem)
        yardstick["metadata"]["name"] = BASELINE_NAME_PREFIX + chart["metadata"]["name"]
        for hook in yardstick["webhooks"]:
            hook["name"] = BASELINE_NAME_PREFIX + hook["name"]
        names = [product["metadata"]["name"], yardstick["metadata"]["name"]]
        webhook_name = chart["webhooks"][0]["name"]  # the namespace opt-in entry
        creator = PodCreator(plane.api_port, workdir / "pki")
        setups = {
            "none": (None, "", None),
            "baseline": (yardstick, BASELINE_NAME_PREFIX + webhook_name, baseline),
            "product": (product, webhook_name, server),
        }
        phases = {name: Phase(name) for name in PHASES}
        share = [
            args.pods // args.rounds + (r < args.pods % args.rounds) for r in range(args.rounds)
        ]
        for round_index, pods in enumerate(share):
            order = PHASES if round_index % 2 == 0 else PHASES[::-1]
            for name in order:
                configuration, hook_name, target = setups[name]
                register(plane.kube, configuration, names)
                print(
                    f"bench apiserver: round {round_index + 1}, phase {name} …",
                    file=sys.stderr,
                    flush=True,
                )
                run_phase(phases[name], pods, creator, plane.kube, args, hook_name, target)
        register(plane.kube, None, names)
        return phases


def milliseconds(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def render(phases: dict[str, Phase], args: argparse.Namespace) -> str:
    none, base, prod = phases["none"], phases["baseline"], phases["product"]
    lines = [
        f"{args.pods} pods per phase in {args.rounds} rounds, {args.concurrency} in flight, "
        f"{args.warmup} warm-up pods per round; "
        f"kube-apiserver, etcd, both webhooks and this client share the machine's "
        f"{os.cpu_count()} CPUs",
        "",
        "| | no webhook (a) | trivial webhook (b) | lifecycle-webhook (c) | c/b | c-a |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, q in (("create p50", 0.5), ("create p99", 0.99)):
        a, b, c = (p.quantile(q) for p in (none, base, prod))
        lines.append(
            f"| {label} | {milliseconds(a)} | {milliseconds(b)} | {milliseconds(c)} "
            f"| {c / b:.2f}x | {milliseconds(c - a)} |"
        )
    lines.append(
        "| creates/s | "
        + " | ".join(f"{len(p.latencies) / p.seconds:,.0f}" for p in (none, base, prod))
        + f" | {base.seconds / prod.seconds:.2f}x | |"
    )
    for key in ("p50", "p99", "mean"):
        b, c = base.webhook(key), prod.webhook(key)
        lines.append(
            f"| API server's admission duration {key} | - | {milliseconds(b)} "
            f"| {milliseconds(c)} | {c / b:.2f}x | |"
        )
    per_review = [p.server_cpu_seconds / len(p.latencies) * 1e6 for p in (base, prod)]
    lines.append(
        f"| webhook CPU per review | - | {per_review[0]:.0f} µs | {per_review[1]:.0f} µs "
        f"| {per_review[1] / per_review[0]:.2f}x | |"
    )
    lines.append(
        f"| lifecycle-webhook's own handler time, mean | - | - "
        f"| {milliseconds(prod.handler_seconds / len(prod.latencies))} | | |"
    )
    worst = max(prod.quantile(q) / base.quantile(q) for q in (0.5, 0.99))
    verdict = "PASS" if worst <= TARGET_RATIO else "FAIL"
    lines += [
        "",
        f"target: create latency of c within {TARGET_RATIO}x of b (p50 and p99): "
        f"worst {worst:.2f}x — {verdict}",
        "(the API server's admission histogram has buckets 5 ms, 25 ms, 100 ms, …: its "
        "p50/p99 are interpolated inside the first bucket; the mean is exact)",
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="bench-apiserver-"))
    try:
        phases = measure(args, workdir)
    except (BenchError, TimeoutError, RuntimeError) as exc:
        print(f"bench apiserver: cannot benchmark: {exc}", file=sys.stderr)
        print(f"logs: {workdir}", file=sys.stderr)
        return 2
    print(render(phases, args))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    name: {
                        "p50": p.quantile(0.5),
                        "p99": p.quantile(0.99),
                        "seconds": p.seconds,
                        "admission_histogram": p.admission,
                        "server_cpu_seconds": p.server_cpu_seconds,
                    }
                    for name, p in phases.items()
                },
                indent=2,
            )
        )
    if args.keep:
        print(f"work directory: {workdir}")
    else:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    return 0
