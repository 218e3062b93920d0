"""`lifecycle-webhook certs bootstrap` (the chart's `certs.source: self`) against the real API
server: it creates the Secret, patches the caBundle of the chart's MutatingWebhookConfiguration
and renews with an overlap, so a client that trusts the published bundle never sees a
certificate it cannot verify.

The API server itself cannot call a webhook behind a `service:` reference here (no cluster
network: Endpoints and EndpointSlices may not point at 127.0.0.1), so the last hop is checked
the way the API server does it: a TLS handshake with the real server, which serves the files
the bootstrap wrote, verified against the caBundle read back from the API server for the name
`<service>.<namespace>.svc`.
"""

from __future__ import annotations

import base64
import datetime as dt
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from webhook import certs_policy
from webhook.certs import KeyPair, generate_ca, generate_serving, service_dns_names

from ..tools import REPO
from .cluster import served_certificate
from .kube import ApiError, Obj
from .pki import certificates_in_bundle, serial_number, serial_number_der
from .procs import wait_until
from .server import RELEASE_NAMESPACE, WebhookServer
from .session import E2E
from .webhooks import mutating_configuration, render_chart

pytestmark = pytest.mark.e2e

RELEASE = "boot"
SERVICE = f"{RELEASE}-lifecycle-webhook"
SECRET = f"{RELEASE}-lifecycle-webhook-certs"
SERVER_NAME = f"{SERVICE}.{RELEASE_NAMESPACE}.svc"
RELOAD_TIMEOUT_SECONDS = 20


@pytest.fixture
def chart_configuration(e2e: E2E, tmp_path: Path) -> Iterator[Obj]:
    """The chart's own configuration (service clientConfig, no caBundle: certs.source=self),
    under another release name so the session's registration is untouched. It is deleted
    again before another test creates pods."""
    documents = render_chart(e2e.tools.helm, tmp_path, {"certs.source": "self"}, release=RELEASE)
    configuration = mutating_configuration(documents)
    for hook in configuration["webhooks"]:
        assert "service" in hook["clientConfig"]
        assert not hook["clientConfig"].get("caBundle")
    e2e.kube.apply_mutating_webhook_configuration(configuration)
    try:
        yield configuration
    finally:
        e2e.kube.delete_mutating_webhook_configuration(configuration["metadata"]["name"])


def bootstrap(e2e: E2E, out: Path, name: str) -> None:
    argv = [
        sys.executable,
        "-m",
        "webhook",
        "certs",
        "bootstrap",
        f"--secret={SECRET}",
        f"--namespace={RELEASE_NAMESPACE}",
        f"--service={SERVICE}",
        f"--webhook-config={name}",
        f"--out={out}",
        f"--kubeconfig={e2e.plane.kubeconfig}",
    ]
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=120, cwd=REPO, check=False
    )
    assert result.returncode == 0, f"{' '.join(argv)}\n{result.stdout}\n{result.stderr}"


def read_secret(e2e: E2E) -> Obj:
    return e2e.kube.request("GET", f"/api/v1/namespaces/{RELEASE_NAMESPACE}/secrets/{SECRET}").body


def secret_file(secret: Obj, key: str) -> bytes:
    return base64.b64decode(secret["data"][key])


def ca_bundles(e2e: E2E, name: str) -> set[bytes]:
    configuration = e2e.kube.get_mutating_webhook_configuration(name)
    return {
        base64.b64decode(hook["clientConfig"]["caBundle"]) for hook in configuration["webhooks"]
    }


def serials(bundle: bytes) -> set[int]:
    return {int(cert.serial_number) for cert in certificates_in_bundle(bundle)}


def aged_secret(
    e2e: E2E, signer: KeyPair, bundle: list[bytes], next_signer: KeyPair | None
) -> None:
    """Replaces the Secret's certificates, as if time had passed: what the bootstrap finds on
    its next run (its decisions depend only on the certificates and the clock)."""
    serving = generate_serving(signer, service_dns_names(SERVICE, RELEASE_NAMESPACE), days=1)
    state = certs_policy.CertState(signer, serving, tuple(bundle), next_signer)
    secret = read_secret(e2e)
    secret["data"] = certs_policy.secret_data(state)
    e2e.kube.request("PUT", f"/api/v1/namespaces/{RELEASE_NAMESPACE}/secrets/{SECRET}", secret)


def aged_ca(name: str, lifetime: dt.timedelta, elapsed: float) -> KeyPair:
    """A CA issued `elapsed` of its `lifetime` ago (whole days)."""
    assert lifetime == dt.timedelta(days=lifetime.days)
    start = dt.datetime.now(dt.UTC) - lifetime * elapsed
    return generate_ca(name, days=lifetime.days, now=start)


def test_bootstrap_creates_patches_and_renews_with_overlap(
    e2e: E2E, chart_configuration: Obj, tmp_path: Path
) -> None:
    name = chart_configuration["metadata"]["name"]
    out = tmp_path / "certs"
    with pytest.raises(ApiError):
        read_secret(e2e)

    # 1. first run: the Secret is created, owned by the configuration, and caBundle patched
    bootstrap(e2e, out, name)
    secret = read_secret(e2e)
    assert secret["type"] == "kubernetes.io/tls"
    uid = e2e.kube.get_mutating_webhook_configuration(name)["metadata"]["uid"]
    assert [ref["uid"] for ref in secret["metadata"]["ownerReferences"]] == [uid]
    bundle = secret_file(secret, "ca.crt")
    assert ca_bundles(e2e, name) == {bundle}
    assert len(certificates_in_bundle(bundle)) == 1
    assert (out / "tls.crt").read_bytes() == secret_file(secret, "tls.crt")

    server = WebhookServer(
        tmp_path,
        e2e.plane.ca,
        e2e.plane.kubeconfig,
        name="boot-webhook",
        serving=(out / "tls.crt", out / "tls.key"),
    )
    try:
        server.start()
        served = serial_number_der(served_certificate(server.port, bundle, SERVER_NAME))
        assert served == serial_number(secret_file(secret, "tls.crt"))

        # 2. a second run changes nothing
        version = secret["metadata"]["resourceVersion"]
        bootstrap(e2e, out, name)
        assert read_secret(e2e)["metadata"]["resourceVersion"] == version

        # 3. the signing CA is past 2/3 of its life: the next CA is published beside it,
        #    the serving certificate (still from the old CA) is kept
        old = aged_ca("e2e old CA", dt.timedelta(days=30), elapsed=0.75)
        aged_secret(e2e, old, [old.cert_pem], None)
        serving_before = secret_file(read_secret(e2e), "tls.crt")
        bootstrap(e2e, out, name)
        secret = read_secret(e2e)
        published = secret_file(secret, "ca.crt")
        assert secret_file(secret, "tls.crt") == serving_before
        assert serial_number(old.cert_pem) in serials(published)
        assert len(serials(published)) == 2
        assert ca_bundles(e2e, name) == {published}

        # 4. past 5/6, next CA published over an hour ago: it signs a new serving certificate;
        #    the old CA stays trusted, and the bundle published before already trusts the new
        #    certificate (the overlap)
        old = aged_ca("e2e old CA", dt.timedelta(days=30), elapsed=0.9)
        upcoming = aged_ca("e2e next CA", dt.timedelta(days=730), elapsed=2 / (730 * 24))
        before_promotion = old.cert_pem + upcoming.cert_pem
        aged_secret(e2e, old, [old.cert_pem, upcoming.cert_pem], upcoming)
        bootstrap(e2e, out, name)
        secret = read_secret(e2e)
        promoted = secret_file(secret, "ca.crt")
        assert serials(promoted) == {serial_number(old.cert_pem), serial_number(upcoming.cert_pem)}
        assert ca_bundles(e2e, name) == {promoted}
        new_serving = secret_file(secret, "tls.crt")
        assert certs_policy.issued_by(
            certificates_in_bundle(new_serving)[0], certificates_in_bundle(upcoming.cert_pem)[0]
        )

        # the running server picks the renewed files up; the pre-promotion bundle verifies it
        wait_until(
            lambda: (
                serial_number_der(served_certificate(server.port, before_promotion, SERVER_NAME))
                == serial_number(new_serving)
            ),
            RELOAD_TIMEOUT_SECONDS,
            "the server to serve the promoted certificate",
            on_timeout=server.process.tail if server.process else None,
        )
    finally:
        server.stop()
