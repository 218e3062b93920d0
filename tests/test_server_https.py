"""The HTTPS admission server, end to end: `python -m webhook serve` as a real process.

Every test talks TLS to 127.0.0.1 with certificates from webhook.certs, reads the server's
JSON log lines from its stderr and its metrics from the plain-HTTP metrics port. Every
wait is bounded. No cluster is configured (KUBECONFIG points at a missing file).
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import os
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonpatch
import orjson
import pytest
from cryptography import x509
from prometheus_client.parser import text_string_to_metric_families

from webhook import certs

from .pki import client_certificate

REPO = Path(__file__).resolve().parent.parent
MAX_BODY = 3 * 1024 * 1024

pytestmark = pytest.mark.timeout(90)


# --- helpers ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Pki:
    """A CA and a serving pair for 127.0.0.1/localhost in `directory` (tls.crt, tls.key, ca.crt)."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.ca = certs.generate_ca()
        self.ca_file, _ = certs.write_pair(directory, "ca", self.ca)
        self.serving = self.new_serving()
        self.cert_file, self.key_file = certs.write_pair(directory, "tls", self.serving)

    def new_serving(self, days: int = 30) -> certs.KeyPair:
        return certs.generate_serving(self.ca, ["localhost"], ["127.0.0.1"], days=days)

    def client_context(self, **versions: ssl.TLSVersion) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        for attribute, version in versions.items():
            setattr(context, attribute, version)
        return context


def serial_of(pair: certs.KeyPair) -> int:
    return x509.load_pem_x509_certificate(pair.cert_pem).serial_number


def peer_serial(sock: ssl.SSLSocket) -> int:
    der = sock.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def clean_env(home: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT", "POD_NAMESPACE"}
    }
    env.update(PYTHONPATH=str(REPO), KUBECONFIG=str(home / "no-such-kubeconfig"), HOME=str(home))
    return env


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class ServerProcess:
    """`python -m webhook serve` on free ports; stdout and stderr go to files."""

    def __init__(
        self,
        workdir: Path,
        args: list[str],
        ca_file: Path | None,
        env: dict[str, str] | None = None,
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.port, self.metrics_port = free_port(), free_port()
        self.ca_file = ca_file
        self.stdout_path, self.stderr_path = workdir / "stdout.txt", workdir / "stderr.txt"
        command = [sys.executable, "-m", "webhook", "serve", "--host", "127.0.0.1"]
        command += ["--port", str(self.port), "--metrics-port", str(self.metrics_port), *args]
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.spawned = time.monotonic()
            self.proc = subprocess.Popen(
                command,
                cwd=workdir,
                env={**clean_env(workdir), **(env or {})},
                stdout=out,
                stderr=err,
            )
        self.ready_after: float | None = None

    def context(self) -> ssl.SSLContext:
        assert self.ca_file is not None
        return ssl.create_default_context(cafile=str(self.ca_file))

    def get(self, path: str) -> tuple[int, bytes]:
        conn = http.client.HTTPSConnection(
            "127.0.0.1", self.port, context=self.context(), timeout=5
        )
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def wait_ready(self, timeout: float = 20) -> float:
        """Seconds from spawn to the first 200 from /readyz."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}: {self.stderr()}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                if self.get("/readyz")[0] == 200:
                    self.ready_after = time.monotonic() - self.spawned
                    return self.ready_after
            time.sleep(0.005)
        raise AssertionError(f"not ready after {timeout} s: {self.stderr()}")

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=f"https://127.0.0.1:{self.port}", verify=self.context(), timeout=10
        )

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def logs(self) -> list[dict[str, Any]]:
        text = self.stderr_path.read_bytes()
        complete = text[: text.rfind(b"\n") + 1]
        return [orjson.loads(line) for line in complete.splitlines() if line.strip()]

    def wait_for_log(self, timeout: float = 15, **fields: Any) -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            for line in self.logs():
                if all(line.get(k) == v for k, v in fields.items()):
                    return line
            return None

        found: dict[str, Any] = wait_for(find, timeout, f"a log line with {fields}")
        return found

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def stop(self, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError("server did not stop after SIGTERM") from None


def tls_args(pki: Pki) -> list[str]:
    return ["--tls-cert", str(pki.cert_file), "--tls-key", str(pki.key_file)]


def pod(name: str = "web-7d9c-x2x", **annotations: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "web-7d9c-",
            "namespace": "shop",
            "annotations": annotations,
            "ownerReferences": [{"kind": "ReplicaSet", "name": "web-7d9c", "uid": "1"}],
        },
        "spec": {
            "containers": [{"name": "app", "image": "nginx", "ports": [{"containerPort": 80}]}]
        },
    }


def review(uid: str = "uid-1", api_version: str = "admission.k8s.io/v1", **fields: Any) -> Any:
    request = {
        "uid": uid,
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "operation": "CREATE",
        "namespace": "shop",
        "dryRun": False,
        "object": pod(),
        **fields,
    }
    return {"apiVersion": api_version, "kind": "AdmissionReview", "request": request}


JSON = {"Content-Type": "application/json"}


def post(client: httpx.Client, document: Any, **kwargs: Any) -> httpx.Response:
    kwargs.setdefault("headers", JSON)
    return client.post("/mutate", content=orjson.dumps(document), **kwargs)


def patched_pod(answer: dict[str, Any], original: dict[str, Any]) -> dict[str, Any]:
    ops = orjson.loads(base64.b64decode(answer["response"]["patch"], validate=True))
    result: dict[str, Any] = jsonpatch.apply_patch(original, ops)
    return result


def prestop_sleep(answer: dict[str, Any]) -> int:
    container = patched_pod(answer, pod())["spec"]["containers"][0]
    seconds: int = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    return seconds


def assert_serving(server: ServerProcess) -> None:
    with server.client() as client:
        response = post(client, review(uid="still-serving"))
    assert response.status_code == 200
    assert response.json()["response"]["uid"] == "still-serving"


def raw_tls(server: ServerProcess, context: ssl.SSLContext | None = None) -> ssl.SSLSocket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    return (context or server.context()).wrap_socket(sock, server_hostname="127.0.0.1")


def read_response(sock: ssl.SSLSocket) -> http.client.HTTPResponse:
    response = http.client.HTTPResponse(sock)
    response.begin()
    return response


# --- one shared server for the request/response tests --------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Pki]]:
    base = tmp_path_factory.mktemp("served")
    pki = Pki(base / "pki")
    server = ServerProcess(base / "server", tls_args(pki), pki.ca_file)
    try:
        print(f"\nstartup to ready: {server.wait_ready() * 1000:.0f} ms")
        yield server, pki
    finally:
        if server.proc.poll() is None:
            server.proc.send_signal(signal.SIGINT)
            server.proc.send_signal(signal.SIGINT)
            try:
                server.proc.wait(10)
            except subprocess.TimeoutExpired:
                server.proc.kill()
                server.proc.wait(5)


@pytest.fixture
def server(served: tuple[ServerProcess, Pki]) -> ServerProcess:
    return served[0]


def test_review_is_answered_with_a_patch_that_applies(server: ServerProcess) -> None:
    with server.client() as client:
        response = post(client, review(uid="round-trip"))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    answer = response.json()
    assert answer["apiVersion"] == "admission.k8s.io/v1"
    assert answer["kind"] == "AdmissionReview"
    assert answer["response"]["uid"] == "round-trip"
    assert answer["response"]["allowed"] is True
    assert answer["response"]["patchType"] == "JSONPatch"
    assert "warnings" not in answer["response"]  # no cluster: no "namespace unreadable" warning
    assert prestop_sleep(answer) == 5


def test_v1beta1_is_answered_in_kind(server: ServerProcess) -> None:
    with server.client() as client:
        response = post(client, review(uid="beta", api_version="admission.k8s.io/v1beta1"))
    assert response.status_code == 200
    assert response.json()["apiVersion"] == "admission.k8s.io/v1beta1"
    assert response.json()["response"]["uid"] == "beta"


def test_dry_run_and_query_parameters_get_the_same_answer(server: ServerProcess) -> None:
    with server.client() as client:
        wet = post(client, review(uid="same")).json()
        dry = client.post(
            "/mutate?timeout=2s",
            content=orjson.dumps(review(uid="same", dryRun=True)),
            headers=JSON,
        )
    assert dry.status_code == 200
    assert dry.json() == wet


def test_skipped_operation_is_allowed_without_patch(server: ServerProcess) -> None:
    with server.client() as client:
        response = post(client, review(uid="upd", operation="UPDATE", oldObject=pod()))
    assert response.status_code == 200
    assert response.json()["response"] == {"uid": "upd", "allowed": True}


def test_json_content_types_are_accepted(server: ServerProcess) -> None:
    body = orjson.dumps(review(uid="ct"))
    with server.client() as client:
        for headers in (
            {"Content-Type": "application/json; charset=utf-8"},
            {"Content-Type": "Application/JSON"},
            {},  # no Content-Type at all
        ):
            response = client.post("/mutate", content=body, headers=headers)
            assert response.status_code == 200, headers
            assert response.json()["response"]["uid"] == "ct"


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/yaml", "application/x-www-form-urlencoded"]
)
def test_other_content_types_get_415(server: ServerProcess, content_type: str) -> None:
    with server.client() as client:
        response = client.post(
            "/mutate", content=orjson.dumps(review()), headers={"Content-Type": content_type}
        )
    assert response.status_code == 415
    assert "application/json" in response.json()["error"]
    assert_serving(server)


@pytest.mark.parametrize(
    ("case", "body"),
    [
        ("not JSON", b"{this is not json"),
        ("empty", b""),
        ("not an object", b"[1, 2]"),
        ("not an AdmissionReview", orjson.dumps({"apiVersion": "v1", "kind": "Pod"})),
        (
            "no request",
            orjson.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}),
        ),
        ("no uid", orjson.dumps(review(uid=""))),
        ("deeply nested", b"[" * 50_000 + b"]" * 50_000),
    ],
)
def test_bad_bodies_get_400_with_a_json_error(
    server: ServerProcess, case: str, body: bytes
) -> None:
    with server.client() as client:
        response = client.post("/mutate", content=body, headers=JSON)
    assert response.status_code == 400, case
    assert response.headers["content-type"] == "application/json"
    assert isinstance(response.json()["error"], str) and response.json()["error"]
    assert_serving(server)


def test_body_of_exactly_the_limit_is_served(server: ServerProcess) -> None:
    body = orjson.dumps(review(uid="at-limit"))
    body += b" " * (MAX_BODY - len(body))
    assert len(body) == MAX_BODY
    with server.client() as client:
        response = client.post("/mutate", content=body, headers=JSON)
    assert response.status_code == 200
    assert response.json()["response"]["uid"] == "at-limit"


def test_declared_length_over_the_limit_gets_413_before_the_body(server: ServerProcess) -> None:
    with contextlib.closing(raw_tls(server)) as sock:
        sock.sendall(
            b"POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {MAX_BODY + 1}\r\n\r\n".encode()
        )
        response = read_response(sock)  # no body was sent: the answer cannot wait for it
        assert response.status == 413
        assert "error" in orjson.loads(response.read())
        assert response.getheader("connection") == "close"
    assert_serving(server)


def test_chunked_body_over_the_limit_gets_413(server: ServerProcess) -> None:
    chunk = b"x" * 65536
    with contextlib.closing(raw_tls(server)) as sock:
        sock.sendall(
            b"POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        sent = 0
        while sent <= MAX_BODY:
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sent += len(chunk)
        response = read_response(sock)  # no terminating chunk: the server stops reading first
        assert response.status == 413
        assert "error" in orjson.loads(response.read())
    assert_serving(server)


def test_healthz_and_readyz(server: ServerProcess) -> None:
    assert server.get("/healthz") == (200, b'{"alive":true}')
    status, body = server.get("/readyz")
    assert status == 200 and orjson.loads(body) == {"ready": True}


def test_no_api_docs_on_the_admission_port(server: ServerProcess) -> None:
    for path in ("/docs", "/openapi.json", "/redoc"):
        assert server.get(path)[0] == 404


def test_one_json_log_line_per_review(server: ServerProcess) -> None:
    with server.client() as client:
        assert post(client, review(uid="logged-review")).status_code == 200
    line = server.wait_for_log(uid="logged-review")
    assert line["event"] == "review"
    assert line["namespace"] == "shop"
    assert line["name"] == "web-7d9c-"
    assert (line["owner_kind"], line["owner_name"]) == ("ReplicaSet", "web-7d9c")
    assert line["operation"] == "CREATE"
    assert line["outcome"] == "mutated"
    assert line["features"] == ["prestop"]
    assert line["warnings"] == 0
    assert 0 < line["duration_ms"] < 1000
    assert sum(1 for entry in server.logs() if entry.get("uid") == "logged-review") == 1


def test_warnings_reach_the_client_and_the_log(server: ServerProcess) -> None:
    document = review(uid="warned")
    document["request"]["object"] = pod(**{"lifecycle-webhook.io/prestop-seconds": "ten"})
    with server.client() as client:
        answer = post(client, document).json()
    warnings = answer["response"]["warnings"]
    assert warnings and all(w.startswith("lifecycle-webhook: ") for w in warnings)
    assert server.wait_for_log(uid="warned")["warnings"] == len(warnings)


def test_metrics_are_exported_on_the_metrics_port(served: tuple[ServerProcess, Pki]) -> None:
    server, pki = served
    with server.client() as client:
        post(client, review(uid="m1"))
        post(client, review(uid="m2", operation="DELETE", object=None))
        client.post("/mutate", content=b"junk", headers=JSON)
    samples = server.metrics()
    names = {name for name, _ in samples}
    for required in (
        "lifecycle_webhook_admission_requests_total",
        "lifecycle_webhook_admission_duration_seconds_bucket",
        "lifecycle_webhook_admission_duration_seconds_count",
        "lifecycle_webhook_mutations_total",
        "lifecycle_webhook_certificate_expiry_timestamp_seconds",
        "lifecycle_webhook_config_reloads_total",
    ):
        assert required in names, required

    def value(name: str, **labels: str) -> float:
        return samples[name, tuple(sorted(labels.items()))]

    requests = "lifecycle_webhook_admission_requests_total"
    assert value(requests, operation="CREATE", outcome="mutated") >= 1
    assert value(requests, operation="DELETE", outcome="skipped") >= 1
    assert value(requests, operation="other", outcome="invalid") >= 1
    assert value("lifecycle_webhook_mutations_total", feature="prestop") >= 1
    assert value("lifecycle_webhook_admission_duration_seconds_bucket", le="0.0005") >= 0
    assert value("lifecycle_webhook_admission_duration_seconds_count") >= 3
    expiry = certs.not_after(pki.serving.cert_pem).timestamp()
    assert value("lifecycle_webhook_certificate_expiry_timestamp_seconds") == expiry
    assert httpx.get(f"http://127.0.0.1:{server.metrics_port}/other", timeout=5).status_code == 404


def test_warnings_metric_counts_by_reason(server: ServerProcess) -> None:
    document = review(uid="warned-metric")
    document["request"]["object"] = pod(**{"lifecycle-webhook.io/no-such-key": "1"})
    with server.client() as client:
        assert post(client, document).json()["response"]["warnings"]
    reasons = [
        labels
        for (name, labels), count in server.metrics().items()
        if name == "lifecycle_webhook_warnings_total" and count >= 1
    ]
    assert reasons, "no warnings_total sample after a warning"


def tls_1_1_client(pki: Pki) -> ssl.SSLContext:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context = pki.client_context()
        context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let OpenSSL offer TLS 1.1 at all
    return context


def test_tls_1_1_client_works_against_a_server_that_allows_it(tmp_path: Path) -> None:
    """Control for the next test: its TLS 1.1 client really speaks TLS 1.1 here."""
    pki = Pki(tmp_path / "pki")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        permissive = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        permissive.minimum_version = ssl.TLSVersion.TLSv1_1
    permissive.set_ciphers("DEFAULT:@SECLEVEL=0")
    permissive.load_cert_chain(pki.cert_file, pki.key_file)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)
        versions: list[str | None] = []

        def accept() -> None:
            conn, _ = listener.accept()
            with contextlib.closing(permissive.wrap_socket(conn, server_side=True)) as tls:
                versions.append(tls.version())

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        sock = socket.create_connection(listener.getsockname(), timeout=10)
        with contextlib.closing(
            tls_1_1_client(pki).wrap_socket(sock, server_hostname="127.0.0.1")
        ) as tls:
            assert tls.version() == "TLSv1.1"
        thread.join(10)
    assert versions == ["TLSv1.1"]


def test_tls_1_1_is_refused_and_1_2_and_1_3_are_accepted(served: tuple[ServerProcess, Pki]) -> None:
    server, pki = served
    with pytest.raises(ssl.SSLError) as refused:
        raw_tls(server, tls_1_1_client(pki)).close()
    assert "no protocols available" not in str(refused.value).lower()  # it was offered

    for version, name in ((ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3")):
        context = pki.client_context(minimum_version=version, maximum_version=version)
        with contextlib.closing(raw_tls(server, context)) as sock:
            assert sock.version() == name
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert read_response(sock).status == 200


def test_idle_keep_alive_connection_outlives_uvicorns_default(server: ServerProcess) -> None:
    """uvicorn closes idle connections after 5 s by default; the API server keeps them 90 s."""
    conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=server.context())
    try:
        conn.request("GET", "/healthz")
        assert conn.getresponse().read()
        sock = conn.sock
        time.sleep(6.5)
        conn.request("GET", "/healthz")
        assert conn.getresponse().status == 200
        assert conn.sock is sock  # same TCP connection, not a silent reconnect
    finally:
        conn.close()


# --- a bug inside the server: 500, never a denial -----------------------------------------


class BrokenNamespaces:
    """A namespace source with a bug: every lookup raises."""

    def lookup(self, name: str) -> None:
        raise RuntimeError("namespace source bug")

    def peek(self, name: str) -> None:
        raise RuntimeError("namespace source bug")


def test_unexpected_exception_is_http_500_and_the_server_keeps_serving(tmp_path: Path) -> None:
    import uvicorn

    from webhook.app import ServerState, create_app
    from webhook.core.model import Config
    from webhook.logs import JsonLog
    from webhook.metrics import Metrics
    from webhook.tls import CertificateReloader

    pki = Pki(tmp_path / "pki")
    log_path = tmp_path / "log.jsonl"
    with log_path.open("wb") as log_file:
        log = JsonLog(fd=log_file.fileno())
        metrics = Metrics()
        state = ServerState(
            config=Config(), namespaces=BrokenNamespaces(), metrics=metrics, log=log
        )
        state.certificates_loaded = state.version_resolved = True
        reloader = CertificateReloader(pki.cert_file, pki.key_file, None, log=log, metrics=metrics)
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(state),
                host="127.0.0.1",
                port=port,
                lifespan="off",
                log_config=None,
                ssl_context_factory=lambda _c, _d: reloader.listening_context,
            )
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        try:
            wait_for(lambda: server.started, 15, "the in-process server")
            with httpx.Client(
                base_url=f"https://127.0.0.1:{port}", verify=pki.client_context(), timeout=10
            ) as client:
                broken = post(client, review(uid="hits-the-bug"))
                assert broken.status_code == 500
                assert "allowed" not in broken.text
                assert broken.json()["error"]
                skipped = post(client, review(uid="no-lookup", operation="DELETE", object=None))
                assert skipped.status_code == 200
                assert skipped.json()["response"] == {"uid": "no-lookup", "allowed": True}
        finally:
            server.should_exit = True
            thread.join(15)
    lines = [orjson.loads(line) for line in log_path.read_bytes().splitlines()]
    error = next(line for line in lines if line.get("uid") == "hits-the-bug")
    assert error["outcome"] == "error" and error["status"] == 500 and error["level"] == "error"
    assert "namespace source bug" in error["error"]
    assert "in peek" in error["traceback"]
    assert metrics.requests.labels("CREATE", "error")._value.get() == 1


# --- TLS: client certificates, rotation ---------------------------------------------------


def client_pair(ca: certs.KeyPair, directory: Path) -> tuple[Path, Path]:
    """A client certificate (EKU clientAuth) signed by `ca`, as the API server would present."""
    cert_pem, key_pem = client_certificate(ca.cert_pem, ca.key_pem, "kube-apiserver")
    return certs.write_pair(directory, "client", certs.KeyPair(cert_pem, key_pem))


def test_client_ca_mode_requires_a_client_certificate_from_that_ca(
    tmp_path: Path, start: Callable[..., ServerProcess]
) -> None:
    pki = Pki(tmp_path / "pki")
    client_ca = certs.generate_ca(common_name="api-server-client-ca")
    client_ca_file, _ = certs.write_pair(tmp_path / "client-ca", "ca", client_ca)
    good_cert, good_key = client_pair(client_ca, tmp_path / "good")
    stranger_cert, stranger_key = client_pair(certs.generate_ca(), tmp_path / "stranger")
    server = start([*tls_args(pki), "--client-ca", str(client_ca_file)], pki.ca_file)

    with_cert = pki.client_context()
    with_cert.load_cert_chain(good_cert, good_key)
    with httpx.Client(
        base_url=f"https://127.0.0.1:{server.port}", verify=with_cert, timeout=10
    ) as client:
        wait_for(lambda: _ready(client), 20, "readiness with a client certificate")
        response = post(client, review(uid="mtls"))
        assert response.status_code == 200
        assert response.json()["response"]["uid"] == "mtls"

    stranger = pki.client_context()
    stranger.load_cert_chain(stranger_cert, stranger_key)
    for context in (pki.client_context(), stranger):
        with (
            pytest.raises(httpx.TransportError),
            httpx.Client(
                base_url=f"https://127.0.0.1:{server.port}", verify=context, timeout=10
            ) as client,
        ):
            post(client, review(uid="refused"))
    assert not any(line.get("uid") == "refused" for line in server.logs())


def _ready(client: httpx.Client) -> bool:
    with contextlib.suppress(httpx.TransportError):
        return client.get("/readyz").status_code == 200
    return False


def new_connection_serial(server: ServerProcess) -> int:
    with contextlib.closing(raw_tls(server)) as sock:
        return peer_serial(sock)


def test_rotated_certificate_is_served_to_new_connections_without_dropping_old_ones(
    tmp_path: Path, start: Callable[..., ServerProcess]
) -> None:
    pki = Pki(tmp_path / "pki")
    server = start(tls_args(pki), pki.ca_file)
    server.wait_ready()
    old_serial = serial_of(pki.serving)
    assert new_connection_serial(server) == old_serial

    kept = http.client.HTTPSConnection("127.0.0.1", server.port, context=server.context())
    try:
        kept.request("GET", "/healthz")
        assert kept.getresponse().read()
        kept_sock = kept.sock
        assert isinstance(kept_sock, ssl.SSLSocket)

        rotated = pki.new_serving(days=60)
        certs.write_pair(pki.directory, "tls", rotated)  # each file replaced atomically
        wait_for(
            lambda: new_connection_serial(server) == serial_of(rotated), 15, "the new certificate"
        )
        kept.request("GET", "/healthz")
        assert kept.getresponse().status == 200
        assert kept.sock is kept_sock and peer_serial(kept_sock) == old_serial
    finally:
        kept.close()
    line = server.wait_for_log(event="cert reloaded")
    assert line["serial"] == f"{serial_of(rotated):x}"
    expiry = server.metrics()["lifecycle_webhook_certificate_expiry_timestamp_seconds", ()]
    assert expiry == certs.not_after(rotated.cert_pem).timestamp()
    assert_serving(server)


def test_mismatched_new_pair_keeps_the_old_certificate_and_logs_an_error(
    tmp_path: Path, start: Callable[..., ServerProcess]
) -> None:
    pki = Pki(tmp_path / "pki")
    server = start(tls_args(pki), pki.ca_file)
    server.wait_ready()
    old_serial = serial_of(pki.serving)

    one, two = pki.new_serving(), pki.new_serving()
    certs.write_pair(pki.directory, "tls", certs.KeyPair(one.cert_pem, two.key_pem))
    failed = server.wait_for_log(event="cert reload failed")
    assert failed["level"] == "error" and failed["serving_serial"] == f"{old_serial:x}"
    for _ in range(3):
        assert new_connection_serial(server) == old_serial
    assert_serving(server)
    errors = server.metrics()["lifecycle_webhook_certificate_reloads_total", (("result", "error"),)]
    assert errors == 1

    good = pki.new_serving()  # a later good pair is picked up: the reloader is not stuck
    certs.write_pair(pki.directory, "tls", good)
    wait_for(lambda: new_connection_serial(server) == serial_of(good), 15, "the good pair")


# --- configuration reload -----------------------------------------------------------------


def test_config_file_change_is_picked_up_and_a_bad_one_keeps_the_old(
    tmp_path: Path, start: Callable[..., ServerProcess]
) -> None:
    pki = Pki(tmp_path / "pki")
    config = tmp_path / "config.yaml"
    config.write_text("prestopSeconds: 7\n")
    server = start([*tls_args(pki), "--config", str(config)], pki.ca_file)
    server.wait_ready()
    with server.client() as client:
        assert prestop_sleep(post(client, review()).json()) == 7

        replacement = tmp_path / "config.yaml.new"
        replacement.write_text('{"prestopSeconds": 9}')  # JSON is accepted too
        replacement.replace(config)
        server.wait_for_log(event="config reloaded")
        assert prestop_sleep(post(client, review()).json()) == 9

        replacement.write_text("prestopSeconds: soon\nnoSuchKey: 1\n")
        replacement.replace(config)
        failed = server.wait_for_log(event="config reload failed")
        assert failed["level"] == "error"
        assert any("prestopSeconds" in p for p in failed["problems"])
        assert any("noSuchKey" in p for p in failed["problems"])
        assert prestop_sleep(post(client, review()).json()) == 9

    samples = server.metrics()
    assert samples["lifecycle_webhook_config_reloads_total", (("result", "success"),)] == 1
    assert samples["lifecycle_webhook_config_reloads_total", (("result", "error"),)] == 1


# --- namespaces and the cluster ------------------------------------------------------------


def test_the_webhooks_own_namespace_is_never_mutated(
    tmp_path: Path, start: Callable[..., ServerProcess]
) -> None:
    pki = Pki(tmp_path / "pki")
    config = tmp_path / "config.yaml"
    config.write_text("excludedNamespaces: [other]\n")  # an explicit list does not drop it
    server = start(
        [*tls_args(pki), "--config", str(config)], pki.ca_file, env={"POD_NAMESPACE": "shop"}
    )
    server.wait_ready()
    with server.client() as client:
        own = post(client, review(uid="own")).json()["response"]
        listed = post(client, review(uid="other", namespace="other")).json()["response"]
        elsewhere = post(client, review(uid="else", namespace="apps")).json()["response"]
    assert "patch" not in own and own["allowed"] is True
    assert "patch" not in listed
    assert "patch" in elsewhere


def kubeconfig_for(path: Path, port: int) -> Path:
    path.write_text(
        orjson.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "k", "cluster": {"server": f"https://127.0.0.1:{port}"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
                "current-context": "c",
            }
        ).decode()
    )
    return path


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def test_by_default_it_listens_on_ipv4_and_ipv6(
    tmp_path: Path, start: Callable[..., ServerProcess]
) -> None:
    """An IPv6-only cluster must reach the webhook as a dual-stack or IPv4 one does."""
    import argparse

    from webhook.server import ALL_INTERFACES, add_serve_arguments

    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    assert parser.parse_args([]).host == ALL_INTERFACES
    pki = Pki(tmp_path / "pki")
    server = start([*tls_args(pki), f"--host={ALL_INTERFACES}"], pki.ca_file)
    server.wait_ready()  # over 127.0.0.1
    assert httpx.get(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5).is_success
    if ipv6_loopback():  # a kernel without IPv6 gets the IPv4-only fallback, checked above
        context = ssl.create_default_context(cafile=str(pki.ca_file))
        context.check_hostname = False  # the test certificate names 127.0.0.1, not ::1
        conn = http.client.HTTPSConnection("::1", server.port, context=context, timeout=5)
        try:
            conn.request("GET", "/readyz")
            assert conn.getresponse().status == 200
        finally:
            conn.close()
        assert httpx.get(f"http://[::1]:{server.metrics_port}/metrics", timeout=5).is_success


def test_not_ready_until_the_cluster_version_is_resolved(
    tmp_path: Path, start: Callable[..., ServerProcess]
) -> None:
    """An API server that accepts connections and never answers: /version times out (~2 s)."""
    pki = Pki(tmp_path / "pki")
    with socket.create_server(("127.0.0.1", 0), backlog=64) as silent:  # never accepts
        kubeconfig = kubeconfig_for(tmp_path / "kubeconfig", silent.getsockname()[1])
        server = start([*tls_args(pki), "--kubeconfig", str(kubeconfig)], pki.ca_file)
        server.wait_for_log(event="started")
        status, body = server.get("/readyz")
        assert status == 503
        assert orjson.loads(body)["reasons"] == ["cluster version not resolved"]
        server.wait_ready(timeout=20)
        unknown = server.wait_for_log(event="cluster version unknown")
        assert unknown["assuming"] == "1.37"


def test_a_failed_version_read_is_retried_until_the_cluster_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Assuming the newest version on an old cluster would make hooks it rejects: a version
    read that fails at start is retried, and the version found then is used."""
    from webhook import server as server_module
    from webhook.app import ServerState
    from webhook.cluster.api import ApiError
    from webhook.cluster.namespaces import StaticNamespaces
    from webhook.core.model import Config
    from webhook.logs import JsonLog
    from webhook.metrics import Metrics

    monkeypatch.setattr(server_module, "VERSION_RETRY_SECONDS", 0.05)
    answers: list[Any] = [ApiError("down")] * 5 + [{"major": "1", "minor": "29"}]

    class FlakyVersion:
        url = "https://flaky"

        def get(self, path: str, timeout: float) -> Any:
            answer = answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer

    state = ServerState(Config(), StaticNamespaces({}), Metrics(), JsonLog("error"))
    starter = server_module._resolve_cluster_version(state, FlakyVersion(), JsonLog("error"))  # type: ignore[arg-type]
    starter()
    deadline = time.monotonic() + 10
    while state.cluster_version != (1, 29):
        assert time.monotonic() < deadline, f"still {state.cluster_version}"
        time.sleep(0.05)
    assert state.version_resolved
    assert answers == []


def test_unreachable_cluster_is_logged_once_and_pods_are_served_without_warnings(
    tmp_path: Path, start: Callable[..., ServerProcess]
) -> None:
    pki = Pki(tmp_path / "pki")
    kubeconfig = kubeconfig_for(tmp_path / "kubeconfig", free_port())  # nothing listens
    server = start([*tls_args(pki), "--kubeconfig", str(kubeconfig)], pki.ca_file)
    server.wait_ready()
    unknown = server.wait_for_log(event="cluster version unknown")
    assert unknown["assuming"] == "1.37"
    server.wait_for_log(event="cluster not reachable")
    with server.client() as client:
        for uid in ("a", "b", "c"):
            response = post(client, review(uid=uid)).json()["response"]
            assert "patch" in response and "warnings" not in response
    assert sum(1 for x in server.logs() if x["event"] == "cluster not reachable") == 1


def test_in_cluster_connection_uses_the_service_account_and_rereads_its_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pod's own API connection: service host/port from env, CA and token from files."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from webhook.cluster import api as cluster_api

    pki = Pki(tmp_path / "pki")
    seen: list[str | None] = []

    class FakeVersionEndpoint(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization"))
            body = b'{"major": "1", "minor": "31+", "gitVersion": "v1.31.4-gke.1"}'
            self.send_response(200 if self.path == "/version" else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "ca.crt").write_bytes(pki.ca.cert_pem)
    (account / "token").write_text("first-token\n")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeVersionEndpoint)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(pki.cert_file, pki.key_file)
    httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        monkeypatch.setattr(cluster_api, "SERVICE_ACCOUNT_DIR", account)
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(httpd.server_address[1]))
        api = cluster_api.connect(None)
        assert api is not None
        assert cluster_api.detect_cluster_version(api) == (1, 31)
        (account / "token").write_text("rotated-token")
        assert cluster_api.detect_cluster_version(api) == (1, 31)
        with pytest.raises(cluster_api.ApiError) as missing:
            api.get("/api/v1/namespaces/nope", 2)
        assert missing.value.status == 404
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert seen == ["Bearer first-token", "Bearer rotated-token", "Bearer rotated-token"]


# --- SIGTERM ------------------------------------------------------------------------------


def test_sigterm_drains_then_exits_0(tmp_path: Path, start: Callable[..., ServerProcess]) -> None:
    pki = Pki(tmp_path / "pki")
    drain = 2.0
    server = start([*tls_args(pki), "--drain-seconds", str(drain)], pki.ca_file)
    server.wait_ready()
    body = orjson.dumps(review(uid="in-flight"))
    half = len(body) // 2

    with contextlib.closing(raw_tls(server)) as in_flight:
        in_flight.sendall(
            b"POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body[:half]
        )
        time.sleep(0.3)
        server.proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        server.wait_for_log(event="draining")

        status, reasons = server.get("/readyz")  # a new connection, during the drain
        assert status == 503 and "shutting down" in orjson.loads(reasons)["reasons"]
        with server.client() as client:
            during = post(client, review(uid="during-drain"))
        assert during.status_code == 200
        assert during.json()["response"]["uid"] == "during-drain"
        assert during.headers["connection"] == "close"  # clients move to other replicas
        assert server.proc.poll() is None

        wait_for(lambda: time.monotonic() - signalled > drain + 0.6, drain + 5, "the drain end")
        with pytest.raises(ConnectionRefusedError):  # the listener is closed after the drain ...
            socket.create_connection(("127.0.0.1", server.port), timeout=2).close()
        assert server.proc.poll() is None  # ... but the process waits for the in-flight review

        in_flight.sendall(body[half:])
        response = read_response(in_flight)
        assert response.status == 200
        assert orjson.loads(response.read())["response"]["uid"] == "in-flight"

    assert server.proc.wait(15) == 0
    assert time.monotonic() - signalled >= drain
    server.wait_for_log(event="stopped")


def test_second_signal_exits_promptly(tmp_path: Path, start: Callable[..., ServerProcess]) -> None:
    pki = Pki(tmp_path / "pki")
    server = start([*tls_args(pki), "--drain-seconds", "60"], pki.ca_file)
    server.wait_ready()
    server.proc.send_signal(signal.SIGTERM)
    server.wait_for_log(event="draining")
    server.proc.send_signal(signal.SIGINT)
    started = time.monotonic()
    server.proc.wait(10)
    assert time.monotonic() - started < 5
    server.wait_for_log(event="exiting now")


# --- out of the box, startup, flags -------------------------------------------------------


def test_self_signed_mode_prints_the_ca_bundle_and_serves_with_it(
    start: Callable[..., ServerProcess],
) -> None:
    server = start(["--drain-seconds", "0"], None)
    line = wait_for(
        lambda: next((x for x in server.stdout().splitlines() if x.startswith("CA bundle: ")), ""),
        20,
        "the CA bundle line",
    )
    ca_file = Path(line.removeprefix("CA bundle: "))
    assert ca_file.is_file()
    server.ca_file = ca_file
    print(f"\nself-signed startup to ready: {server.wait_ready() * 1000:.0f} ms")
    context = ssl.create_default_context(cafile=str(ca_file))
    for hostname in ("localhost", "127.0.0.1"):  # both names are in the certificate
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        with contextlib.closing(context.wrap_socket(sock, server_hostname=hostname)) as tls:
            body = orjson.dumps(review(uid=hostname))
            tls.sendall(
                b"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            response = read_response(tls)
            assert response.status == 200
            assert orjson.loads(response.read())["response"]["uid"] == hostname
    assert server.stop() == 0
    assert not ca_file.exists()  # the throwaway directory is removed on exit


def test_startup_time_to_ready_is_measured(
    tmp_path: Path, start: Callable[..., ServerProcess]
) -> None:
    """Reported, not asserted: timing belongs to the benchmark (SPEC 7 asks for <= 500 ms)."""
    pki = Pki(tmp_path / "pki")
    spawn_to_ready, in_process = [], []
    for _ in range(3):
        server = start([*tls_args(pki), "--drain-seconds", "0"], pki.ca_file)
        spawn_to_ready.append(server.wait_ready() * 1000)
        in_process.append(server.wait_for_log(event="started")["startup_ms"])
        assert server.stop() == 0
    print(
        f"\nstartup to ready (spawn -> first 200 from /readyz): "
        f"median {statistics.median(spawn_to_ready):.0f} ms, runs {spawn_to_ready!r}; "
        f"run_serve -> listening: median {statistics.median(in_process):.0f} ms"
    )
    assert all(ms > 0 for ms in spawn_to_ready)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tls-cert", "{cert}"], "--tls-key"),
        (["--tls-key", "{key}"], "--tls-cert"),
        (["--cluster-version", "2.x"], "--cluster-version"),
        (["--config", "{missing}"], "no such file"),
        (["--config", "{bad_config}"], "prestopSeconds"),
        (["--tls-cert", "{key}", "--tls-key", "{cert}"], "TLS"),
        (["--max-body-bytes", "0"], "--max-body-bytes"),
        (["--max-connections", "0"], "--max-connections"),
        (["--header-timeout", "0"], "--header-timeout"),
        (["--body-timeout", "-1"], "--body-timeout"),
        (["--handshake-timeout", "99999"], "--handshake-timeout"),
        (
            ["--tls-cert", "{cert}", "--tls-key", "{key}", "--kubeconfig", "{missing}"],
            "--kubeconfig",
        ),
    ],
)
def test_bad_flags_and_files_exit_2_with_a_message(
    tmp_path: Path, args: list[str], message: str
) -> None:
    pki = Pki(tmp_path / "pki")
    bad_config = tmp_path / "bad.yaml"
    bad_config.write_text("prestopSeconds: -1\n")
    values = {
        "cert": pki.cert_file,
        "key": pki.key_file,
        "missing": tmp_path / "missing.yaml",
        "bad_config": bad_config,
    }
    command = [sys.executable, "-m", "webhook", "serve", "--port", str(free_port())]
    command += ["--metrics-port", str(free_port()), *(a.format(**values) for a in args)]
    done = subprocess.run(
        command,
        cwd=tmp_path,
        env=clean_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert "CA bundle" not in done.stdout
