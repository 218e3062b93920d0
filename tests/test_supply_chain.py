"""The runtime dependencies are exactly requirements.lock (hash-pinned), and no secret reaches
a log line: not the service-account token, not a private key, not an Authorization header."""

from __future__ import annotations

import http.server
import re
import ssl
import threading
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson
import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from webhook.logs import JsonLog

from .test_server_https import REPO, Pki, ServerProcess, kubeconfig_for, post, review, tls_args

LOCK = REPO / "requirements.lock"


def locked() -> dict[str, tuple[str, list[str], Marker | None]]:
    """name -> (version, hashes, marker) from the lock file."""
    entries: dict[str, tuple[str, list[str], Marker | None]] = {}
    text = LOCK.read_text().replace("\\\n", " ")
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        spec, *hashes = line.split("--hash=")
        requirement = Requirement(spec.strip())
        (pin,) = requirement.specifier
        assert pin.operator == "==", line
        entries[canonicalize_name(requirement.name)] = (
            pin.version,
            [h.strip() for h in hashes],
            requirement.marker,
        )
    return entries


def test_every_locked_package_is_pinned_with_sha256_hashes() -> None:
    entries = locked()
    assert len(entries) > 10
    for name, (_, hashes, _) in entries.items():
        assert hashes, name
        assert all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in hashes), name


def test_the_lock_covers_the_runtime_requirement_closure() -> None:
    """Every package the project needs at run time, transitively, is in the lock, at a version
    its dependents accept (the project's own requirements included)."""
    entries = locked()
    pending = [Requirement(r) for r in metadata.requires("lifecycle-webhook") or []]
    seen: set[str] = set()
    while pending:
        requirement = pending.pop()
        extras = requirement.extras or {""}
        if requirement.marker is not None and not any(
            requirement.marker.evaluate({"extra": extra}) for extra in extras | {""}
        ):
            continue
        name = canonicalize_name(requirement.name)
        assert name in entries, f"{name} is required but not locked"
        version = entries[name][0]
        assert requirement.specifier.contains(version, prereleases=True), (requirement, version)
        for extra in sorted(extras):
            key = f"{name}[{extra}]"
            if key in seen:
                continue
            seen.add(key)
            for raw in metadata.requires(name) or []:
                child = Requirement(raw)
                if child.marker is None or child.marker.evaluate({"extra": extra}):
                    pending.append(child)


def test_the_installed_runtime_packages_are_exactly_the_locked_versions() -> None:
    """`make venv` (and so CI) installs the lock with --require-hashes; the test tools are
    constrained to it and may not have moved any runtime package."""
    for name, (version, _, marker) in locked().items():
        if marker is not None and not marker.evaluate():
            continue
        assert metadata.version(name) == version, name


# --- secrets and logs ---------------------------------------------------------------------

TOKEN = "eyJhbGciOiJSUzI1NiIsImtpZCI6InRlc3QifQ.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQifQ.c2lnbmF0dXJlLW5vdC1yZWFs"
OPAQUE = "opaque-kubeconfig-token-4f1d2c"
BASIC = "dXNlcjpzdXBlci1zZWNyZXQ="


def secrets(pki: Pki) -> list[str]:
    key_lines = pki.serving.key_pem.decode().splitlines()
    return [TOKEN, OPAQUE, BASIC, *key_lines[1:-1]]


def test_a_log_line_never_carries_a_secret_whoever_put_it_there(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    path = tmp_path / "log.jsonl"
    with path.open("wb") as out:
        log = JsonLog("debug", fd=out.fileno())
        pem = pki.serving.key_pem.decode()
        log.event("x", error=f"403 from API server: Authorization: Bearer {OPAQUE}")
        log.event("x", headers={"Authorization": f"Basic {BASIC}", "Accept": "*/*"})
        log.event("x", detail=repr({"authorization": TOKEN}))
        log.event("x", key=pem, truncated=pem[:120], token=TOKEN)
        log.event("x", error=repr(ValueError(f"bad header 'Authorization: Bearer {TOKEN}'")))
        try:
            raise RuntimeError(
                f"request failed with headers {{'Authorization': 'Bearer {OPAQUE}'}}"
            )
        except RuntimeError as exc:
            import traceback

            log.review(
                uid="u", namespace="n", name=f"Bearer {OPAQUE}", owner_kind="", owner_name="",
                operation="CREATE", outcome="error", features=(), warnings=0, duration_ms=1.0,
                status=500, error=str(exc), traceback="".join(traceback.format_exception(exc)),
            )  # fmt: skip
    text = path.read_text()
    lines = [orjson.loads(line) for line in text.splitlines()]
    assert len(lines) == 6  # still one valid JSON object per line
    for secret in secrets(pki):
        assert secret not in text, secret
    assert "[redacted" in lines[0]["error"]
    assert lines[1]["headers"]["Accept"] == "*/*"  # nothing else is touched


class EchoingApiServer(http.server.BaseHTTPRequestHandler):
    """A hostile or buggy API server: every answer is an error that echoes the request's
    headers, credentials included, so they end up in exception messages."""

    def do_GET(self) -> None:
        body = orjson.dumps(
            {"kind": "Status", "code": 403, "message": f"forbidden; you sent {dict(self.headers)}"}
        )
        self.send_response(403 if "namespaces" in self.path else 500)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def echoing_api(tmp_path: Path) -> Iterator[tuple[int, Pki]]:
    pki = Pki(tmp_path / "api-pki")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), EchoingApiServer)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.cert_file, pki.key_file)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield httpd.server_address[1], pki
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_the_servers_log_holds_no_secret_even_when_the_api_server_echoes_them(
    tmp_path: Path, start: Callable[..., ServerProcess], echoing_api: tuple[int, Pki]
) -> None:
    """The token reaches the server through the kubeconfig, the API server echoes it back in
    every error, and clients send Authorization headers; the log (debug level) says none."""
    api_port, api_pki = echoing_api
    pki = Pki(tmp_path / "pki")
    kubeconfig = kubeconfig_for(tmp_path / "kubeconfig", api_port)
    config = orjson.loads(kubeconfig.read_text())
    config["clusters"][0]["cluster"]["certificate-authority"] = str(api_pki.ca_file)
    config["users"][0]["user"] = {"token": OPAQUE}
    kubeconfig.write_bytes(orjson.dumps(config))
    server = start(
        [*tls_args(pki), "--kubeconfig", str(kubeconfig), "--log-level", "debug"], pki.ca_file
    )
    server.wait_ready(timeout=30)
    with server.client() as client:
        for uid, name in (("a", f"Bearer {OPAQUE}"), ("b", TOKEN), ("c", "web")):
            document = review(uid=uid)
            document["request"]["object"]["metadata"]["name"] = name
            response = post(
                client,
                document,
                headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
            )
            assert response.status_code == 200
        client.post("/mutate", content=b"{", headers={"Authorization": f"Basic {BASIC}"})
    server.wait_for_log(uid="c")
    text = server.stderr()
    assert "forbidden" in text or "cannot read" in text or "namespace" in text  # it did log
    for secret in [*secrets(pki), *secrets(api_pki)]:
        assert secret not in text, secret
    assert server.stop() == 0
    text = server.stderr()
    for secret in [*secrets(pki), *secrets(api_pki)]:
        assert secret not in text, secret
