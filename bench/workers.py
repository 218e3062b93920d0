"""`python -m bench workers`: throughput of `serve --workers 1` and `--workers 2` in one run.

The main benchmark pins one server to CPU 0 and wrk to CPU 1. Two workers need both CPUs, so
here every layout runs on the same load (wrk, one thread, 32 keep-alive connections, every
answer checked by post.lua), one after the other, on the M and L reviews:

- `1 worker, pinned`: the main benchmark's layout (server on CPU 0, wrk on CPU 1);
- `1 worker` and `2 workers`: server processes and wrk free to use both CPUs.

On a 2-CPU machine wrk competes with the workers for the same two CPUs, so the second
worker can only win what wrk leaves; the rows say how much that is here.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench import BenchError, corpus
from bench.procs import HOST, Server, free_port, make_tls, status_kib
from bench.wrk import ensure_wrk, run_wrk

REPO_ROOT = Path(__file__).resolve().parent.parent
CONNECTIONS = 32
LAYOUTS = (
    ("1 worker, pinned", 1, "0", "1"),
    ("1 worker", 1, "0,1", "0,1"),
    ("2 workers", 2, "0,1", "0,1"),
)


@dataclass(frozen=True)
class Row:
    layout: str
    size: str
    rps: float
    p99_ms: float
    server_cpu_seconds: float
    seconds: float
    rss_mib: float


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench workers")
    parser.add_argument("--seconds", type=int, default=8, help="measured seconds per run (8)")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up seconds per run (2)")
    return parser.parse_args(argv)


def process_tree(pid: int) -> list[int]:
    """The pid and its children (the supervisor's workers), from /proc."""
    found = [pid]
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        found += process_tree(int(child))
    return found


def tree_cpu_seconds(pid: int) -> float:
    total = 0.0
    for member in process_tree(pid):
        fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def tree_rss_mib(pid: int) -> float:
    return sum(status_kib(member, "VmRSS") for member in process_tree(pid)) / 1024


def measure(args: argparse.Namespace, directory: Path) -> list[Row]:
    wrk = ensure_wrk()
    bodies = corpus.write(directory / "corpus")
    tls = make_tls(directory)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
    env["KUBECONFIG"] = str(directory / "no-kubeconfig")
    rows = []
    for label, workers, server_cpus, wrk_cpus in LAYOUTS:
        port = free_port()
        argv = [sys.executable, "-m", "webhook", "serve", "--host", HOST, f"--port={port}"]
        argv += [f"--metrics-port={free_port()}", "--drain-seconds=0", f"--workers={workers}"]
        argv += [f"--tls-cert={tls.cert}", f"--tls-key={tls.key}"]
        server = Server(
            label,
            argv,
            port=port,
            cpu=server_cpus,
            tls=tls,
            log_path=directory / f"workers-{workers}-{server_cpus}.log",
            cwd=REPO_ROOT,
            env=env,
        )
        server.start()
        try:
            server.wait_ready()
            time.sleep(1)  # every worker up, not only the first to answer /readyz
            for size in ("M", "L"):
                url = f"https://{HOST}:{port}/mutate"
                run_wrk(wrk, url, bodies[size], CONNECTIONS, args.warmup, wrk_cpus)
                cpu_before, started = tree_cpu_seconds(server.pid), time.perf_counter()
                result = run_wrk(wrk, url, bodies[size], CONNECTIONS, args.seconds, wrk_cpus)
                seconds = time.perf_counter() - started
                server.check_alive()
                if result.bad or result.error_count or not result.checked:
                    raise BenchError(f"{label} {size}: {result.bad} wrong, {result.errors}")
                rows.append(
                    Row(
                        label,
                        size,
                        result.rps,
                        result.latency_us["p99"] / 1000,
                        tree_cpu_seconds(server.pid) - cpu_before,
                        seconds,
                        tree_rss_mib(server.pid),
                    )
                )
                print(f"bench workers: {label} {size}: {result.rps:,.0f}/s", file=sys.stderr)
        finally:
            server.stop()
    return rows


def render(rows: list[Row]) -> str:
    lines = [
        f"{CONNECTIONS} connections, wrk -t1; {os.cpu_count()} CPUs shared by the server "
        "processes and wrk",
        "",
        "| layout | review | reviews/s | vs 1 worker, pinned | p99 | server CPU used | "
        "RSS, all processes |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    pinned = {row.size: row.rps for row in rows if row.layout == LAYOUTS[0][0]}
    for row in rows:
        lines.append(
            f"| {row.layout} | {row.size} | {row.rps:,.0f} | {row.rps / pinned[row.size]:.2f}x "
            f"| {row.p99_ms:.1f} ms | {row.server_cpu_seconds / row.seconds:.2f} CPUs "
            f"| {row.rss_mib:.0f} MiB |"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if (os.cpu_count() or 1) < 2:
        print("bench workers: needs 2 CPUs", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as directory:
        try:
            rows = measure(args, Path(directory))
        except BenchError as exc:
            print(f"bench workers: cannot benchmark: {exc}", file=sys.stderr)
            return 2
    print(render(rows))
    return 0
