"""What only the test cluster needs: the service-account signing key and certificate
readers (the admin client certificate comes from tests/pki.py). The CA and serving certificates come from `webhook.certs`, so the
product's own certificates are what the real API server has to accept."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ..pki import as_bytes


def write_service_account_keys(private_path: Path, public_path: Path) -> None:
    """The key pair kube-apiserver signs and verifies service-account tokens with (ES256)."""
    key = ec.generate_private_key(ec.SECP256R1())
    private_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def serial_number(cert_pem: str | bytes) -> int:
    return int(x509.load_pem_x509_certificate(as_bytes(cert_pem)).serial_number)


def serial_number_der(cert_der: bytes) -> int:
    return int(x509.load_der_x509_certificate(cert_der).serial_number)


def certificates_in_bundle(bundle_pem: str | bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(as_bytes(bundle_pem))
