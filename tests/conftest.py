"""Fixtures shared by the server-process tests (test_server_https, test_slow_clients, ...)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .test_server_https import ServerProcess


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start a server: start(args, ca_file=...); each is stopped (or killed) at teardown."""
    from .test_server_https import ServerProcess

    started: list[ServerProcess] = []

    def _start(
        args: list[str], ca_file: Path | None, env: dict[str, str] | None = None
    ) -> ServerProcess:
        server = ServerProcess(tmp_path / f"server-{len(started)}", args, ca_file, env)
        started.append(server)
        return server

    yield _start
    for server in started:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait(10)
