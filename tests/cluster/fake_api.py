"""A scriptable fake API server (TLS on 127.0.0.1) for the cluster package's tests.

The real API server is exercised by tests/e2e; this fake exists to misbehave on cue: answer
slowly, never, out of order, expire tokens, or end watches at once.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import parse_qs, urlsplit

import pytest

from webhook import certs
from webhook.cluster.api import ApiServer

Handler = Callable[[str, ssl.SSLSocket], None]
S = TypeVar("S", bound="Stoppable")


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def query(self) -> dict[str, str]:
        return {k: v[-1] for k, v in parse_qs(urlsplit(self.path).query).items()}


class FakeApiServer:
    """Accepts TLS connections; `handler(path, socket)` writes the whole HTTP response."""

    def __init__(self, handler: Handler, directory: Path) -> None:
        ca = certs.generate_ca(common_name="fake-api-ca", days=1)
        serving = certs.generate_serving(ca, ["localhost"], ["127.0.0.1"], days=1)
        cert, key = certs.write_pair(directory, "tls", serving)
        self.ca_file = directory / "ca.crt"
        self.ca_file.write_bytes(ca.cert_pem)
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.handler = handler
        self.paths: list[str] = []
        self.requests: list[Request] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.stopped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def api(self) -> ApiServer:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        return ApiServer(f"https://127.0.0.1:{self.port}", context, lambda: "Bearer t")

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            tls = self.context.wrap_socket(conn, server_side=True)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = tls.recv(4096)
                if not chunk:
                    return
                data += chunk
            head, body = data.split(b"\r\n\r\n", 1)
            lines = head.decode().split("\r\n")
            method, path = lines[0].split(" ")[:2]
            headers = {
                k.strip().lower(): v.strip() for k, v in (x.split(":", 1) for x in lines[1:])
            }
            while len(body) < int(headers.get("content-length", "0")):
                body += tls.recv(4096)
            self.paths.append(path)
            self.requests.append(Request(method, path, headers, body))
            self.handler(path, tls)
        except (OSError, ssl.SSLError):
            pass
        finally:
            conn.close()

    def stop(self) -> None:
        self.stopped.set()
        self.listener.close()


def respond(tls: ssl.SSLSocket, status: int, obj: Any) -> None:
    body = json.dumps(obj).encode()
    head = f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
    head += f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    tls.sendall(head.encode() + body)


def gone(tls: ssl.SSLSocket) -> None:
    """HTTP 410, as for a resourceVersion or continue token too old."""
    status = {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}
    respond(tls, 410, status)


def start_stream(tls: ssl.SSLSocket) -> None:
    tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
    tls.sendall(b"Transfer-Encoding: chunked\r\n\r\n")


def silence(tls: ssl.SSLSocket) -> None:
    """A watch that stays open and says nothing."""
    start_stream(tls)
    time.sleep(30)


def send_event(tls: ssl.SSLSocket, kind: str, obj: Any) -> None:
    line = json.dumps({"type": kind, "object": obj}).encode() + b"\n"
    tls.sendall(b"%x\r\n" % len(line) + line + b"\r\n")


def end_stream(tls: ssl.SSLSocket) -> None:
    tls.sendall(b"0\r\n\r\n")


def is_watch(path: str) -> bool:
    return "watch=1" in path


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[Callable[[Handler], FakeApiServer]]:
    servers: list[FakeApiServer] = []

    def start(handler: Handler) -> FakeApiServer:
        servers.append(FakeApiServer(handler, tmp_path))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


class Stoppable(Protocol):
    def stop(self) -> object: ...


@pytest.fixture
def stopped_after() -> Iterator[Callable[[S], S]]:
    """`stopped_after(cache)` returns the cache and stops it when the test ends, so no watch
    thread outlives its test (and logs about the fake server it lost)."""
    started: list[Stoppable] = []

    def register(thing: S) -> S:
        started.append(thing)
        return thing

    yield register
    for thing in started:
        thing.stop()


def wait_for(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)
