"""`python -m bench [--quick] [--strict] ...` from the repository root, venv active;
`python -m bench reliability [--only slow|burst|soak]` for the reliability figures;
`python -m bench detection-watch [--pods N]` for the server's memory with N pods watched;
`python -m bench detection [--pods N]` for `lifecycle-webhook check` over 10,000 pods;
`python -m bench apiserver` for pod creates through a real kube-apiserver; `python -m bench
workers` for the throughput of --workers 1 and 2.

Exit 0 when the benchmark ran (targets missed or not), 1 with --strict when a target was
missed, 2 when the harness could not produce trustworthy numbers (a tool missing, a server
not starting, or a wrong answer from a server).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench import BenchError
from bench.report import missed, render
from bench.session import Options, dump_json, run


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark lifecycle-webhook against a trivial FastAPI webhook "
        "(SPEC section 7).",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 1 s warm-up and 3 s measure per run"
    )
    parser.add_argument(
        "--strict", action="store_true", help="exit 1 when a SPEC section 7 target is missed"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs per scenario and server; the table shows the median (default 1)",
    )
    parser.add_argument(
        "--starts", type=int, default=5, help="cold starts per server for the ready time (5)"
    )
    parser.add_argument("--server-cpu", type=int, default=0, help="CPU for the servers (0)")
    parser.add_argument("--client-cpu", type=int, default=1, help="CPU for wrk (1)")
    parser.add_argument("--baseline-only", action="store_true", help="measure the baseline alone")
    parser.add_argument(
        "--product-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for `python -m webhook serve` (repeatable), "
        "e.g. --product-arg=--log-level=warning",
    )
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="run servers and wrk under `nice -n N`; -10 (root) shields them from other "
        "processes on a shared machine (default 0)",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write results as JSON")
    parser.add_argument(
        "--keep", action="store_true", help="keep the work directory (corpus, certs, server logs)"
    )
    args = parser.parse_args(argv)
    if not 1 <= args.repeat <= 10:
        parser.error("--repeat wants 1 to 10")
    if not -20 <= args.nice <= 19:
        parser.error("--nice wants -20 to 19")
    if not 1 <= args.starts <= 20:
        parser.error("--starts wants 1 to 20")
    return args


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    if arguments[:1] == ["detection-watch"]:
        from bench.detection_watch import main as detection_watch

        return detection_watch(arguments[1:])
    if arguments[:1] == ["reliability"]:
        from bench.reliability import main as reliability

        return reliability(arguments[1:])
    if arguments[:1] == ["detection"]:
        from bench.detection import main as detection

        return detection(arguments[1:])
    if arguments[:1] == ["workers"]:
        from bench.workers import main as workers

        return workers(arguments[1:])
    if arguments[:1] == ["apiserver"]:
        from bench.apiserver import main as apiserver

        return apiserver(arguments[1:])
    args = parse_args(argv)
    options = Options(
        warmup_seconds=1 if args.quick else 2,
        measure_seconds=3 if args.quick else 8,
        repeat=args.repeat,
        starts=args.starts,
        server_cpu=args.server_cpu,
        client_cpu=args.client_cpu,
        baseline_only=args.baseline_only,
        product_args=tuple(args.product_arg),
        keep_dir=args.keep,
        nice=args.nice,
    )
    try:
        results = run(options)
    except BenchError as exc:
        print(f"bench: cannot benchmark: {exc}", file=sys.stderr)
        return 2
    print(render(results))
    if args.json:
        dump_json(results, args.json)
    failures = missed(results)
    if failures:
        print(f"\n{len(failures)} target(s) missed: " + "; ".join(r.what for r in failures))
    return 1 if args.strict and failures else 0


if __name__ == "__main__":
    sys.exit(main())
