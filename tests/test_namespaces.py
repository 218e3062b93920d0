"""The namespace cache against a scriptable fake API server (TLS on 127.0.0.1).

The real API server is exercised by tests/e2e; this fake exists to misbehave on cue: answer
slowly, never, out of order, or end watches at once.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from webhook import app, certs, namespaces
from webhook.logs import JsonLog
from webhook.namespaces import ApiServer, KubeNamespaces

P = "lifecycle-webhook.io/"
Handler = Callable[[str, ssl.SSLSocket], None]


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
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = tls.recv(4096)
                if not chunk:
                    return
                request += chunk
            path = request.split(b" ")[1].decode()
            self.paths.append(path)
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


def start_stream(tls: ssl.SSLSocket) -> None:
    tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
    tls.sendall(b"Transfer-Encoding: chunked\r\n\r\n")


def send_event(tls: ssl.SSLSocket, kind: str, obj: Any) -> None:
    line = json.dumps({"type": kind, "object": obj}).encode() + b"\n"
    tls.sendall(b"%x\r\n" % len(line) + line + b"\r\n")


def namespace(name: str, version: int, **annotations: str) -> dict[str, Any]:
    meta = {"name": name, "resourceVersion": str(version)}
    return {"metadata": meta | {"annotations": {P + k: v for k, v in annotations.items()}}}


def is_list(path: str) -> bool:
    return path.startswith("/api/v1/namespaces?") and "watch=1" not in path


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[Callable[[Handler], FakeApiServer]]:
    servers: list[FakeApiServer] = []

    def start(handler: Handler) -> FakeApiServer:
        servers.append(FakeApiServer(handler, tmp_path))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def wait_for(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_a_trickling_live_read_cannot_hold_a_review_past_the_deadline(fake: Any) -> None:
    def handler(path: str, tls: ssl.SSLSocket) -> None:
        if is_list(path):
            respond(tls, 200, {"items": [], "metadata": {"resourceVersion": "5"}})
        elif "watch=1" in path:
            start_stream(tls)
            time.sleep(30)
        else:  # each piece inside the per-read timeout, the whole far beyond it
            body = json.dumps(namespace("new", 6)).encode()
            message = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
            for i in range(0, len(message), 8):
                tls.sendall(message[i : i + 8])
                time.sleep(0.4)

    server = fake(handler)
    source = KubeNamespaces(server.api(), JsonLog("error")).start()
    wait_for(lambda: source._reached)
    started = time.monotonic()
    result = anyio.run(app._read_namespace, source, "new")
    took = time.monotonic() - started
    assert result is None, "past the deadline the namespace counts as unreadable (a warning)"
    assert took < app.NAMESPACE_READ_DEADLINE + 0.5


def test_concurrent_misses_make_one_read_and_a_failure_is_remembered(fake: Any) -> None:
    def handler(path: str, tls: ssl.SSLSocket) -> None:
        if is_list(path):
            respond(tls, 200, {"items": [], "metadata": {"resourceVersion": "5"}})
        elif "watch=1" in path:
            start_stream(tls)
            time.sleep(30)
        else:
            time.sleep(30)  # never answers

    server = fake(handler)
    source = KubeNamespaces(server.api(), JsonLog("error"), lookup_timeout=0.3).start()
    wait_for(lambda: source._reached)
    results: list[Any] = []
    threads = [
        threading.Thread(target=lambda: results.append(source.annotations("slow")))
        for _ in range(20)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert results == [None] * 20
    reads = [p for p in server.paths if p.endswith("/namespaces/slow")]
    assert len(reads) == 1, reads
    assert source.annotations("slow") is None
    assert len([p for p in server.paths if p.endswith("/namespaces/slow")]) == 1


def test_watch_data_wins_over_an_older_live_read(fake: Any) -> None:
    go = threading.Event()

    def handler(path: str, tls: ssl.SSLSocket) -> None:
        if is_list(path):
            respond(tls, 200, {"items": [], "metadata": {"resourceVersion": "5"}})
        elif "watch=1" in path:
            start_stream(tls)
            go.wait(5)
            send_event(tls, "ADDED", namespace("new", 6, **{"prestop-seconds": "1"}))
            send_event(tls, "MODIFIED", namespace("new", 7, **{"prestop-seconds": "2"}))
            send_event(tls, "ADDED", namespace("gone", 8))
            send_event(tls, "DELETED", namespace("gone", 9))
            time.sleep(30)
        else:  # the live read answers with the older version, after the watch moved on
            go.set()
            time.sleep(0.3)
            respond(tls, 200, namespace("new", 6, **{"prestop-seconds": "1"}))

    server = fake(handler)
    source = KubeNamespaces(server.api(), JsonLog("error"), lookup_timeout=2).start()
    wait_for(lambda: source._reached)
    assert source.annotations("new") == {P + "prestop-seconds": "1"}
    wait_for(lambda: source.peek("new") == {P + "prestop-seconds": "2"})
    wait_for(lambda: source.peek("gone") == namespaces.NEEDS_LOOKUP)


def test_watches_that_end_at_once_are_retried_with_backoff(fake: Any) -> None:
    def handler(path: str, tls: ssl.SSLSocket) -> None:
        if is_list(path):
            respond(tls, 200, {"items": [], "metadata": {"resourceVersion": "5"}})
        else:
            tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    server = fake(handler)
    KubeNamespaces(server.api(), JsonLog("error")).start()
    time.sleep(2)
    watches = [p for p in server.paths if "watch=1" in p]
    assert 1 <= len(watches) <= 5, len(watches)


def test_a_silent_watch_is_reopened_from_its_resource_version(
    fake: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(namespaces, "WATCH_READ_TIMEOUT", 0.5)

    def handler(path: str, tls: ssl.SSLSocket) -> None:
        if is_list(path):
            respond(tls, 200, {"items": [], "metadata": {"resourceVersion": "5"}})
        else:
            start_stream(tls)
            send_event(tls, "BOOKMARK", {"metadata": {"resourceVersion": "42"}})
            time.sleep(30)  # then silence: a connection that died without closing

    server = fake(handler)
    KubeNamespaces(server.api(), JsonLog("error")).start()
    wait_for(lambda: sum("resourceVersion=42" in p for p in server.paths) >= 1, 3)
    assert sum(is_list(p) for p in server.paths) == 1, "a stall is not a reason to list again"


def test_a_cluster_that_refuses_warns_per_pod_one_that_is_absent_does_not(fake: Any) -> None:
    def forbidden(path: str, tls: ssl.SSLSocket) -> None:
        respond(tls, 403, {"kind": "Status", "code": 403, "reason": "Forbidden"})

    server = fake(forbidden)
    refusing = KubeNamespaces(server.api(), JsonLog("error"), lookup_timeout=0.3).start()
    wait_for(lambda: any(is_list(p) for p in server.paths))
    time.sleep(0.2)
    assert refusing.annotations("shop") is None, "RBAC missing: the core warns on every pod"

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        nothing_listens = probe.getsockname()[1]
    absent = ApiServer(f"https://127.0.0.1:{nothing_listens}", server.api().context, lambda: None)
    quiet = KubeNamespaces(absent, JsonLog("error"), lookup_timeout=0.3).start()
    wait_for(lambda: quiet._unreachable)
    assert quiet.annotations("shop") == {}, "no cluster: one log line, no per-pod warning"
