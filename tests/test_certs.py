"""Certificates from webhook.certs: what the API server's Go TLS client checks, and the CLI."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from webhook import certs

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def ca() -> certs.KeyPair:
    return certs.generate_ca()


@pytest.fixture(scope="module")
def serving(ca: certs.KeyPair) -> certs.KeyPair:
    return certs.generate_serving(
        ca, certs.service_dns_names("lifecycle-webhook", "ops"), ["127.0.0.1", "::1"], days=30
    )


def load(pair: certs.KeyPair) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pair.cert_pem)


def test_service_dns_names() -> None:
    assert certs.service_dns_names("hook", "ns") == [
        "hook",
        "hook.ns",
        "hook.ns.svc",
        "hook.ns.svc.cluster.local",
    ]


def test_serving_sans_are_exactly_the_names_and_addresses(serving: certs.KeyPair) -> None:
    san = load(serving).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [
        "lifecycle-webhook",
        "lifecycle-webhook.ops",
        "lifecycle-webhook.ops.svc",
        "lifecycle-webhook.ops.svc.cluster.local",
    ]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]


def test_serving_key_usage_eku_and_ca_false(serving: certs.KeyPair) -> None:
    cert = load(serving)
    basic = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and basic.value.ca is False
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature
    assert not usage.value.key_cert_sign and not usage.value.key_encipherment
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]


def test_ca_flags(ca: certs.KeyPair) -> None:
    cert = load(ca)
    basic = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and basic.value.ca is True and basic.value.path_length == 0
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign
    assert cert.subject == cert.issuer
    assert cert.subject.rfc4514_string() == "CN=lifecycle-webhook-ca"


def test_serving_is_signed_by_the_ca(ca: certs.KeyPair, serving: certs.KeyPair) -> None:
    leaf, root = load(serving), load(ca)
    assert leaf.issuer == root.subject
    leaf.verify_directly_issued_by(root)
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest


def test_validity_window_is_backdated_five_minutes(serving: certs.KeyPair) -> None:
    cert = load(serving)
    now = dt.datetime.now(dt.UTC)
    backdate = now - cert.not_valid_before_utc
    assert dt.timedelta(minutes=4) < backdate < dt.timedelta(minutes=6)
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime == dt.timedelta(days=30, minutes=5)
    assert certs.not_after(serving.cert_pem) == cert.not_valid_after_utc


def test_default_lifetimes(ca: certs.KeyPair) -> None:
    leaf = load(certs.generate_serving(ca, ["x"]))
    assert (leaf.not_valid_after_utc - leaf.not_valid_before_utc).days == 365
    root = load(ca)
    assert (root.not_valid_after_utc - root.not_valid_before_utc).days == 3650


def test_keys_are_ecdsa_p256(ca: certs.KeyPair, serving: certs.KeyPair) -> None:
    for pair in (ca, serving):
        key = load(pair).public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)
        assert key.curve.name == "secp256r1"
        assert pair.key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8, unencrypted


def test_serving_needs_a_name(ca: certs.KeyPair) -> None:
    with pytest.raises(ValueError, match="at least one"):
        certs.generate_serving(ca, [])


def test_openssl_accepts_the_pair_for_a_tls_server(
    tmp_path: Path, ca: certs.KeyPair, serving: certs.KeyPair
) -> None:
    cert_path, key_path = certs.write_pair(tmp_path, "tls", serving)
    ca_path, _ = certs.write_pair(tmp_path, "ca", ca)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_path, key_path)  # raises on a mismatched pair
    client = ssl.create_default_context(cafile=str(ca_path))
    assert client.cert_store_stats()["x509_ca"] == 1


def test_write_pair_modes_and_no_leftovers(tmp_path: Path, serving: certs.KeyPair) -> None:
    cert_path, key_path = certs.write_pair(tmp_path / "new", "tls", serving)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(cert_path.stat().st_mode) == 0o644
    assert cert_path.read_bytes() == serving.cert_pem
    assert key_path.read_bytes() == serving.key_pem
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["tls.crt", "tls.key"]


# --- `lifecycle-webhook certs generate` ---------------------------------------------------


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "webhook", "certs", "generate", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_certs_generate_writes_four_files(tmp_path: Path) -> None:
    out = tmp_path / "pki"
    done = run_cli("--service", "hook", "--namespace", "ops", "--out", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    names = ["ca.crt", "ca.key", "tls.crt", "tls.key"]
    assert sorted(Path(line).name for line in done.stdout.split()) == names
    assert sorted(p.name for p in out.iterdir()) == names
    leaf = x509.load_pem_x509_certificate((out / "tls.crt").read_bytes())
    root = x509.load_pem_x509_certificate((out / "ca.crt").read_bytes())
    leaf.verify_directly_issued_by(root)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == certs.service_dns_names("hook", "ops")
    assert stat.S_IMODE((out / "tls.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((out / "ca.key").stat().st_mode) == 0o600
    assert (leaf.not_valid_after_utc - leaf.not_valid_before_utc).days == 365


def test_certs_generate_defaults_to_the_current_directory_and_takes_days(tmp_path: Path) -> None:
    done = run_cli("--service", "hook", "--namespace", "ops", "--days", "7", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    leaf = x509.load_pem_x509_certificate((tmp_path / "tls.crt").read_bytes())
    assert (leaf.not_valid_after_utc - leaf.not_valid_before_utc).days == 7


@pytest.mark.parametrize(
    "args",
    [
        ["--namespace", "ops"],
        ["--service", "hook"],
        ["--service", "Hook", "--namespace", "ops"],
        ["--service", "hook", "--namespace", "ops.svc"],
        ["--service", "hook", "--namespace", "ops", "--days", "0"],
        ["--service", "hook", "--namespace", "ops", "--days", "7d"],
        ["--service", "hook", "--namespace", "ops", "--days", "-3"],
    ],
)
def test_certs_generate_bad_arguments_exit_2_and_write_nothing(
    tmp_path: Path, args: list[str]
) -> None:
    done = run_cli(*args, "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip()
    assert done.stdout == ""
    assert not (tmp_path / "out").exists()


def test_certs_generate_refuses_a_file_as_out(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    done = run_cli("--service", "hook", "--namespace", "ops", "--out", str(target), cwd=tmp_path)
    assert done.returncode == 2
    assert "not a directory" in done.stderr


def test_the_servers_der_reader_agrees_with_cryptography(ca: certs.KeyPair) -> None:
    """webhook.tls reads serial and notAfter without importing cryptography (~8 MiB)."""
    from webhook.tls import leaf_serial_and_not_after

    for days in (1, 365, 36500):  # 36500 days: notAfter after 2049 is a GeneralizedTime
        leaf = certs.generate_serving(ca, ["x"], days=days)
        cert = load(leaf)
        expected = (cert.serial_number, cert.not_valid_after_utc.timestamp())
        assert leaf_serial_and_not_after(leaf.cert_pem) == expected
        assert leaf_serial_and_not_after(leaf.cert_pem + ca.cert_pem) == expected  # leaf first
    for junk in (
        b"",
        b"not pem",
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    ):
        with pytest.raises(ValueError):  # noqa: PT011 - any reason will do
            leaf_serial_and_not_after(junk)
