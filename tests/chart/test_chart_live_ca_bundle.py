"""certs.source=self: the chart carries the live caBundle over to every webhook entry.

The bootstrap patches caBundle into the live MutatingWebhookConfiguration. Helm's three-way
merge keeps that field on entries whose name stays, but switching `mode` renames the entries,
so they would arrive without a caBundle (every call failing TLS) until the bootstrap's next pass.
The template `lookup`s the live configuration; `helm template` never contacts a cluster, so
these tests run `helm template --dry-run=server` against a fake API server that answers exactly
the two requests a lookup makes (API discovery of the group, then GET of the object).
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from webhook.certs import generate_ca

from .conftest import CHART, NAMESPACE, OLDEST_KUBE, RELEASE, Obj, helm_args, only, run_helm

pytestmark = pytest.mark.chart

CONFIG_NAME = f"{RELEASE}-lifecycle-webhook"
GROUP_PATH = "/apis/admissionregistration.k8s.io/v1"
OBJECT_PATH = f"{GROUP_PATH}/mutatingwebhookconfigurations/{CONFIG_NAME}"
LIVE_BUNDLE = base64.b64encode(
    generate_ca("live CA 1", days=30).cert_pem + generate_ca("live CA 2", days=30).cert_pem
).decode()
DISCOVERY = {
    "kind": "APIResourceList",
    "apiVersion": "v1",
    "groupVersion": "admissionregistration.k8s.io/v1",
    "resources": [
        {
            "name": "mutatingwebhookconfigurations",
            "singularName": "mutatingwebhookconfiguration",
            "namespaced": False,
            "kind": "MutatingWebhookConfiguration",
            "verbs": ["get", "patch"],
        }
    ],
}


class FakeApiServer:
    """Serves one MutatingWebhookConfiguration (or none: 404) and records every request."""

    def __init__(self) -> None:
        self.configuration: Obj | None = None
        self.requests: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                fake.requests.append(path)
                if path == GROUP_PATH:
                    self.answer(200, DISCOVERY)
                elif path == OBJECT_PATH and fake.configuration is not None:
                    self.answer(200, fake.configuration)
                else:
                    status = {"kind": "Status", "apiVersion": "v1", "status": "Failure"}
                    self.answer(404, {**status, "reason": "NotFound", "code": 404})

            def answer(self, code: int, body: Obj) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def kubeconfig(self, directory: Path) -> Path:
        path = directory / "kubeconfig"
        server = f"http://127.0.0.1:{self.server.server_address[1]}"
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": server}}],
            "users": [{"name": "fake", "user": {"token": "fake"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
            "current-context": "fake",
        }
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path


@pytest.fixture
def api(tmp_path: Path) -> Iterator[FakeApiServer]:
    fake = FakeApiServer()
    fake.thread.start()
    try:
        yield fake
    finally:
        fake.server.shutdown()
        fake.server.server_close()


def live(*bundles: str | None) -> Obj:
    """A live configuration as the other mode left it, with the bootstrap's caBundle(s)."""
    webhooks = []
    for index, bundle in enumerate(bundles):
        client: Obj = {"service": {"name": CONFIG_NAME, "namespace": NAMESPACE, "port": 443}}
        if bundle is not None:
            client["caBundle"] = bundle
        webhooks.append({"name": f"old-{index}.pods.lifecycle-webhook.io", "clientConfig": client})
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": CONFIG_NAME, "uid": "1111", "resourceVersion": "7"},
        "webhooks": webhooks,
    }


def render_against(
    helm: Path, helm_env: dict[str, str], api: FakeApiServer, tmp_path: Path, values: Obj
) -> Obj:
    env = {**helm_env, "KUBECONFIG": str(api.kubeconfig(tmp_path)), "NO_PROXY": "127.0.0.1"}
    for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        env.pop(proxy, None)
    result = run_helm(
        helm,
        env,
        "template",
        RELEASE,
        str(CHART),
        "--namespace",
        NAMESPACE,
        "--kube-version",
        OLDEST_KUBE,
        "--dry-run=server",
        *helm_args(values),
    )
    assert result.returncode == 0, result.stderr
    documents = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    return only(documents, "MutatingWebhookConfiguration")


def bundles(configuration: Obj) -> list[str | None]:
    return [hook["clientConfig"].get("caBundle") for hook in configuration["webhooks"]]


@pytest.mark.parametrize("mode", ["namespace", "cluster"])
def test_renamed_entries_keep_the_live_ca_bundle(
    helm: Path, helm_env: dict[str, str], api: FakeApiServer, tmp_path: Path, mode: str
) -> None:
    """The live entries carry the other mode's names; the first non-empty caBundle goes into
    every rendered entry."""
    api.configuration = live(None, LIVE_BUNDLE, "b3RoZXI=")
    configuration = render_against(
        helm, helm_env, api, tmp_path, {"mode": mode, "certs.source": "self"}
    )
    assert bundles(configuration) == [LIVE_BUNDLE] * (2 if mode == "namespace" else 1)
    assert OBJECT_PATH in api.requests


@pytest.mark.parametrize("state", ["missing", "no caBundle yet", "empty caBundle", "no webhooks"])
def test_nothing_to_carry_over_renders_no_ca_bundle(
    helm: Path, helm_env: dict[str, str], api: FakeApiServer, tmp_path: Path, state: str
) -> None:
    """A first install (or a bootstrap that has not patched yet): the bootstrap fills it in."""
    api.configuration = {
        "missing": None,
        "no caBundle yet": live(None, None),
        "empty caBundle": live(""),
        "no webhooks": {**live(), "webhooks": None},
    }[state]
    configuration = render_against(helm, helm_env, api, tmp_path, {"certs.source": "self"})
    assert bundles(configuration) == [None, None]
    assert OBJECT_PATH in api.requests  # it did look


@pytest.mark.parametrize("source", ["cert-manager", "provided"])
def test_other_sources_do_not_look_at_the_live_configuration(
    helm: Path, helm_env: dict[str, str], api: FakeApiServer, tmp_path: Path, source: str
) -> None:
    api.configuration = live(LIVE_BUNDLE)
    values: Obj = {"certs.source": source}
    given = base64.b64encode(generate_ca("provided CA", days=30).cert_pem).decode()
    if source == "provided":
        values |= {"certs.provided.secretName": "tls", "certs.provided.caBundle": given}
    configuration = render_against(helm, helm_env, api, tmp_path, values)
    assert bundles(configuration) == ([None, None] if source == "cert-manager" else [given] * 2)
    assert OBJECT_PATH not in api.requests
