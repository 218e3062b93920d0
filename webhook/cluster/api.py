"""The API-server client: JSON over `http.client`, and where the connection comes from.

The server talks to the API server with `http.client` (`ApiServer`), not with the
`kubernetes` package: importing that package and building a `CoreV1Api` costs ~60 MiB
and ~0.5 s (kubernetes 37, measured), against a budget of 64 MiB and 0.5 s to ready. In a
pod the connection comes from the service-account files (the token is re-read on every
request: the kubelet rotates it); out of a cluster the kubeconfig is read with
`kubernetes.config` (imported only then), which keeps exec and token plugins.
`load_api_client` still returns a full `kubernetes` ApiClient, for `certs bootstrap`.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import socket
import ssl
import threading
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import orjson

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
VERSION_TIMEOUT = 2.0
WRITE_TIMEOUT = 5.0

PatchType = Literal["strategic", "merge", "json"]
PATCH_CONTENT_TYPES: dict[PatchType, str] = {
    "strategic": "application/strategic-merge-patch+json",  # `kubectl rollout restart` sends this
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
}


class ClusterConfigError(Exception):
    """An explicitly named kubeconfig cannot be used."""


class ApiError(Exception):
    """The API server answered with a non-2xx status (`status`), or not at all (None).

    `reason` is the `Status` object's reason when the server sent one: "NotFound",
    "AlreadyExists" (a create that lost a race), "Conflict" (a stale resourceVersion on a
    PUT), "Expired"/"Gone" (a watch or continue token too old), ...
    """

    def __init__(
        self, message: str, status: int | None = None, reason: str = "", details: str = ""
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.details = details
        """The server's own message, when it sent a Status."""


class Call:
    """One request on its own connection: `send()` it, then read `json()` or iterate its
    non-empty lines (a watch). Each read waits at most `timeout` (TimeoutError).

    `close()` may come from another thread at any time, before or during `send()` or a
    read; that request then ends at once (with ApiError, or a stream that stops).
    """

    def __init__(
        self, api: ApiServer, method: str, target: str, timeout: float, body: bytes | None
    ) -> None:
        self.api = api
        self.method = method
        self.target = target
        self.body = body
        self.headers = {"Accept": "application/json", "User-Agent": "lifecycle-webhook"}
        self.what = f"{method} {target.split('?', 1)[0]}"
        """For messages: the method and path, without the query (continue tokens are long)."""
        self._connection = _Connection(api.host, api.port, api.context, timeout, api.server_name)
        self._response: Any = None
        self._closed = False
        self._lock = threading.Lock()

    def send(self) -> Call:
        """Sends the request; raises ApiError unless the answer is a 2xx."""
        what = self.what
        try:
            self._connection.connect()
            with self._lock:
                if self._closed:
                    raise ApiError(f"{what}: cancelled")
            self._connection.request(self.method, self.target, self.body, self.headers)
            self._response = self._connection.getresponse()
            status = self._response.status
            if 200 <= status < 300:
                self.api.reached = True
                return self
            error = _status_error(what, status, self._response.read(4096))
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise ApiError(f"{what}: {exc}") from exc
        except ApiError:
            self.close()
            raise
        self.close()
        raise error

    def json(self) -> Any:
        """The whole body as one JSON document; None for an empty body."""
        try:
            data = self._response.read()
            return orjson.loads(data) if data else None
        except (OSError, http.client.HTTPException, orjson.JSONDecodeError) as exc:
            raise ApiError(f"{self.what}: {exc}") from exc

    def __iter__(self) -> Iterator[bytes]:
        return (line for line in iter(self._response.readline, b"") if line.strip())

    def close(self) -> None:
        with self._lock:
            self._closed = True
            sock = self._connection.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes a reader blocked in another thread
        self._connection.close()

    def __enter__(self) -> Call:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class ApiServer:
    """One API server: JSON in and out, one short-lived connection per request.

    Paths are absolute API paths ("/api/v1/namespaces/shop"); `query` is URL-encoded here.
    Every method raises ApiError. `reached` turns True at the first 2xx answer: from then
    on a failure means "the cluster is in trouble", not "there is no cluster here".
    """

    def __init__(
        self,
        url: str,
        context: ssl.SSLContext,
        authorization: Callable[[], str | None],
        server_name: str | None = None,
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            raise ClusterConfigError(f"API server URL {url!r}: want https://HOST[:PORT]")
        self.url = url
        self.host = parts.hostname
        self.port = parts.port or 443
        self.prefix = parts.path.rstrip("/")
        self.context = context
        self.authorization = authorization
        self.server_name = server_name
        self.reached = False

    def get(self, path: str, timeout: float, query: Mapping[str, str] | None = None) -> Any:
        return _answer(self.call("GET", path, timeout=timeout, query=query))

    def create(self, path: str, body: Any, timeout: float = WRITE_TIMEOUT) -> Any:
        """POST: create an object (an Event, a Lease) in the collection at `path`."""
        return _answer(self.call("POST", path, body, timeout=timeout))

    def replace(self, path: str, body: Any, timeout: float = WRITE_TIMEOUT) -> Any:
        """PUT: replace the object at `path`; its metadata.resourceVersion makes it conditional
        (409 Conflict when someone wrote in between), as a Lease renewal needs."""
        return _answer(self.call("PUT", path, body, timeout=timeout))

    def patch(
        self,
        path: str,
        body: Any,
        patch_type: PatchType = "strategic",
        timeout: float = WRITE_TIMEOUT,
    ) -> Any:
        """PATCH the object at `path`. A rollout restart is the strategic-merge patch
        {"spec":{"template":{"metadata":{"annotations":{"kubectl.kubernetes.io/restartedAt":
        "<RFC 3339 time>"}}}}}; "json" takes a list of RFC 6902 operations."""
        content_type = PATCH_CONTENT_TYPES[patch_type]
        return _answer(self.call("PATCH", path, body, timeout=timeout, content_type=content_type))

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        timeout: float,
        query: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Call:
        """Any request, not sent yet: `with api.call(...) as call: call.send().json()`. For
        other methods (DELETE), for a caller that may cut it short from another thread (a
        watch, a list page), or one that reads the answer line by line."""
        target = self.prefix + path + ("?" + urllib.parse.urlencode(query) if query else "")
        data = None if body is None else orjson.dumps(body)
        call = Call(self, method, target, timeout, data)
        if data is not None:
            call.headers["Content-Type"] = content_type
        authorization = self.authorization()
        if authorization:
            call.headers["Authorization"] = authorization
        return call


def _answer(call: Call) -> Any:
    """The JSON answer of `call` (None for an empty body); the connection is closed after."""
    with call:
        return call.send().json()


def _status_error(what: str, status: int, body: bytes) -> ApiError:
    """The API server's `Status` object, when the body is one, made into an ApiError."""
    reason = details = ""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict):
        reason = str(parsed.get("reason") or "")
        details = str(parsed.get("message") or "")
    text = details or body[:300].decode(errors="replace")
    message = f"{what}: HTTP {status}{' ' + reason if reason else ''}: {text[:300]}"
    return ApiError(message, status, reason, details)


class _Connection(http.client.HTTPSConnection):
    """HTTPS with an optional TLS server name other than the host (kubeconfig tls-server-name)."""

    def __init__(
        self,
        host: str,
        port: int,
        context: ssl.SSLContext,
        timeout: float,
        server_name: str | None,
    ) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self.tls_context = context
        self.server_name = server_name or host

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self.tls_context.wrap_socket(sock, server_hostname=self.server_name)


# --- where the connection comes from ------------------------------------------------------


def _in_cluster() -> bool:
    return (
        bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
        and (SERVICE_ACCOUNT_DIR / "token").is_file()
    )


def _kubeconfig_files(explicit: str | None) -> list[str]:
    if explicit:
        return [explicit]
    env = os.environ.get("KUBECONFIG", "")
    if env:
        return [p for p in env.split(os.pathsep) if p and Path(p).is_file()]
    default = Path.home() / ".kube" / "config"
    return [str(default)] if default.is_file() else []


def cluster_configured(kubeconfig: str | None = None) -> bool:
    """Whether a cluster is configured at all (no import of `kubernetes`, no I/O to it)."""
    return bool(kubeconfig) or _in_cluster() or bool(_kubeconfig_files(None))


def load_api_client(kubeconfig: str | None = None) -> Any | None:
    """An ApiClient for the in-cluster config, else the kubeconfig; None when neither exists.

    Raises ClusterConfigError only for an explicit `kubeconfig` that cannot be loaded.
    """
    if kubeconfig and not Path(kubeconfig).is_file():
        raise ClusterConfigError(f"--kubeconfig {kubeconfig}: no such file")
    if not cluster_configured(kubeconfig):
        return None
    from kubernetes import client, config

    configuration = client.Configuration()
    try:
        if not kubeconfig and _in_cluster():
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        else:
            files = _kubeconfig_files(kubeconfig)
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=files[0] if len(files) == 1 else None,
                client_configuration=configuration,
                persist_config=False,
            )
    except Exception as exc:
        if kubeconfig:
            raise ClusterConfigError(f"--kubeconfig {kubeconfig}: {exc}") from exc
        return None
    configuration.connection_pool_maxsize = 8
    return client.ApiClient(configuration)


def _in_cluster_server() -> ApiServer:
    host = os.environ["KUBERNETES_SERVICE_HOST"]
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    if ":" in host:
        host = f"[{host}]"
    context = ssl.create_default_context(cafile=str(SERVICE_ACCOUNT_DIR / "ca.crt"))
    token_file = SERVICE_ACCOUNT_DIR / "token"

    def authorization() -> str | None:
        """Re-read every time: the kubelet rotates the projected token file."""
        try:
            token = token_file.read_text().strip()
        except OSError:
            return None
        return f"Bearer {token}" if token else None

    return ApiServer(f"https://{host}:{port}", context, authorization)


def _kubeconfig_server(kubeconfig: str | None) -> ApiServer:
    """The kubeconfig's current context, read by `kubernetes.config` (all auth plugins)."""
    from kubernetes import client, config

    configuration = client.Configuration()
    files = _kubeconfig_files(kubeconfig)
    config.load_kube_config(  # type: ignore[no-untyped-call]
        config_file=files[0] if len(files) == 1 else None,
        client_configuration=configuration,
        persist_config=False,
    )
    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert or None)
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, configuration.key_file)
    if not configuration.verify_ssl:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE

    def authorization() -> str | None:
        """A token from the kubeconfig (static, or refreshed by an exec/auth plugin); the
        kubernetes client keeps it under "BearerToken" (older releases: "authorization")."""
        for key in ("BearerToken", "authorization"):
            value = configuration.get_api_key_with_prefix(key)
            if value:
                return str(value)
        return None

    return ApiServer(
        configuration.host,
        context,
        authorization,
        server_name=getattr(configuration, "tls_server_name", None) or None,
    )


def connect(kubeconfig: str | None = None) -> ApiServer | None:
    """The API server this process may talk to: in-cluster, else the kubeconfig; None if none.

    Raises ClusterConfigError only for an explicit `kubeconfig` that cannot be used.
    """
    if kubeconfig and not Path(kubeconfig).is_file():
        raise ClusterConfigError(f"--kubeconfig {kubeconfig}: no such file")
    if not kubeconfig and _in_cluster():
        return _in_cluster_server()
    if not cluster_configured(kubeconfig):
        return None
    try:
        return _kubeconfig_server(kubeconfig)
    except Exception as exc:
        if kubeconfig:
            raise ClusterConfigError(f"--kubeconfig {kubeconfig}: {exc}") from exc
        return None


def _version_number(text: object) -> int | None:
    match = re.match(r"[0-9]+", text) if isinstance(text, str) else None
    return int(match.group()) if match else None


def detect_cluster_version(
    api: ApiServer, timeout: float = VERSION_TIMEOUT
) -> tuple[int, int] | None:
    """(major, minor) from the API server's /version ("30+" counts as 30); None on failure."""
    try:
        info = api.get("/version", timeout)
    except ApiError:
        return None
    if not isinstance(info, dict):
        return None
    major, minor = _version_number(info.get("major")), _version_number(info.get("minor"))
    if major is None or minor is None:
        git = re.match(r"v?([0-9]+)\.([0-9]+)", str(info.get("gitVersion", "")))
        if not git:
            return None
        major, minor = int(git.group(1)), int(git.group(2))
    return major, minor
