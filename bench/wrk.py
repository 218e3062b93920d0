"""The load generator: wrk with bench/post.lua, pinned to its own CPU, every run time-bounded."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import BenchError
from bench.procs import nice_prefix

LUA_SCRIPT = Path(__file__).with_name("post.lua")
REQUEST_TIMEOUT = "2s"
"""A request slower than this counts as a wrk timeout error (and so as a broken run)."""
APT_TIMEOUT_SECONDS = 600
RESULT_PREFIX = "BENCH_RESULT "


def _apt(*args: str) -> bool:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    print(f"bench: running apt-get {' '.join(args)}", file=sys.stderr, flush=True)
    try:
        done = subprocess.run(
            ["apt-get", *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=APT_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"bench: apt-get {args[0]} failed: {exc}", file=sys.stderr)
        return False
    if done.returncode != 0:
        tail = done.stderr.decode("utf-8", "replace")[-500:]
        print(f"bench: apt-get {args[0]} exited {done.returncode}: {tail}", file=sys.stderr)
    return done.returncode == 0


def ensure_wrk() -> str:
    """The wrk binary; installs the Debian package when missing (needs root)."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise BenchError("wrk is not installed; install it (Debian/Ubuntu: apt-get install wrk)")
    if not _apt("install", "-y", "--no-install-recommends", "wrk"):
        _apt("update")
        _apt("install", "-y", "--no-install-recommends", "wrk")
    found = shutil.which("wrk")
    if not found:
        raise BenchError("wrk is missing and `apt-get install -y wrk` did not install it")
    return found


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    errors: dict[str, int]
    latency_us: dict[str, float]
    checked: int
    bad: int
    first_bad: str

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


def _parse(stdout: str) -> WrkResult:
    for line in stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            data: dict[str, Any] = json.loads(line[len(RESULT_PREFIX) :])
            return WrkResult(
                requests=int(data["requests"]),
                seconds=int(data["duration_us"]) / 1e6,
                errors={k: int(v) for k, v in data["errors"].items()},
                latency_us={k: float(v) for k, v in data["latency_us"].items()},
                checked=int(data["checked"]),
                bad=int(data["bad"]),
                first_bad=str(data["first_bad"]),
            )
    raise BenchError("wrk printed no result line; its output:\n" + stdout[-2000:])


def run_wrk(
    wrk: str,
    url: str,
    body_file: Path,
    connections: int,
    seconds: int,
    cpu: int | str,
    nice: int = 0,
    script: Path = LUA_SCRIPT,
) -> WrkResult:
    """One closed-loop run: `connections` keep-alive connections, each one request at a time."""
    argv = [
        *nice_prefix(nice),
        "taskset",
        "-c",
        str(cpu),
        wrk,
        "-t1",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        REQUEST_TIMEOUT,
        "-s",
        str(script),
        url,
        "--",
        str(body_file),
    ]
    try:
        done = subprocess.run(
            argv, capture_output=True, timeout=seconds + 30, check=False, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"wrk did not finish within {seconds + 30} s") from exc
    stdout = done.stdout.decode("utf-8", "replace")
    if done.returncode != 0:
        stderr = done.stderr.decode("utf-8", "replace")
        raise BenchError(f"wrk exited {done.returncode}:\n{stdout[-1000:]}\n{stderr[-1000:]}")
    return _parse(stdout)
