"""The certificate bootstrap when things go wrong: a Secret holding what cryptography cannot
read, a Secret deleted while replicas still serve its certificates, and replicas racing each
other's caBundle patches. Pure logic (webhook.certs_policy) and whole passes
(webhook.bootstrap.reconcile_once) against an in-memory API server with resourceVersions."""

from __future__ import annotations

import base64
import copy
import datetime as dt
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtensionOID, NameOID

from webhook import bootstrap
from webhook import certs_policy as cp
from webhook.certs import KeyPair, generate_ca
from webhook.certs_policy import CertState
from webhook.logs import JsonLog

from .test_bootstrap_logic import DAY, NAMES, POLICY, T0, ClockIssuer, cert, fresh, step

pytestmark = pytest.mark.chart

NAMESPACE = "lifecycle-system"
SERVICE = "lcw-lifecycle-webhook"
SECRET = "lcw-lifecycle-webhook-tls"
CONFIG = "lcw-lifecycle-webhook"

# --- certificates and keys cryptography cannot use ----------------------------------------


def der(tag: int, content: bytes) -> bytes:
    size = len(content)
    if size < 0x80:
        return bytes([tag, size]) + content
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + content


P256_OID = der(0x06, bytes.fromhex("2A8648CE3D030107"))  # prime256v1
ECDSA_SHA256 = der(0x30, der(0x06, bytes.fromhex("2A8648CE3D040302")))


def secp112r1_key() -> bytes:
    """An EC private key on secp112r1 (RFC 5915 layout): OpenSSL knows the curve,
    cryptography refuses it (UnsupportedAlgorithm)."""
    curve = der(0xA0, der(0x06, bytes.fromhex("2B81040006")))
    body = der(0x02, b"\x01") + der(0x04, bytes(range(1, 15))) + curve
    encoded = base64.encodebytes(der(0x30, body))
    return b"-----BEGIN EC PRIVATE KEY-----\n" + encoded + b"-----END EC PRIVATE KEY-----\n"


def private_key(pair: KeyPair) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(pair.key_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def signed(tbs: bytes, signer: KeyPair) -> bytes:
    """PEM of the certificate with this (edited) TBSCertificate, signed again by `signer`."""
    signature = private_key(signer).sign(tbs, ec.ECDSA(hashes.SHA256()))
    whole = der(0x30, tbs + ECDSA_SHA256 + der(0x03, b"\x00" + signature))
    return x509.load_der_x509_certificate(whole).public_bytes(serialization.Encoding.PEM)


def with_curve(pem: bytes, curve_oid: str, signer: KeyPair) -> bytes:
    """The certificate with its public key declared on another curve (signed again)."""
    tbs = cert(pem).tbs_certificate_bytes
    assert tbs.count(P256_OID) == 1
    return signed(tbs.replace(P256_OID, der(0x06, bytes.fromhex(curve_oid))), signer)


def builder(subject: str, key: ec.EllipticCurvePrivateKey, now: dt.datetime) -> Any:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
    )


def leaf(
    signer: KeyPair, now: dt.datetime, extra: x509.ExtensionType | None = None
) -> tuple[KeyPair, Any]:
    """A serving pair for NAMES signed by `signer`, plus the builder used (for edits)."""
    key = ec.generate_private_key(ec.SECP256R1())
    made = (
        builder("leaf", key, now)
        .issuer_name(cert(signer.cert_pem).subject)
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in NAMES]), critical=False
        )
    )
    if extra is not None:
        made = made.add_extension(extra, critical=False)
    pem = made.sign(private_key(signer), hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return KeyPair(pem, key_pem), made


def broken_secret(breakage: str) -> tuple[CertState, ClockIssuer]:
    """A Secret as a pass finds it, one day after it was written, with one part broken."""
    state, issuer = fresh()
    now = T0 + DAY
    if breakage == "tls.key on secp112r1":
        return CertState(state.signer, KeyPair(state.serving.cert_pem, secp112r1_key()),
                         state.bundle), issuer  # fmt: skip
    if breakage == "ca-signer.key on secp112r1":
        return CertState(KeyPair(state.signer.cert_pem, secp112r1_key()), state.serving,
                         state.bundle), issuer  # fmt: skip
    if breakage == "ca-next.key on secp112r1":
        state, _ = step(state, T0 + dt.timedelta(days=500), issuer)
        assert state.next_signer is not None
        lost = KeyPair(state.next_signer.cert_pem, secp112r1_key())
        return CertState(state.signer, state.serving, state.bundle, lost), issuer
    if breakage.startswith("tls.crt key on curve "):
        curve = breakage.removeprefix("tls.crt key on curve ")
        bad = with_curve(state.serving.cert_pem, curve, state.signer)
        return CertState(state.signer, KeyPair(bad, state.serving.key_pem), state.bundle), issuer
    if breakage.startswith("ca-signer.crt key on curve "):
        curve = breakage.removeprefix("ca-signer.crt key on curve ")
        bad = with_curve(state.signer.cert_pem, curve, state.signer)
        return CertState(KeyPair(bad, state.signer.key_pem), state.serving,
                         (*state.bundle, bad)), issuer  # fmt: skip
    if breakage == "ca-signer.crt basicConstraints unparsable":
        key = private_key(state.signer)
        bad_ca = (
            builder("bad CA", key, now)
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bad CA")]))
            .add_extension(
                x509.UnrecognizedExtension(ExtensionOID.BASIC_CONSTRAINTS, b"\x30\x05\x01"),
                critical=True,
            )
            .sign(key, hashes.SHA256())
            .public_bytes(serialization.Encoding.PEM)
        )
        return CertState(KeyPair(bad_ca, state.signer.key_pem), state.serving,
                         (*state.bundle, bad_ca)), issuer  # fmt: skip
    if breakage == "tls.crt keyUsage unparsable":
        garbage = x509.UnrecognizedExtension(ExtensionOID.KEY_USAGE, b"\x03\x09\x00")
        pair, _ = leaf(state.signer, now, garbage)
        return CertState(state.signer, pair, state.bundle), issuer
    if breakage == "tls.crt subjectAltName twice":
        twin = x509.IssuerAlternativeName([x509.DNSName(n) for n in NAMES])
        pair, _ = leaf(state.signer, now, twin)
        tbs = cert(pair.cert_pem).tbs_certificate_bytes
        ian, san = der(0x06, bytes.fromhex("551D12")), der(0x06, bytes.fromhex("551D11"))
        assert tbs.count(ian) == 1
        twice = signed(tbs.replace(ian, san), state.signer)
        return CertState(state.signer, KeyPair(twice, pair.key_pem), state.bundle), issuer
    raise AssertionError(breakage)


SERVING_BREAKAGES = [
    "tls.key on secp112r1",
    "tls.crt key on curve 2A8648CE3D030101",  # prime192v1: the P-256 point is invalid there
    "tls.crt key on curve 2A8648CE3D030102",  # prime192v2: unsupported
    "tls.crt keyUsage unparsable",
    "tls.crt subjectAltName twice",
]
SIGNER_BREAKAGES = [
    "ca-signer.key on secp112r1",
    "ca-signer.crt key on curve 2A8648CE3D030101",
    "ca-signer.crt key on curve 2A8648CE3D030163",  # an OID that is no curve at all
    "ca-signer.crt basicConstraints unparsable",
]


@pytest.mark.parametrize("breakage", SERVING_BREAKAGES + SIGNER_BREAKAGES)
def test_a_secret_cryptography_cannot_read_is_replaced_not_a_crash(breakage: str) -> None:
    """Unsupported or unparsable keys and certificates are "unusable": the serving pair is
    renewed, the signing CA created anew. Before, `decide` raised and the init container
    crash-looped for good."""
    broken, issuer = broken_secret(breakage)
    now = T0 + DAY
    decision = cp.decide(broken, now, POLICY, NAMES)
    assert decision.renew_serving
    assert decision.signer == ("create" if breakage in SIGNER_BREAKAGES else "keep"), decision
    repaired, _ = step(broken, now, issuer)
    assert cp.decide(repaired, now, POLICY, NAMES).changes is False
    assert cp.issued_by(cert(repaired.serving.cert_pem), cert(repaired.signer.cert_pem))
    for pem in repaired.bundle:  # what is left in the bundle is readable
        cert(pem).public_key()


def test_an_unusable_next_ca_key_is_dropped_not_a_crash() -> None:
    broken, issuer = broken_secret("ca-next.key on secp112r1")
    now = T0 + dt.timedelta(days=501)
    decision = cp.decide(broken, now, POLICY, NAMES)
    assert decision.drop_next and decision.publish_next and decision.signer == "keep"
    repaired, _ = step(broken, now, issuer)
    assert repaired.next_signer is not None
    assert broken.next_signer is not None
    assert broken.next_signer.cert_pem not in repaired.bundle


# --- a CA created anew keeps what the configuration still trusts ---------------------------


def test_a_leaf_from_before_the_secret_was_deleted_still_verifies_after_recreation() -> None:
    """Replicas keep serving their old certificate until they read the new files (up to
    the check interval); the new bundle must still trust it."""
    before, issuer = fresh()
    old_leaf = cert(before.serving.cert_pem)
    published = (cp.bundle_pem(before),)
    now = T0 + 3 * DAY
    issuer.now = now
    after, decision = cp.reconcile(None, now, POLICY, NAMES, issuer, published)
    assert after is not None and decision.signer == "create"
    assert after.signer != before.signer
    trusted = [cert(p) for p in after.bundle]
    assert any(cp.issued_by(old_leaf, ca) for ca in trusted)
    assert any(cp.issued_by(cert(after.serving.cert_pem), ca) for ca in trusted)
    assert after.bundle == (before.signer.cert_pem, after.signer.cert_pem)
    assert cp.decide(after, now, POLICY, NAMES, published).changes is False

    # the old CA leaves the bundle once it expires
    end = cert(before.signer.cert_pem).not_valid_after_utc
    later, decision = step(after, end + DAY, issuer)
    assert decision.prune == (before.signer.cert_pem,)
    assert before.signer.cert_pem not in later.bundle


def test_an_unusable_secret_recreates_the_ca_and_keeps_the_published_ones() -> None:
    before, issuer = fresh()
    now = T0 + DAY
    unusable = CertState(KeyPair(before.signer.cert_pem, secp112r1_key()), before.serving, ())
    after, decision = step_with(unusable, now, issuer, (cp.bundle_pem(before),))
    assert decision.signer == "create"
    assert any(cp.issued_by(cert(before.serving.cert_pem), cert(p)) for p in after.bundle)


def step_with(
    state: CertState | None, now: dt.datetime, issuer: ClockIssuer, published: tuple[bytes, ...]
) -> tuple[CertState, cp.Decision]:
    issuer.now = now
    new_state, decision = cp.reconcile(state, now, POLICY, NAMES, issuer, published)
    assert new_state is not None
    return new_state, decision


def test_only_unexpired_readable_cas_are_carried_over() -> None:
    now = T0 + DAY
    live_ca = generate_ca("live", days=30, now=T0)
    expired_ca = generate_ca("expired", days=1, now=T0 - 2 * DAY)
    not_a_ca, _ = leaf(live_ca, T0)
    unreadable_ca = broken_secret("ca-signer.crt basicConstraints unparsable")[0].signer
    published = (
        live_ca.cert_pem + expired_ca.cert_pem,
        not_a_ca.cert_pem + unreadable_ca.cert_pem + b"-----BEGIN CERTIFICATE-----\nx\n",
        live_ca.cert_pem,  # the same CA in another webhook's caBundle
    )
    assert cp.published_cas(published, now) == (live_ca.cert_pem,)
    after, _ = step_with(None, now, ClockIssuer(now), published)
    assert after.bundle == (live_ca.cert_pem, after.signer.cert_pem)


def test_a_ca_that_is_kept_adds_nothing_published() -> None:
    """Only a CA created anew carries the published ones over: an ordinary pass never grows
    the bundle from the configuration (a CA dropped on purpose stays dropped)."""
    state, issuer = fresh()
    stranger = generate_ca("stranger", days=30, now=T0)
    published = (cp.bundle_pem(state) + stranger.cert_pem,)
    decision = cp.decide(state, T0 + 21 * DAY, POLICY, NAMES, published)
    assert decision.renew_serving and decision.signer == "keep"
    assert decision.add_to_bundle == ()


# --- whole passes against an in-memory API server -----------------------------------------


class FakeCluster(bootstrap.Cluster):
    """The five calls `bootstrap.Cluster` makes, with the API server's resourceVersion rules:
    create fails if the Secret exists, replace fails on a stale resourceVersion, and a JSON
    patch whose `test` fails is rejected (the API server's 422)."""

    def __init__(self, configuration: dict[str, Any] | None) -> None:
        self.secret: dict[str, Any] | None = None
        self.configuration = configuration
        self.version = 100
        self.after_secret_read: Callable[[], None] | None = None
        self.patches: list[list[dict[str, Any]]] = []
        self.rejected_patches = 0

    def _next_version(self) -> str:
        self.version += 1
        return str(self.version)

    def read_secret(self, name: str, namespace: str) -> dict[str, Any] | None:
        found = copy.deepcopy(self.secret)
        hook, self.after_secret_read = self.after_secret_read, None
        if hook is not None:
            hook()  # another replica runs now, after this read
        return found

    def create_secret(self, namespace: str, body: Mapping[str, Any]) -> bool:
        if self.secret is not None:
            return False
        self.secret = copy.deepcopy(dict(body))
        self.secret["metadata"]["resourceVersion"] = self._next_version()
        return True

    def replace_secret(self, name: str, namespace: str, body: Mapping[str, Any]) -> bool:
        if self.secret is None:
            return False
        if body["metadata"].get("resourceVersion") != self.secret["metadata"]["resourceVersion"]:
            return False
        self.secret = copy.deepcopy(dict(body))
        self.secret["metadata"]["resourceVersion"] = self._next_version()
        return True

    def read_webhook_config(self, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.configuration)

    def patch_webhook_config(self, name: str, ops: list[dict[str, Any]]) -> bool:
        self.patches.append(ops)
        if self.configuration is None:
            return False
        try:
            patched = jsonpatch.apply_patch(self.configuration, ops)
        except (jsonpatch.JsonPatchTestFailed, jsonpatch.JsonPatchConflict):
            self.rejected_patches += 1
            return False
        patched["metadata"]["resourceVersion"] = self._next_version()
        self.configuration = patched
        return True

    # what the API server holds, decoded

    def secret_bundle(self) -> bytes:
        assert self.secret is not None
        return base64.b64decode(self.secret["data"]["ca.crt"])

    def ca_bundles(self) -> list[bytes | None]:
        assert self.configuration is not None
        return [
            base64.b64decode(h["clientConfig"]["caBundle"])
            if h["clientConfig"].get("caBundle")
            else None
            for h in self.configuration["webhooks"]
        ]


def chart_configuration(ca_bundle: bytes | None = None) -> dict[str, Any]:
    webhooks = []
    for name in ("namespace-opt-in", "pod-opt-in"):
        client: dict[str, Any] = {"service": {"name": SERVICE, "namespace": NAMESPACE}}
        if ca_bundle is not None:
            client["caBundle"] = base64.b64encode(ca_bundle).decode()
        webhooks.append({"name": f"{name}.pods.lifecycle-webhook.io", "clientConfig": client})
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": CONFIG, "uid": "cfg-uid", "resourceVersion": "1"},
        "webhooks": webhooks,
    }


def target(out: Path | None = None) -> bootstrap.Target:
    return bootstrap.Target(
        secret=SECRET,
        namespace=NAMESPACE,
        service=SERVICE,
        webhook_config=CONFIG,
        out=out,
        policy=POLICY,
    )


def store(cluster: FakeCluster, state: CertState) -> None:
    assert cluster.configuration is not None
    owner = cp.owner_reference(cluster.configuration)
    cluster.secret = cp.secret_manifest(SECRET, NAMESPACE, state, owner)
    cluster.secret["metadata"]["resourceVersion"] = cluster._next_version()


def run_pass(cluster: FakeCluster, now: dt.datetime, out: Path | None = None) -> bool:
    return bootstrap.reconcile_once(
        cluster, target(out), ClockIssuer(now), JsonLog(level="error"), lambda: now
    )


def test_a_replica_never_publishes_a_bundle_older_than_another_replicas() -> None:
    """Replica A reads the configuration (no caBundle yet) and the Secret; its clock is a
    minute before the CA's 2/3 mark, so the Secret needs nothing. Before A patches, replica
    B, a minute past the mark, publishes the next CA: Secret and caBundle hold both CAs.
    A's patch of the one-CA bundle must not land; A reads again and finds nothing to do."""
    state, issuer = fresh()
    signer = cert(state.signer.cert_pem)
    mark = signer.not_valid_before_utc + (
        signer.not_valid_after_utc - signer.not_valid_before_utc
    ) * (2 / 3)
    state, _ = step(state, mark - DAY, issuer)  # a fresh serving certificate
    cluster = FakeCluster(chart_configuration(None))
    store(cluster, state)
    clock_a, clock_b = mark - dt.timedelta(minutes=1), mark + dt.timedelta(minutes=1)

    def replica_b() -> None:
        assert run_pass(cluster, clock_b) is True
        assert len(cert_list(cluster.secret_bundle())) == 2  # B published the next CA

    cluster.after_secret_read = replica_b
    assert run_pass(cluster, clock_a) is True
    published = cluster.secret_bundle()
    assert len(cert_list(published)) == 2
    assert cluster.ca_bundles() == [published, published]
    assert cluster.rejected_patches == 1  # A's stale patch
    assert all(p[0]["path"] == "/metadata/resourceVersion" for p in cluster.patches)


def cert_list(bundle: bytes) -> list[x509.Certificate]:
    return [cert(p) for p in cp.split_pem_bundle(bundle)]


def test_a_pass_reads_the_configuration_before_the_secret() -> None:
    calls: list[str] = []

    class Recording(FakeCluster):
        def read_secret(self, name: str, namespace: str) -> dict[str, Any] | None:
            calls.append("secret")
            return super().read_secret(name, namespace)

        def read_webhook_config(self, name: str) -> dict[str, Any] | None:
            calls.append("configuration")
            return super().read_webhook_config(name)

    cluster = Recording(chart_configuration(None))
    assert run_pass(cluster, T0) is True
    assert calls[:2] == ["configuration", "secret"]


def test_a_patch_that_keeps_losing_leaves_the_pass_not_done() -> None:
    """Every patch rejected: the pass gives up after a few rounds and says "not done", so
    the watch loop comes back in a few seconds (no exception, no crash of the init container)."""

    class Busy(FakeCluster):
        def patch_webhook_config(self, name: str, ops: list[dict[str, Any]]) -> bool:
            assert self.configuration is not None
            self.configuration["metadata"]["resourceVersion"] = self._next_version()
            return super().patch_webhook_config(name, ops)

    cluster = Busy(chart_configuration(None))
    assert run_pass(cluster, T0) is False
    assert cluster.rejected_patches == bootstrap.WRITE_ATTEMPTS
    cluster_calm = FakeCluster(cluster.configuration)
    cluster_calm.secret = cluster.secret
    assert run_pass(cluster_calm, T0) is True
    assert cluster_calm.ca_bundles() == [cluster_calm.secret_bundle()] * 2


def test_a_deleted_secret_is_recreated_trusting_the_certificates_still_served(
    tmp_path: Path,
) -> None:
    before, _ = fresh()
    cluster = FakeCluster(chart_configuration(cp.bundle_pem(before)))
    assert cluster.secret is None  # deleted (by hand, or lost with the namespace's backup)
    now = T0 + 3 * DAY
    assert run_pass(cluster, now, tmp_path / "tls") is True
    bundle = cluster.secret_bundle()
    assert cluster.ca_bundles() == [bundle, bundle]
    trusted = cert_list(bundle)
    assert any(cp.issued_by(cert(before.serving.cert_pem), ca) for ca in trusted)  # old pods
    new_leaf = cert((tmp_path / "tls" / "tls.crt").read_bytes())
    assert any(cp.issued_by(new_leaf, ca) for ca in trusted)  # new files
    assert cp.split_pem_bundle((tmp_path / "tls" / "ca.crt").read_bytes()) == tuple(
        cp.split_pem_bundle(bundle)
    )
