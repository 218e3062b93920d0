"""TLS for the admission port: TLS >= 1.2, optional client CA, reload of rotated files.

A rotated pair is loaded into a scratch `SSLContext` first. Loading a mismatched pair into
the live context would leave it unusable for every later handshake (measured, research
anchors-reliability 2.3), so the live listening context never changes: its `sni_callback`
points each new connection at the current scratch-built context. Existing connections keep
the certificate they negotiated.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

from webhook.logs import JsonLog
from webhook.metrics import Metrics


class TLSFilesError(Exception):
    """The certificate files cannot be used (unreadable, not PEM, key does not match)."""


@dataclass(frozen=True, slots=True)
class _Loaded:
    context: ssl.SSLContext
    files: tuple[bytes, ...]
    serial: int
    not_after: float


def _der_item(data: bytes, offset: int) -> tuple[int, int, int]:
    """(tag, start of content, end of content) of the DER item at `offset`."""
    tag, length = data[offset], data[offset + 1]
    offset += 2
    if length & 0x80:
        size = length & 0x7F
        if not 1 <= size <= 4:
            raise ValueError("unsupported DER length")
        length = int.from_bytes(data[offset : offset + size], "big")
        offset += size
    if offset + length > len(data):
        raise ValueError("truncated DER")
    return tag, offset, offset + length


def _der_time(tag: int, value: bytes) -> float:
    text = value.decode("ascii")
    if tag == 0x17:  # UTCTime YYMMDDHHMMSSZ; RFC 5280: YY >= 50 means 19YY
        year = int(text[:2])
        text = f"{1900 + year if year >= 50 else 2000 + year}{text[2:]}"
    elif tag != 0x18:  # GeneralizedTime YYYYMMDDHHMMSSZ
        raise ValueError("validity is not a UTCTime or GeneralizedTime")
    when = dt.datetime.strptime(text, "%Y%m%d%H%M%SZ").replace(tzinfo=dt.UTC)
    return when.timestamp()


def leaf_serial_and_not_after(cert_pem: bytes) -> tuple[int, float]:
    """Serial number and notAfter (Unix time) of the first certificate in a PEM file.

    A few lines of DER instead of `cryptography`, which would add ~8 MiB to every server.
    """
    text = cert_pem.decode("ascii", errors="replace")
    begin, end = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
    start = text.find(begin)
    stop = text.find(end, start)
    if start < 0 or stop < 0:
        raise ValueError("no PEM certificate")
    try:
        der = base64.b64decode("".join(text[start + len(begin) : stop].split()), validate=True)
        _, cert, _ = _der_item(der, 0)
        _, tbs, _ = _der_item(der, cert)
        tag, offset, next_item = _der_item(der, tbs)
        if tag == 0xA0:  # [0] version
            tag, offset, next_item = _der_item(der, next_item)
        if tag != 0x02:
            raise ValueError("no serial number")
        serial = int.from_bytes(der[offset:next_item], "big", signed=True)
        _, _, next_item = _der_item(der, next_item)  # signature algorithm
        _, _, next_item = _der_item(der, next_item)  # issuer
        tag, validity, _ = _der_item(der, next_item)
        if tag != 0x30:
            raise ValueError("no validity")
        _, _, after_not_before = _der_item(der, validity)
        tag, offset, next_item = _der_item(der, after_not_before)
        return serial, _der_time(tag, der[offset:next_item])
    except (IndexError, UnicodeDecodeError, binascii.Error) as exc:
        raise ValueError(f"not a valid certificate: {exc}") from exc


def _read(paths: tuple[Path, ...]) -> tuple[bytes, ...]:
    return tuple(p.read_bytes() for p in paths)


def new_server_context(cert_file: Path, key_file: Path, client_ca: Path | None) -> ssl.SSLContext:
    """A server context: TLS 1.2 minimum, Python's default (forward-secret, AEAD-first) ciphers."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    try:
        context.load_cert_chain(cert_file, key_file)
        if client_ca is not None:
            context.load_verify_locations(cafile=client_ca)
            context.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise TLSFilesError(str(exc)) from exc
    return context


class CertificateReloader:
    """Serves the newest valid certificate pair found on disk.

    `check()` is called by the file poller (every ~2 s and on SIGHUP): it compares the
    files' bytes with the pair in use and swaps only after the new pair loaded cleanly.
    """

    def __init__(
        self,
        cert_file: str | Path,
        key_file: str | Path,
        client_ca: str | Path | None,
        *,
        log: JsonLog,
        metrics: Metrics,
    ) -> None:
        self.cert_file = Path(cert_file)
        self.key_file = Path(key_file)
        self.client_ca = Path(client_ca) if client_ca else None
        self._paths = (self.cert_file, self.key_file) + (
            (self.client_ca,) if self.client_ca else ()
        )
        self.log = log
        self.metrics = metrics
        self._last_failed: tuple[bytes, ...] | None = None
        self._current = self._load_settled()
        self.listening_context = new_server_context(self.cert_file, self.key_file, self.client_ca)
        self.listening_context.sni_callback = self._select_context
        self._export()
        if self.not_after < time.time():
            log.event(
                "serving certificate expired",
                level="error",
                cert_file=str(self.cert_file),
                not_after=_utc(self.not_after),
            )

    @property
    def serial(self) -> int:
        return self._current.serial

    @property
    def not_after(self) -> float:
        return self._current.not_after

    def _select_context(
        self, ssl_object: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: ssl.SSLContext
    ) -> None:
        ssl_object.context = self._current.context

    def _load(self) -> _Loaded:
        """Load the files into a new context; the bytes read before and after must agree."""
        try:
            before = _read(self._paths)
        except OSError as exc:
            raise TLSFilesError(str(exc)) from exc
        context = new_server_context(self.cert_file, self.key_file, self.client_ca)
        try:
            after = _read(self._paths)
        except OSError as exc:
            raise TLSFilesError(str(exc)) from exc
        if after != before:
            raise _Changing
        try:
            serial, not_after = leaf_serial_and_not_after(before[0])
        except ValueError as exc:
            raise TLSFilesError(f"{self.cert_file}: {exc}") from exc
        return _Loaded(context, before, serial, not_after)

    def _load_settled(self) -> _Loaded:
        for _ in range(20):
            try:
                return self._load()
            except _Changing:
                time.sleep(0.05)
        raise TLSFilesError(f"{self.cert_file} and {self.key_file} keep changing")

    def _export(self) -> None:
        self.metrics.certificate_expiry.set(self._current.not_after)

    def check(self) -> bool:
        """Reload when the files changed; True when a new pair is now served."""
        try:
            files = _read(self._paths)
        except OSError as exc:
            self._fail(None, str(exc))
            return False
        if files == self._current.files or files == self._last_failed:
            return False
        try:
            loaded = self._load()
        except _Changing:
            return False  # a writer is between files; look again on the next poll
        except TLSFilesError as exc:
            time.sleep(0.1)
            try:
                if _read(self._paths) != files:
                    return False  # same: mid-rotation, not a bad pair yet
            except OSError:
                return False
            self._fail(files, str(exc))
            return False
        if loaded.not_after < time.time():
            self._fail(files, f"the new certificate expired at {_utc(loaded.not_after)}")
            return False
        self._current = loaded
        self._last_failed = None
        self._export()
        self.metrics.certificate_reloads.labels("success").inc()
        self.log.event(
            "cert reloaded",
            cert_file=str(self.cert_file),
            serial=f"{loaded.serial:x}",
            not_after=_utc(loaded.not_after),
        )
        return True

    def _fail(self, files: tuple[bytes, ...] | None, message: str) -> None:
        if files is not None:
            self._last_failed = files
        elif self._last_failed == ():
            return  # still unreadable: said so already
        else:
            self._last_failed = ()
        self.metrics.certificate_reloads.labels("error").inc()
        self.log.event(
            "cert reload failed",
            level="error",
            cert_file=str(self.cert_file),
            key_file=str(self.key_file),
            error=message,
            serving_serial=f"{self._current.serial:x}",
        )


def _utc(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat().replace("+00:00", "Z")


class _Changing(Exception):
    """The files changed while they were being loaded."""
