"""A test-only second mutating webhook that adds a container, the way a service-mesh injector
does, and is registered so the API server calls it after lifecycle-webhook."""

from __future__ import annotations

import base64
import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from webhook.certs import KeyPair, generate_serving

from ..pki import as_bytes

ADDED_CONTAINER = "late-sidecar"
NAMESPACE_LABEL = "e2e.lifecycle-webhook.io/adder"
CONFIGURATION_NAME = "zz-e2e-adder"
"""Sorts after the chart's configuration, so the API server calls this webhook second."""


class _Handler(BaseHTTPRequestHandler):
    server_version = "e2e-adder"

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        review = json.loads(self.rfile.read(length))
        request = review["request"]
        pod = request["object"]
        names = [c["name"] for c in pod["spec"].get("containers", [])]
        response: dict[str, Any] = {"uid": request["uid"], "allowed": True}
        if ADDED_CONTAINER not in names:
            patch = [
                {
                    "op": "add",
                    "path": "/spec/containers/-",
                    "value": {"name": ADDED_CONTAINER, "image": "registry.invalid/mesh-proxy:1"},
                }
            ]
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


class AdderWebhook:
    """Serves on 127.0.0.1 in a background thread until `close`."""

    def __init__(self, workdir: Path, ca: KeyPair) -> None:
        pair = generate_serving(ca, ["localhost"], ["127.0.0.1"], 2)
        cert_path, key_path = workdir / "adder.crt", workdir / "adder.key"
        cert_path.write_bytes(as_bytes(pair.cert_pem))
        key_path.write_bytes(as_bytes(pair.key_pem))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(cert_path), str(key_path))
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.httpd.calls = 0  # type: ignore[attr-defined]
        self.port = int(self.httpd.server_address[1])
        self.ca_pem = as_bytes(ca.cert_pem)
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, name="e2e-adder", daemon=True
        )
        self.thread.start()

    @property
    def calls(self) -> int:
        return int(self.httpd.calls)  # type: ignore[attr-defined]

    def configuration(self) -> dict[str, Any]:
        return {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": CONFIGURATION_NAME},
            "webhooks": [
                {
                    "name": "adder.e2e.lifecycle-webhook.io",
                    "admissionReviewVersions": ["v1"],
                    "sideEffects": "None",
                    "failurePolicy": "Fail",
                    "timeoutSeconds": 5,
                    "reinvocationPolicy": "Never",
                    "clientConfig": {
                        "url": f"https://127.0.0.1:{self.port}/add",
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
                    "namespaceSelector": {"matchLabels": {NAMESPACE_LABEL: "on"}},
                }
            ],
        }

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)
