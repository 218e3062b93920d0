"""Child processes of the e2e harness: started with their output in a log file, stopped by PID.

Every process gets its own session, so stopping it signals exactly the process group we
created (its id is the child's PID) and nothing found by name.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

PR_SET_PDEATHSIG = 1
_prctl = ctypes.CDLL(None).prctl if sys.platform == "linux" else None
"""Looked up here, not in the forked child, where loading a library is not safe."""


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGKILL it when pytest dies, even by SIGKILL, so a
    killed test run leaves no etcd or kube-apiserver behind (teardown never ran then)."""
    if _prctl is not None:
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def free_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago (the kernel picked it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    check: Callable[[], bool],
    timeout: float,
    what: str,
    interval: float = 0.1,
    on_timeout: Callable[[], str] | None = None,
) -> float:
    """Polls `check` until it returns True; returns the seconds it took, or raises TimeoutError."""
    start = time.monotonic()
    deadline = start + timeout
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return time.monotonic() - start
        except Exception as exc:  # the thing we wait for may fail until it is ready
            last_error = exc
        time.sleep(interval)
    detail = f"; last error: {last_error!r}" if last_error else ""
    extra = f"\n{on_timeout()}" if on_timeout else ""
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}{detail}{extra}")


def run_checked(
    argv: Sequence[str],
    timeout: float,
    check: bool = True,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """subprocess.run with text output; with `check`, a non-zero exit raises with its output."""
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, check=False, input=input, env=env
    )
    if check and result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
        )
    return result


class ManagedProcess:
    """One child process whose stdout and stderr go to `log_path`."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self._log = log_path.open("ab")
        self._log.write(f"$ {' '.join(self.argv)}\n".encode())
        self._log.flush()
        self.popen = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        self.pid = self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def check_alive(self) -> None:
        """Raises with the log tail when the process has exited (so waits fail fast)."""
        if not self.alive():
            raise RuntimeError(
                f"{self.name} (pid {self.pid}) exited with {self.popen.returncode}\n{self.tail()}"
            )

    def signal(self, sig: signal.Signals) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, sig)

    def stop(self, grace: float = 10.0) -> int | None:
        """SIGTERM to our process group, SIGKILL after `grace` seconds; returns the exit code."""
        if self.alive():
            self.signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.popen.wait(timeout=10)
        # children that outlived the leader share its group id, which is our child's PID
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        self._log.close()
        return self.popen.returncode

    def tail(self, max_bytes: int = 8000) -> str:
        try:
            data = self.log_path.read_bytes()
        except OSError as exc:
            return f"(cannot read {self.log_path}: {exc})"
        text = data[-max_bytes:].decode(errors="replace")
        cut = "…" if len(data) > max_bytes else ""
        return f"----- {self.name} log ({self.log_path}) -----\n{cut}{text}"
