"""ApiServer's writes and errors, as the later features use them (Events, Leases, restarts)."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

from webhook.cluster.api import ApiError

from .fake_api import respond


def test_writes_send_json_with_the_content_type_of_their_kind(fake: Any) -> None:
    def handler(path: str, tls: ssl.SSLSocket) -> None:
        if path.endswith("/empty"):
            tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        else:
            respond(tls, 201, {"kind": "Lease", "metadata": {"resourceVersion": "7"}})

    server = fake(handler)
    api = server.api()
    lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "lw"}}
    leases = "/apis/coordination.k8s.io/v1/namespaces/lw/leases"
    assert api.create(leases, lease) == {"kind": "Lease", "metadata": {"resourceVersion": "7"}}
    api.replace(f"{leases}/lw", lease)
    restart = {"spec": {"template": {"metadata": {"annotations": {"r": "now"}}}}}
    api.patch("/apis/apps/v1/namespaces/shop/deployments/web", restart)
    api.patch("/api/v1/namespaces/shop", {"metadata": {"labels": {"a": None}}}, "merge")
    api.patch("/api/v1/namespaces/shop", [{"op": "remove", "path": "/x"}], "json")
    assert api.get("/empty", 2) is None

    sent = [(r.method, r.path, r.headers.get("content-type"), r.body) for r in server.requests]
    assert sent[:5] == [
        ("POST", leases, "application/json", json.dumps(lease, separators=(",", ":")).encode()),
        ("PUT", f"{leases}/lw", "application/json", sent[1][3]),
        (
            "PATCH",
            "/apis/apps/v1/namespaces/shop/deployments/web",
            "application/strategic-merge-patch+json",
            b'{"spec":{"template":{"metadata":{"annotations":{"r":"now"}}}}}',
        ),
        ("PATCH", "/api/v1/namespaces/shop", "application/merge-patch+json", sent[3][3]),
        ("PATCH", "/api/v1/namespaces/shop", "application/json-patch+json", sent[4][3]),
    ]
    assert json.loads(sent[3][3]) == {"metadata": {"labels": {"a": None}}}
    assert all(r.headers["authorization"] == "Bearer t" for r in server.requests)
    assert server.requests[-1].headers.get("content-type") is None, "a GET has no body"
    assert api.reached


def test_an_error_status_says_what_the_server_said(fake: Any) -> None:
    def handler(path: str, tls: ssl.SSLSocket) -> None:
        if "conflict" in path:
            status = {"kind": "Status", "code": 409, "reason": "Conflict", "message": "modified"}
            respond(tls, 409, status)
        else:
            tls.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 7\r\n\r\nno json")

    api = fake(handler).api()
    with pytest.raises(ApiError) as conflict:
        api.replace("/apis/coordination.k8s.io/v1/namespaces/lw/leases/conflict", {})
    assert (conflict.value.status, conflict.value.reason) == (409, "Conflict")
    assert conflict.value.details == "modified"
    assert "PUT /apis/coordination.k8s.io/v1/namespaces/lw/leases/conflict: HTTP 409" in str(
        conflict.value
    )
    with pytest.raises(ApiError) as proxy:
        api.get("/version", 2)
    assert (proxy.value.status, proxy.value.reason) == (502, "")
    assert "no json" in str(proxy.value)
    assert not api.reached


def test_a_call_closed_from_another_thread_ends_at_once(fake: Any) -> None:
    answered = threading.Event()

    def handler(path: str, tls: ssl.SSLSocket) -> None:
        answered.wait(30)  # never answers in time

    api = fake(handler).api()
    call = api.call("GET", "/api/v1/pods", timeout=60)
    threading.Timer(0.3, call.close).start()
    started = time.monotonic()
    with pytest.raises(ApiError):
        call.send()
    assert time.monotonic() - started < 30, "not the read timeout"
    answered.set()


def test_the_package_imports_neither_the_server_stack_nor_kubernetes() -> None:
    """The request path pays neither fastapi's nor the kubernetes client's import (~60 MiB)."""
    probe = (
        "import sys\n"
        "import webhook.cluster.api, webhook.cluster.watch\n"
        "import webhook.cluster.namespaces, webhook.cluster.services\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & "
        "{'fastapi', 'uvicorn', 'starlette', 'kubernetes'})\n"
        "print('HEAVY', heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().splitlines()[-1] == "HEAVY []"
