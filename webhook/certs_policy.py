"""When the self-managed certificates change, decided from their contents and a clock reading.

Pure: no clock, no API server, no files. `webhook.bootstrap` reads the Secret, passes `now`,
and writes back what `reconcile` returns, so every decision here is unit-tested without a
cluster.

The CA changes in two steps so the API server never sees a certificate from a CA it does not
trust yet: at 2/3 of the signing CA's life a next CA is *published* (added to the bundle, not
signing); from 5/6 of the life, and once the next CA has been published for `min_publish`, it
is *promoted* and signs a new serving certificate. The old CA stays in the bundle until it
expires, which is after every serving certificate it signed (`ca_days >= 6 * leaf_days`).

When the signing CA has to be created anew (the Secret was deleted or holds nothing usable),
the CAs still published in the webhook configuration's caBundle stay in the new bundle until
they expire: replicas serving a certificate from the old CA stay trusted until they pick up
the new files.

Whatever the Secret or the configuration holds is untrusted input: a certificate or key that
cannot be read (garbage, an unsupported curve, extensions that do not parse) counts as
unusable and is replaced, never an exception.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from webhook.certs import CLOCK_SKEW, KeyPair

RENEW_AT = 2 / 3
"""Fraction of a certificate's life after which it is replaced (serving) or succeeded (CA)."""
PROMOTE_AT = 5 / 6
"""Fraction of the signing CA's life after which the published next CA signs."""

# Secret layout (type kubernetes.io/tls). Everything the next writer needs is in the Secret.
TLS_CERT = "tls.crt"
TLS_KEY = "tls.key"
CA_BUNDLE = "ca.crt"
"""Every CA the API server must trust now: what goes into caBundle."""
SIGNER_CERT = "ca-signer.crt"
SIGNER_KEY = "ca-signer.key"
NEXT_CERT = "ca-next.crt"
NEXT_KEY = "ca-next.key"
"""The published CA that does not sign yet; present only during a CA change."""

SKEW_TOLERANCE = dt.timedelta(minutes=10)
"""A certificate that starts this little in the future counts as valid: replicas on nodes
whose clocks disagree must not keep replacing each other's fresh certificates."""

MANAGED_BY = "lifecycle-webhook-certs-bootstrap"
WEBHOOK_CONFIG_API_VERSION = "admissionregistration.k8s.io/v1"
WEBHOOK_CONFIG_KIND = "MutatingWebhookConfiguration"


@dataclass(frozen=True, slots=True)
class Policy:
    ca_days: int = 730
    leaf_days: int = 30
    min_publish: dt.timedelta = dt.timedelta(hours=1)
    """How long a next CA sits in the bundle before it may sign (caBundle propagation),
    counted from when it was issued (its notBefore is backdated by `CLOCK_SKEW`)."""

    def __post_init__(self) -> None:
        if self.leaf_days < 1:
            raise ValueError(f"leaf days must be at least 1, got {self.leaf_days}")
        if self.ca_days < 6 * self.leaf_days:
            raise ValueError(
                f"CA days ({self.ca_days}) must be at least 6 * leaf days ({6 * self.leaf_days})"
                " so a serving certificate never outlives the CA that signed it"
            )


@dataclass(frozen=True, slots=True)
class CertState:
    """What the Secret holds."""

    signer: KeyPair
    serving: KeyPair
    bundle: tuple[bytes, ...]
    """PEM of each trusted CA, oldest first; always contains the signer (and the next CA)."""
    next_signer: KeyPair | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """What `reconcile` will change, and why (one reason per change, for the log)."""

    signer: Literal["keep", "create", "promote"] = "keep"
    publish_next: bool = False
    drop_next: bool = False
    renew_serving: bool = False
    prune: tuple[bytes, ...] = ()
    add_to_bundle: tuple[bytes, ...] = ()
    reasons: tuple[str, ...] = field(default=())

    @property
    def changes(self) -> bool:
        return bool(
            self.signer != "keep"
            or self.publish_next
            or self.drop_next
            or self.renew_serving
            or self.prune
            or self.add_to_bundle
        )


class Issuer(Protocol):
    """Makes new key pairs; production uses `webhook.certs`, tests a fixed clock."""

    def ca(self, days: int) -> KeyPair: ...

    def serving(self, signer: KeyPair, dns_names: list[str], days: int) -> KeyPair: ...


# --- reading certificates ----------------------------------------------------------------

UNREADABLE = (
    ValueError,
    TypeError,
    UnsupportedAlgorithm,
    InvalidSignature,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
)
"""What cryptography raises for a certificate or key it cannot read or use: malformed data,
an unsupported algorithm or curve (public keys and extensions are parsed lazily, on use)."""


def _cert(pem: bytes) -> x509.Certificate | None:
    try:
        return x509.load_pem_x509_certificate(pem)
    except UNREADABLE:
        return None


def _trustable(pem: bytes) -> x509.Certificate | None:
    """The certificate, when a client could use it as a trust anchor: readable, with a public
    key and extensions that parse (both are parsed lazily, so a load alone proves neither)."""
    cert = _cert(pem)
    if cert is None:
        return None
    try:
        cert.public_key()
        _ = cert.extensions
    except UNREADABLE:
        return None
    return cert


def _public_der(public_key: Any) -> bytes:
    return bytes(
        public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def _key_matches(pair: KeyPair, cert: x509.Certificate) -> bool:
    try:
        key = serialization.load_pem_private_key(pair.key_pem, password=None)
        return _public_der(key.public_key()) == _public_der(cert.public_key())
    except UNREADABLE:
        return False


def _valid_at(cert: x509.Certificate, now: dt.datetime) -> bool:
    return cert.not_valid_before_utc - SKEW_TOLERANCE <= now < cert.not_valid_after_utc


def _passed(cert: x509.Certificate, fraction: float, now: dt.datetime) -> bool:
    """True once `fraction` of the certificate's life has gone by."""
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    return now >= start + (end - start) * fraction


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except (x509.ExtensionNotFound, *UNREADABLE):
        return False
    return constraints.ca


def _usable_ca(pair: KeyPair | None, now: dt.datetime) -> x509.Certificate | None:
    if pair is None:
        return None
    cert = _cert(pair.cert_pem)
    if cert is None or not _valid_at(cert, now) or not _key_matches(pair, cert):
        return None
    return cert if _is_ca(cert) else None


def dns_names_of(cert: x509.Certificate) -> frozenset[str]:
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return frozenset()
    return frozenset(sans.get_values_for_type(x509.DNSName))


def issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except UNREADABLE:
        return False
    return True


def published_cas(bundles: Sequence[bytes], now: dt.datetime) -> tuple[bytes, ...]:
    """The CA certificates of these PEM bundles (caBundle values) that are readable and not
    expired, each once, in order."""
    found: list[bytes] = []
    for bundle in bundles:
        for pem in split_pem_bundle(bundle):
            cert = _trustable(pem)
            if (
                pem not in found
                and cert is not None
                and now < cert.not_valid_after_utc
                and _is_ca(cert)
            ):
                found.append(pem)
    return tuple(found)


def _serving_problem(
    pair: KeyPair, signer: x509.Certificate, dns_names: Sequence[str], now: dt.datetime
) -> str | None:
    try:
        return _serving_check(pair, signer, dns_names, now)
    except UNREADABLE:
        return "serving certificate unreadable (unsupported key or extension)"


def _serving_check(
    pair: KeyPair, signer: x509.Certificate, dns_names: Sequence[str], now: dt.datetime
) -> str | None:
    cert = _cert(pair.cert_pem)
    if cert is None:
        return "serving certificate unreadable"
    if not _key_matches(pair, cert):
        return "serving key does not match its certificate"
    if not _valid_at(cert, now):
        return "serving certificate expired or not yet valid"
    if not issued_by(cert, signer):
        return "serving certificate not signed by the signing CA"
    if dns_names_of(cert) != frozenset(dns_names):
        return "serving certificate names differ from the Service's"
    if _passed(cert, RENEW_AT, now):
        return "serving certificate past 2/3 of its life"
    return None


# --- the decision ------------------------------------------------------------------------


def decide(
    state: CertState | None,
    now: dt.datetime,
    policy: Policy,
    dns_names: Sequence[str],
    published: Sequence[bytes] = (),
) -> Decision:
    """What must change so the Secret holds a fresh pair and a bundle that trusts it.

    `published`: what the webhook configuration trusts now, as PEM bundles (its decoded
    caBundle values; see `published_bundles`). When a new signing CA is created, the new
    bundle keeps the readable, unexpired CAs among them, so serving certificates they signed
    stay trusted until they expire (expiry pruning drops them then)."""
    reasons: list[str] = []
    if state is None:
        still = _still_published(published, (), now)
        reasons.append("no certificates yet")
        if still:
            reasons.append(f"keeping {len(still)} CA(s) still in caBundle until they expire")
        return Decision(
            signer="create", renew_serving=True, add_to_bundle=still, reasons=tuple(reasons)
        )
    signer = _usable_ca(state.signer, now)
    next_ca = _usable_ca(state.next_signer, now)
    signer_action: Literal["keep", "create", "promote"] = "keep"
    publish_next = drop_next = renew_serving = False

    if state.next_signer is not None and next_ca is None:
        drop_next = True
        reasons.append("next CA unusable")
    if signer is None:
        renew_serving = True
        if next_ca is not None:
            signer_action = "promote"
            reasons.append("signing CA unusable; promoting the published next CA")
        else:
            signer_action = "create"
            reasons.append("signing CA unusable (expired, unreadable or key mismatch)")
    else:
        if next_ca is None and _passed(signer, RENEW_AT, now):
            publish_next = True
            reasons.append("signing CA past 2/3 of its life; publishing the next CA")
        if (
            next_ca is not None
            and _passed(signer, PROMOTE_AT, now)
            and now >= next_ca.not_valid_before_utc + CLOCK_SKEW + policy.min_publish
        ):
            signer_action = "promote"
            renew_serving = True
            reasons.append("signing CA past 5/6 of its life; the next CA signs from now")
        if not renew_serving:
            problem = _serving_problem(state.serving, signer, dns_names, now)
            if problem is not None:
                renew_serving = True
                reasons.append(problem)

    keep = {state.signer.cert_pem} if signer is not None else set()
    if next_ca is not None and state.next_signer is not None:
        keep.add(state.next_signer.cert_pem)
    prune: list[bytes] = []
    for pem in state.bundle:
        cert = _trustable(pem)
        if pem not in keep and (cert is None or now >= cert.not_valid_after_utc):
            prune.append(pem)
    if prune:
        reasons.append(f"dropping {len(prune)} expired or unreadable CA(s) from the bundle")
    missing = tuple(pem for pem in sorted(keep) if pem not in state.bundle)
    if missing:
        reasons.append("bundle lacked a CA in use")
    if signer_action == "create":
        still = _still_published(published, set(state.bundle) - set(prune), now)
        if still:
            missing += still
            reasons.append(
                f"keeping {len(still)} CA(s) still in caBundle until they expire"
                " (replicas may still serve certificates they signed)"
            )
    return Decision(
        signer=signer_action,
        publish_next=publish_next,
        drop_next=drop_next,
        renew_serving=renew_serving,
        prune=tuple(prune),
        add_to_bundle=missing,
        reasons=tuple(reasons),
    )


def _still_published(
    published: Sequence[bytes], bundle: Collection[bytes], now: dt.datetime
) -> tuple[bytes, ...]:
    """The published CAs a bundle lacks that still vouch for someone: readable, unexpired."""
    return tuple(pem for pem in published_cas(published, now) if pem not in bundle)


def serving_days(signer: KeyPair, now: dt.datetime, policy: Policy) -> int:
    """Leaf lifetime: `leaf_days`, but never past the signing CA's own expiry."""
    cert = _cert(signer.cert_pem)
    if cert is None:
        return policy.leaf_days
    left = (cert.not_valid_after_utc - now).days
    return max(1, min(policy.leaf_days, left))


def apply(
    state: CertState | None,
    decision: Decision,
    now: dt.datetime,
    policy: Policy,
    dns_names: Sequence[str],
    issuer: Issuer,
) -> CertState:
    """The state after `decision`; new keys come from `issuer`."""
    if state is None:
        signer = issuer.ca(policy.ca_days)
        serving = issuer.serving(signer, list(dns_names), serving_days(signer, now, policy))
        trusted = (*decision.add_to_bundle, signer.cert_pem)
        return CertState(signer=signer, serving=serving, bundle=trusted)
    bundle = [pem for pem in state.bundle if pem not in decision.prune]
    bundle += [pem for pem in decision.add_to_bundle if pem not in bundle]
    signer, next_signer = state.signer, state.next_signer
    if decision.drop_next and next_signer is not None:
        if next_signer.cert_pem in bundle:
            bundle.remove(next_signer.cert_pem)
        next_signer = None
    if decision.signer == "create":
        signer = issuer.ca(policy.ca_days)
        bundle.append(signer.cert_pem)
    elif decision.signer == "promote" and next_signer is not None:
        signer, next_signer = next_signer, None
    if decision.publish_next:
        next_signer = issuer.ca(policy.ca_days)
        bundle.append(next_signer.cert_pem)
    serving = state.serving
    if decision.renew_serving:
        serving = issuer.serving(signer, list(dns_names), serving_days(signer, now, policy))
    return CertState(signer=signer, serving=serving, bundle=tuple(bundle), next_signer=next_signer)


def reconcile(
    state: CertState | None,
    now: dt.datetime,
    policy: Policy,
    dns_names: Sequence[str],
    issuer: Issuer,
    published: Sequence[bytes] = (),
) -> tuple[CertState | None, Decision]:
    """(new state, decision); the state is None when nothing changes. `published` as in
    `decide`."""
    decision = decide(state, now, policy, dns_names, published)
    if not decision.changes:
        return None, decision
    return apply(state, decision, now, policy, dns_names, issuer), decision


# --- Secret and webhook configuration ----------------------------------------------------


def bundle_pem(state: CertState) -> bytes:
    return b"".join(pem if pem.endswith(b"\n") else pem + b"\n" for pem in state.bundle)


def split_pem_bundle(data: bytes) -> tuple[bytes, ...]:
    """Each certificate of a PEM bundle on its own (text outside the blocks is dropped)."""
    end = b"-----END CERTIFICATE-----"
    parts = []
    for chunk in data.split(end)[:-1]:
        start = chunk.find(b"-----BEGIN CERTIFICATE-----")
        if start >= 0:
            parts.append(chunk[start:] + end + b"\n")
    return tuple(parts)


def secret_data(state: CertState) -> dict[str, str]:
    """The Secret's `data`: base64 of each file."""
    files = {
        TLS_CERT: state.serving.cert_pem,
        TLS_KEY: state.serving.key_pem,
        CA_BUNDLE: bundle_pem(state),
        SIGNER_CERT: state.signer.cert_pem,
        SIGNER_KEY: state.signer.key_pem,
    }
    if state.next_signer is not None:
        files[NEXT_CERT] = state.next_signer.cert_pem
        files[NEXT_KEY] = state.next_signer.key_pem
    return {name: base64.b64encode(data).decode("ascii") for name, data in files.items()}


def state_from_secret_data(data: Mapping[str, str] | None) -> CertState | None:
    """The state a Secret holds; None when any required key is missing or not base64."""
    if not data:
        return None
    try:
        files = {name: base64.b64decode(value, validate=True) for name, value in data.items()}
    except (binascii.Error, ValueError, TypeError):
        return None
    if not all(files.get(k) for k in (TLS_CERT, TLS_KEY, CA_BUNDLE, SIGNER_CERT, SIGNER_KEY)):
        return None
    next_signer = None
    if files.get(NEXT_CERT) and files.get(NEXT_KEY):
        next_signer = KeyPair(files[NEXT_CERT], files[NEXT_KEY])
    return CertState(
        signer=KeyPair(files[SIGNER_CERT], files[SIGNER_KEY]),
        serving=KeyPair(files[TLS_CERT], files[TLS_KEY]),
        bundle=split_pem_bundle(files[CA_BUNDLE]),
        next_signer=next_signer,
    )


def owner_reference(configuration: Mapping[str, Any]) -> dict[str, Any]:
    """Makes the Secret go when the webhook configuration goes (helm uninstall)."""
    metadata = configuration["metadata"]
    return {
        "apiVersion": WEBHOOK_CONFIG_API_VERSION,
        "kind": WEBHOOK_CONFIG_KIND,
        "name": metadata["name"],
        "uid": metadata["uid"],
    }


def _is_config_owner(ref: Mapping[str, Any]) -> bool:
    return ref.get("kind") == WEBHOOK_CONFIG_KIND and str(ref.get("apiVersion", "")).startswith(
        "admissionregistration.k8s.io/"
    )


def owner_is_current(secret: Mapping[str, Any], owner: Mapping[str, Any] | None) -> bool:
    """Whether the Secret's webhook-configuration owner is exactly `owner` (or none is wanted)."""
    if owner is None:
        return True
    refs = [
        r for r in secret.get("metadata", {}).get("ownerReferences") or [] if _is_config_owner(r)
    ]
    return len(refs) == 1 and refs[0].get("uid") == owner["uid"]


def secret_manifest(
    name: str,
    namespace: str,
    state: CertState,
    owner: Mapping[str, Any] | None,
    existing: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The Secret to create, or to replace `existing` with (its resourceVersion makes the
    replace fail on a concurrent write; labels and annotations others set are kept)."""
    old_meta: Mapping[str, Any] = (existing or {}).get("metadata", {})
    labels = dict(old_meta.get("labels") or {})
    labels["app.kubernetes.io/managed-by"] = MANAGED_BY
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "labels": labels}
    if old_meta.get("annotations"):
        metadata["annotations"] = dict(old_meta["annotations"])
    refs = [dict(r) for r in old_meta.get("ownerReferences") or [] if not _is_config_owner(r)]
    if owner is not None:
        refs.append(dict(owner))
    if refs:
        metadata["ownerReferences"] = refs
    if old_meta.get("resourceVersion"):
        metadata["resourceVersion"] = old_meta["resourceVersion"]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        "type": "kubernetes.io/tls",
        "data": secret_data(state),
    }


def published_bundles(configuration: Mapping[str, Any] | None) -> tuple[bytes, ...]:
    """Each distinct caBundle of the configuration's webhooks, decoded (bad base64 skipped)."""
    found: list[bytes] = []
    for hook in (configuration or {}).get("webhooks") or []:
        value = ((hook or {}).get("clientConfig") or {}).get("caBundle")
        if not isinstance(value, str) or not value:
            continue
        try:
            bundle = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            continue
        if bundle not in found:
            found.append(bundle)
    return tuple(found)


def ca_bundle_patch(configuration: Mapping[str, Any], bundle: bytes) -> list[dict[str, Any]]:
    """JSON patch setting caBundle on every webhook that lacks this bundle; [] when none.

    The patch first `test`s the configuration's resourceVersion: it applies only to exactly
    the configuration that was read, which the caller read *before* the Secret. A replica
    whose read is older than another replica's patch (and so maybe its Secret too) gets 422
    and reads both again, instead of putting an older bundle back. Each change is also
    guarded by a `test` of the webhook's name.
    """
    wanted = base64.b64encode(bundle).decode("ascii")
    ops: list[dict[str, Any]] = []
    for index, hook in enumerate(configuration.get("webhooks") or []):
        if (hook.get("clientConfig") or {}).get("caBundle") == wanted:
            continue
        ops.append({"op": "test", "path": f"/webhooks/{index}/name", "value": hook["name"]})
        ops.append(
            {"op": "add", "path": f"/webhooks/{index}/clientConfig/caBundle", "value": wanted}
        )
    version = (configuration.get("metadata") or {}).get("resourceVersion")
    if ops and version:
        ops.insert(0, {"op": "test", "path": "/metadata/resourceVersion", "value": version})
    return ops
