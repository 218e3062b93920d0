"""Server processes under test: certificates, spawn pinned to a CPU, readiness, memory, CPU time.

Everything talks to 127.0.0.1 only. Clients verify the server certificate against the CA
generated here, so a server that serves the wrong certificate fails loudly.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bench import BenchError

HOST = "127.0.0.1"
READY_TIMEOUT_SECONDS = 20.0
STOP_TIMEOUT_SECONDS = 10.0
PROBE_PAUSE_SECONDS = 0.002
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Tls:
    ca: Path
    cert: Path
    key: Path

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))


def make_tls(directory: Path) -> Tls:
    """A throwaway CA and an ECDSA P-256 serving pair for 127.0.0.1, made by the product's code."""
    from webhook import certs

    ca = certs.generate_ca(common_name="bench CA", days=2)
    serving = certs.generate_serving(ca, ["localhost"], [HOST], days=1)
    ca_path = directory / "ca.crt"
    ca_path.write_bytes(ca.cert_pem)
    cert_path, key_path = certs.write_pair(directory, "serving", serving)
    return Tls(ca=ca_path, cert=Path(cert_path), key=Path(key_path))


def free_port() -> int:
    """A port nothing listens on right now (the tiny race with other users is acceptable here)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def nice_prefix(nice: int) -> list[str]:
    """`nice -n N` in front of a command, or nothing for the default priority."""
    return ["nice", "-n", str(nice)] if nice else []


def status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise BenchError(f"/proc/{pid}/status has no {field}")


def cpu_busy_seconds(cpu: int) -> float:
    """Non-idle time of one CPU since boot, from /proc/stat (user..steal, without iowait)."""
    with open("/proc/stat", encoding="ascii") as stat:
        for line in stat:
            if line.startswith(f"cpu{cpu} "):
                user, nice, system, _idle, _iowait, irq, softirq, steal = map(
                    int, line.split()[1:9]
                )
                return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS
    raise BenchError(f"/proc/stat has no cpu{cpu}")


class Server:
    """One server process pinned with `taskset -c CPU`; its output goes to `log_path`."""

    def __init__(
        self,
        label: str,
        argv: list[str],
        *,
        port: int,
        cpu: int | str,
        tls: Tls,
        log_path: Path,
        cwd: Path,
        env: dict[str, str],
        nice: int = 0,
    ) -> None:
        self.label = label
        self.nice = nice
        self.argv = argv
        self.port = port
        self.cpu = cpu
        self.tls = tls
        self.log_path = log_path
        self.cwd = cwd
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None
        self.spawned_at = 0.0

    @property
    def pid(self) -> int:
        if self.process is None:
            raise BenchError(f"{self.label} is not running")
        return self.process.pid

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.spawned_at = time.perf_counter()
            self.process = subprocess.Popen(
                [*nice_prefix(self.nice), "taskset", "-c", str(self.cpu), *self.argv],
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )

    def _log_tail(self, limit: int = 2000) -> str:
        try:
            return self.log_path.read_bytes()[-limit:].decode("utf-8", "replace")
        except OSError:
            return ""

    def wait_ready(self) -> float:
        """Poll GET /readyz over verified HTTPS; seconds from spawn to the first 200."""
        context = self.tls.client_context()
        deadline = self.spawned_at + READY_TIMEOUT_SECONDS
        while time.perf_counter() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise BenchError(
                    f"{self.label} exited before it was ready; its log ends with:\n"
                    + self._log_tail()
                )
            try:
                status, _ = request(self.port, context, "GET", "/readyz", timeout=1.0)
            except ssl.SSLCertVerificationError as exc:
                raise BenchError(f"{self.label}: wrong certificate on /readyz: {exc}") from exc
            except (OSError, http.client.HTTPException):
                status = 0  # not listening yet, or still setting up TLS
            if status == 200:
                return time.perf_counter() - self.spawned_at
            time.sleep(PROBE_PAUSE_SECONDS)
        raise BenchError(
            f"{self.label} not ready after {READY_TIMEOUT_SECONDS:.0f} s; log:\n" + self._log_tail()
        )

    def rss_kib(self) -> int:
        return status_kib(self.pid, "VmRSS")

    def peak_rss_kib(self) -> int:
        return status_kib(self.pid, "VmHWM")

    def cpu_seconds(self) -> float:
        """user + system time of all the process's threads."""
        with open(f"/proc/{self.pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def check_alive(self) -> None:
        if self.process is None or self.process.poll() is not None:
            raise BenchError(f"{self.label} died; its log ends with:\n" + self._log_tail())

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_SECONDS)


def request(
    port: int,
    context: ssl.SSLContext,
    method: str,
    path: str,
    body: bytes | None = None,
    timeout: float = 5.0,
) -> tuple[int, bytes]:
    """One HTTPS request on a fresh connection; (status, body)."""
    connection = http.client.HTTPSConnection(HOST, port, context=context, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def plain_get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """GET over plain HTTP (the product's metrics port)."""
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()
