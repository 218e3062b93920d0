"""Test-only mutating webhooks that the API server calls after lifecycle-webhook: one adds a
container, the way a service-mesh injector does; one caps the grace period, the way Kyverno's
`mutate-large-termination-gps` policy does. Both are registered under names that sort after
the chart's configuration, with `reinvocationPolicy: Never` and `failurePolicy: Fail`."""

from __future__ import annotations

import base64
import json
import ssl
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from webhook.certs import KeyPair, generate_serving

from ..pki import as_bytes

ADDED_CONTAINER = "late-sidecar"
NAMESPACE_LABEL = "e2e.lifecycle-webhook.io/adder"
CONFIGURATION_NAME = "zz-e2e-adder"
"""Sorts after the chart's configuration, so the API server calls this webhook second."""
CAP_LABEL = "e2e.lifecycle-webhook.io/cap"
CAPPER_CONFIGURATION_NAME = "zz-e2e-capper"

Patcher = Callable[[str, dict[str, Any]], list[dict[str, Any]]]
"""(request path, pod) -> JSON patch operations."""


def add_container(_path: str, pod: dict[str, Any]) -> list[dict[str, Any]]:
    names = [c["name"] for c in pod["spec"].get("containers", [])]
    if ADDED_CONTAINER in names:
        return []
    value = {"name": ADDED_CONTAINER, "image": "registry.invalid/mesh-proxy:1"}
    return [{"op": "add", "path": "/spec/containers/-", "value": value}]


def cap_grace(path: str, pod: dict[str, Any]) -> list[dict[str, Any]]:
    """`/cap/N`: a grace period above N becomes N (the API default 30 is always present)."""
    cap = int(path.split("?", 1)[0].rsplit("/", 1)[1])
    if pod["spec"]["terminationGracePeriodSeconds"] <= cap:
        return []
    return [{"op": "replace", "path": "/spec/terminationGracePeriodSeconds", "value": cap}]


class _Handler(BaseHTTPRequestHandler):
    server_version = "e2e-second-webhook"

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        review = json.loads(self.rfile.read(length))
        request = review["request"]
        patch = self.server.patcher(self.path, request["object"])  # type: ignore[attr-defined]
        response: dict[str, Any] = {"uid": request["uid"], "allowed": True}
        if patch:
            response["patchType"] = "JSONPatch"
            response["patch"] = base64.b64encode(json.dumps(patch).encode()).decode()
        self.server.calls += 1  # type: ignore[attr-defined]
        body = json.dumps(
            {"apiVersion": review["apiVersion"], "kind": "AdmissionReview", "response": response}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return


class SecondWebhook:
    """Serves `patcher` on 127.0.0.1 in a background thread until `close`."""

    def __init__(self, workdir: Path, ca: KeyPair, patcher: Patcher, name: str) -> None:
        pair = generate_serving(ca, ["localhost"], ["127.0.0.1"], 2)
        cert_path, key_path = workdir / f"{name}.crt", workdir / f"{name}.key"
        cert_path.write_bytes(as_bytes(pair.cert_pem))
        key_path.write_bytes(as_bytes(pair.key_pem))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(cert_path), str(key_path))
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.httpd.calls = 0  # type: ignore[attr-defined]
        self.httpd.patcher = patcher  # type: ignore[attr-defined]
        self.port = int(self.httpd.server_address[1])
        self.ca_pem = as_bytes(ca.cert_pem)
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, name=f"e2e-{name}", daemon=True
        )
        self.thread.start()

    @property
    def calls(self) -> int:
        return int(self.httpd.calls)  # type: ignore[attr-defined]

    def hook(self, name: str, path: str, namespace_selector: dict[str, Any]) -> dict[str, Any]:
        return {
            "name": name,
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "failurePolicy": "Fail",
            "timeoutSeconds": 5,
            "reinvocationPolicy": "Never",
            "clientConfig": {
                "url": f"https://127.0.0.1:{self.port}{path}",
                "caBundle": base64.b64encode(self.ca_pem).decode(),
            },
            "rules": [
                {
                    "apiGroups": [""],
                    "apiVersions": ["v1"],
                    "operations": ["CREATE"],
                    "resources": ["pods"],
                    "scope": "Namespaced",
                }
            ],
            "namespaceSelector": namespace_selector,
        }

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


class AdderWebhook(SecondWebhook):
    def __init__(self, workdir: Path, ca: KeyPair) -> None:
        super().__init__(workdir, ca, add_container, "adder")

    def configuration(self) -> dict[str, Any]:
        hook = self.hook(
            "adder.e2e.lifecycle-webhook.io", "/add", {"matchLabels": {NAMESPACE_LABEL: "on"}}
        )
        return _configuration(CONFIGURATION_NAME, [hook])


class CapperWebhook(SecondWebhook):
    """Caps the grace period at the value of the namespace's CAP_LABEL, one of `caps`."""

    def __init__(self, workdir: Path, ca: KeyPair, caps: tuple[int, ...]) -> None:
        super().__init__(workdir, ca, cap_grace, "capper")
        self.caps = caps

    def configuration(self) -> dict[str, Any]:
        hooks = [
            self.hook(
                f"cap-{cap}.e2e.lifecycle-webhook.io",
                f"/cap/{cap}",
                {"matchLabels": {CAP_LABEL: str(cap)}},
            )
            for cap in self.caps
        ]
        return _configuration(CAPPER_CONFIGURATION_NAME, hooks)


def _configuration(name: str, hooks: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": hooks,
    }
