"""Certificates for the admission server: a private CA and a serving pair signed by it.

Shared by `serve` (a throwaway pair when no files are given), `certs generate` and the
chart's bootstrap. ECDSA P-256 everywhere: the cheapest handshakes of the key types the
API server accepts (research: anchors-reliability 2.2).
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey

CLOCK_SKEW = dt.timedelta(minutes=5)
"""notBefore is backdated by this much so a node with a slow clock accepts a fresh pair."""

_PROG = "lifecycle-webhook certs generate"
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


@dataclass(frozen=True, slots=True)
class KeyPair:
    """A PEM certificate and its PEM (PKCS#8, unencrypted) private key."""

    cert_pem: bytes
    key_pem: bytes


def _new_key() -> EllipticCurvePrivateKey:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: EllipticCurvePrivateKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _key_usage(*, signs_certificates: bool) -> x509.KeyUsage:
    """ECDSA signs; a CA also signs certificates and CRLs. Nothing enciphers."""
    from cryptography import x509

    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=signs_certificates,
        crl_sign=signs_certificates,
        encipher_only=False,
        decipher_only=False,
    )


def _validity(days: int, now: dt.datetime | None) -> tuple[dt.datetime, dt.datetime]:
    if days < 1:
        raise ValueError(f"days must be at least 1, got {days}")
    start = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
    return start - CLOCK_SKEW, start + dt.timedelta(days=days)


def generate_ca(
    common_name: str = "lifecycle-webhook-ca", days: int = 3650, *, now: dt.datetime | None = None
) -> KeyPair:
    """A self-signed CA that may sign serving certificates only (pathLen 0).

    `now` (default: the clock) lets renewal logic and its tests issue as of another time."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    not_before, not_after_ = _validity(days, now)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after_)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(signs_certificates=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def generate_serving(
    ca: KeyPair,
    dns_names: list[str],
    ip_addresses: list[str] = [],  # noqa: B006 - read only; the signature is shared with the chart
    days: int = 365,
    *,
    now: dt.datetime | None = None,
) -> KeyPair:
    """A leaf for TLS servers, valid for exactly the given names and addresses."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    if not dns_names and not ip_addresses:
        raise ValueError("a serving certificate needs at least one DNS name or IP address")
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    key = _new_key()
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
    common_name = dns_names[0] if dns_names else ip_addresses[0]
    not_before, not_after_ = _validity(days, now)
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after_)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(signs_certificates=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def service_dns_names(service: str, namespace: str) -> list[str]:
    """Every name the API server or a client in the cluster may use for the Service."""
    return [
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
    ]


def not_after(cert_pem: bytes) -> dt.datetime:
    """Expiry (UTC, aware) of the first certificate in the PEM."""
    from cryptography import x509

    return x509.load_pem_x509_certificate(cert_pem).not_valid_after_utc


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write next to the target and rename, so a watcher never reads half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_pair(directory: str | os.PathLike[str], name: str, pair: KeyPair) -> tuple[Path, Path]:
    """Write `<name>.crt` (0644) and `<name>.key` (0600); returns both paths."""
    base = Path(directory)
    base.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = base / f"{name}.crt", base / f"{name}.key"
    _write_atomic(key_path, pair.key_pem, 0o600)
    _write_atomic(cert_path, pair.cert_pem, 0o644)
    return cert_path, key_path


# --- `lifecycle-webhook certs generate` -------------------------------------------------


def add_certs_generate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--service", required=True, help="the webhook's Service name")
    parser.add_argument("--namespace", required=True, help="the Service's namespace")
    parser.add_argument(
        "--out", default=".", help="directory for ca.crt, ca.key, tls.crt, tls.key (default: .)"
    )
    parser.add_argument(
        "--days", default="365", help="validity of the serving certificate in days (default 365)"
    )


def run_certs_generate(args: argparse.Namespace) -> int:
    """Write a CA and a serving pair for `<service>.<namespace>.svc`; exit 2 on bad input."""
    problems = []
    for flag, value in (("--service", args.service), ("--namespace", args.namespace)):
        if not _DNS_LABEL.fullmatch(value or ""):
            problems.append(f"{flag} {value!r} is not a DNS label (lowercase a-z, 0-9, '-')")
    days_text = str(args.days)
    days = int(days_text) if re.fullmatch(r"[0-9]{1,5}", days_text, re.ASCII) else 0
    if not 1 <= days <= 36500:
        problems.append(f"--days {days_text!r} is not a whole number of days from 1 to 36500")
    if problems:
        for problem in problems:
            print(f"{_PROG}: error: {problem}", file=sys.stderr)
        return 2
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        print(f"{_PROG}: error: --out {args.out!r} is not a directory", file=sys.stderr)
        return 2
    ca = generate_ca(days=max(days, 3650))
    serving = generate_serving(ca, service_dns_names(args.service, args.namespace), days=days)
    try:
        paths = [*write_pair(out, "ca", ca), *write_pair(out, "tls", serving)]
    except OSError as exc:
        print(f"{_PROG}: error: cannot write into {args.out!r}: {exc}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0
