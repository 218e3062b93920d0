"""Namespace annotations for the settings layer between the config file and the pod.

The request carries only the namespace's name. A list+watch cache answers almost every
lookup without I/O; a miss costs one live GET with a short budget, and a failure means
"could not be read" (None), which the core turns into a warning.

The server talks to the API server with `http.client` (`ApiServer`), not with the
`kubernetes` package: importing that package and building a `CoreV1Api` costs ~60 MiB
and ~0.5 s (kubernetes 37, measured), against a budget of 64 MiB and 0.5 s to ready. In a
pod the connection comes from the service-account files; out of a cluster the kubeconfig
is read with `kubernetes.config` (imported only then), which keeps exec and token plugins.
`load_api_client` still returns a full `kubernetes` ApiClient, for `certs bootstrap`.
"""

from __future__ import annotations

import contextlib
import enum
import http.client
import os
import random
import re
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, Protocol

import orjson

from webhook.core.model import PREFIX
from webhook.logs import JsonLog

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
LOOKUP_TIMEOUT = 0.5
VERSION_TIMEOUT = 2.0
LIST_TIMEOUT = 10.0
WATCH_SECONDS = 290
"""Server-side watch length; the API server caps it anyway and we resume from resourceVersion."""
WATCH_READ_TIMEOUT = 120.0
"""A watch silent this long (no event, no bookmark) is re-opened from its resourceVersion, so a
connection that died without closing leaves the cache stale for minutes, not forever."""
LIVE_TTL = 10.0
"""How long a live read answers for a namespace the watch has not delivered yet."""
FAILED_TTL = 5.0
"""How long a failed live read is remembered: one read per namespace during an outage."""
QUICK_WATCH = 1.0
"""A watch that ends this fast with no event is a server refusing politely: back off."""


class Lookup(enum.Enum):
    NEEDED = "needed"


NEEDS_LOOKUP: Literal[Lookup.NEEDED] = Lookup.NEEDED


class NamespaceSource(Protocol):
    def annotations(self, name: str) -> Mapping[str, str] | None:
        """Annotations of the namespace; None when they could not be read. May block ~0.5 s."""
        ...

    def peek(self, name: str) -> Mapping[str, str] | Literal[Lookup.NEEDED] | None:
        """Like `annotations`, without blocking: NEEDS_LOOKUP when only I/O can answer."""
        ...


class StaticNamespaces(dict[str, Mapping[str, str]]):
    """Fixed annotations by namespace name; an unknown namespace has none."""

    def annotations(self, name: str) -> Mapping[str, str] | None:
        return self.get(name, {})

    def peek(self, name: str) -> Mapping[str, str] | Literal[Lookup.NEEDED] | None:
        return self.get(name, {})


class ClusterConfigError(Exception):
    """An explicitly named kubeconfig cannot be used."""


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


class ApiError(Exception):
    """The API server answered with a non-2xx status, or not at all."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ApiServer:
    """GETs (plain and streaming) against one API server, JSON in and out."""

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

    def _open(self, path: str, timeout: float) -> tuple[http.client.HTTPSConnection, Any]:
        connection = _Connection(self.host, self.port, self.context, timeout, self.server_name)
        headers = {"Accept": "application/json", "User-Agent": "lifecycle-webhook"}
        authorization = self.authorization()
        if authorization:
            headers["Authorization"] = authorization
        try:
            connection.request("GET", self.prefix + path, headers=headers)
            response = connection.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            raise ApiError(f"GET {path}: {exc}") from exc
        if not 200 <= response.status < 300:
            body = response.read(300).decode(errors="replace")
            connection.close()
            raise ApiError(f"GET {path}: HTTP {response.status}: {body}", response.status)
        return connection, response

    def get(self, path: str, timeout: float) -> Any:
        connection, response = self._open(path, timeout)
        try:
            return orjson.loads(response.read())
        except (OSError, http.client.HTTPException, orjson.JSONDecodeError) as exc:
            raise ApiError(f"GET {path}: {exc}") from exc
        finally:
            connection.close()

    @contextlib.contextmanager
    def lines(self, path: str, timeout: float) -> Iterator[Iterator[bytes]]:
        """The response body line by line (a watch); `timeout` bounds each read."""
        connection, response = self._open(path, timeout)
        try:
            yield (line for line in iter(response.readline, b"") if line.strip())
        finally:
            connection.close()


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
        value = configuration.get_api_key_with_prefix("authorization")
        return str(value) if value else None

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


def _own_annotations(namespace: Any) -> dict[str, str]:
    """Only our prefix matters; other annotations (last-applied, ...) are not kept."""
    meta = namespace.get("metadata") if isinstance(namespace, dict) else None
    annotations = meta.get("annotations") if isinstance(meta, dict) else None
    if not isinstance(annotations, dict):
        return {}
    return {
        k: v
        for k, v in annotations.items()
        if isinstance(k, str) and k.startswith(PREFIX) and isinstance(v, str)
    }


def _name(namespace: Any) -> str | None:
    meta = namespace.get("metadata") if isinstance(namespace, dict) else None
    name = meta.get("name") if isinstance(meta, dict) else None
    return name if isinstance(name, str) else None


class _Expired(Exception):
    """The watch's resourceVersion is too old (410 Gone): list again."""


class KubeNamespaces:
    """A list+watch cache of Namespace annotations, kept by a daemon thread.

    The watch cache is the only source of truth for namespaces it has seen. A namespace it
    has not delivered yet (created a moment ago) is read live, at most one read per
    namespace at a time; the answer is kept apart for a few seconds and never written into
    the watch cache, so a slow read cannot overwrite newer watch data or revive a deleted
    namespace.
    """

    def __init__(
        self, api: ApiServer, log: JsonLog, lookup_timeout: float = LOOKUP_TIMEOUT
    ) -> None:
        self.api = api
        self.log = log
        self.lookup_timeout = lookup_timeout
        self._cache: dict[str, dict[str, str]] = {}
        self._live: dict[str, tuple[float, dict[str, str] | None]] = {}
        """Live-read answers (None: the read failed) and when they expire."""
        self._reads: dict[str, threading.Event] = {}
        """Live reads in progress, so concurrent misses for one namespace wait for one read."""
        self._lock = threading.Lock()
        self._reached = False
        """Some call to the API server has succeeded."""
        self._unreachable = False
        """The first list failed before any call succeeded: work without namespace settings."""
        self._thread = threading.Thread(target=self._run, name="namespace-watch", daemon=True)

    def start(self) -> KubeNamespaces:
        self._thread.start()
        return self

    def peek(self, name: str) -> Mapping[str, str] | Literal[Lookup.NEEDED] | None:
        annotations = self._cache.get(name)
        if annotations is not None:
            return annotations
        live = self._live.get(name)
        if live is not None and live[0] > time.monotonic():
            return live[1]
        if self._unreachable and not self._reached:
            return {}
        return NEEDS_LOOKUP

    def annotations(self, name: str) -> Mapping[str, str] | None:
        cached = self.peek(name)
        if cached is not Lookup.NEEDED:
            return cached
        with self._lock:
            running = self._reads.get(name)
            if running is None:
                self._reads[name] = threading.Event()
        if running is not None:
            running.wait(self.lookup_timeout * 4)
            live = self._live.get(name)
            return live[1] if live is not None else None
        try:
            result = self._read(name)
            ttl = LIVE_TTL if result is not None else FAILED_TTL
            with self._lock:
                now = time.monotonic()
                if len(self._live) > 1000:
                    self._live = {k: v for k, v in self._live.items() if v[0] > now}
                self._live[name] = (now + ttl, result)
            return result
        finally:
            with self._lock:
                self._reads.pop(name).set()

    def _read(self, name: str) -> dict[str, str] | None:
        try:
            namespace = self.api.get(
                f"/api/v1/namespaces/{urllib.parse.quote(name, safe='')}", self.lookup_timeout
            )
        except ApiError as exc:
            return {} if exc.status == 404 else None
        self._reached = True
        return _own_annotations(namespace)

    # --- the watch thread -------------------------------------------------------------

    def _run(self) -> None:
        backoff = 0.5
        failing = False
        while True:
            try:
                resource_version = self._list()
                if failing:
                    self.log.event("namespace cache synced", namespaces=len(self._cache))
                failing = False
                backoff = 0.5
                while True:
                    started = time.monotonic()
                    resource_version, events = self._watch(resource_version)
                    if events == 0 and time.monotonic() - started < QUICK_WATCH:
                        time.sleep(backoff * random.uniform(0.8, 1.2))  # noqa: S311
                        backoff = min(backoff * 2, 30.0)
                    elif events:
                        backoff = 0.5
            except _Expired:
                time.sleep(random.uniform(0.1, 0.5))  # noqa: S311 - relist, without a stampede
            except Exception as exc:
                if not failing:
                    self._report(exc)
                failing = True
                time.sleep(backoff * random.uniform(0.8, 1.2))  # noqa: S311
                backoff = min(backoff * 2, 30.0)

    def _report(self, exc: Exception) -> None:
        answered = isinstance(exc, ApiError) and exc.status is not None
        if not self._reached and not answered:
            # Nothing answers at that address (no cluster here): one line, then quiet. A
            # cluster that answers with an error (403: RBAC missing) is a misconfiguration,
            # and every pod is told, as for any failed read.
            self._unreachable = True
            self.log.event(
                "cluster not reachable",
                level="warning",
                api_server=self.api.url,
                error=str(exc)[:300],
                effect="namespace annotations are not read until it is",
            )
        else:
            self.log.event(
                "namespace cache unavailable",
                level="error",
                api_server=self.api.url,
                error=str(exc)[:300],
                effect="cache misses are read live; failed reads warn per pod",
            )

    def _list(self) -> str:
        cache: dict[str, dict[str, str]] = {}
        token = ""
        resource_version = ""
        for _ in range(10_000):
            query = {"limit": "500"} | ({"continue": token} if token else {})
            page = self.api.get("/api/v1/namespaces?" + urllib.parse.urlencode(query), LIST_TIMEOUT)
            for item in page.get("items") or []:
                name = _name(item)
                if name is not None:
                    cache[name] = _own_annotations(item)
            meta = page.get("metadata") or {}
            resource_version = resource_version or str(meta.get("resourceVersion", ""))
            token = meta.get("continue") or ""
            if not token:
                break
        self._cache = cache
        self._reached = True
        return resource_version

    def _watch(self, resource_version: str) -> tuple[str, int]:
        """One watch request, until the server ends it or it goes silent.

        Returns the last resourceVersion seen and how many events (bookmarks included) came.
        """
        query = urllib.parse.urlencode(
            {
                "watch": "1",
                "resourceVersion": resource_version,
                "allowWatchBookmarks": "true",
                "timeoutSeconds": str(WATCH_SECONDS),
            }
        )
        count = 0
        with self.api.lines("/api/v1/namespaces?" + query, WATCH_READ_TIMEOUT) as events:
            try:
                for line in events:
                    count += 1
                    resource_version = self._apply(orjson.loads(line), resource_version)
            except TimeoutError:
                pass  # silent too long: the caller resumes from the last resourceVersion
        return resource_version, count

    def _apply(self, event: Any, resource_version: str) -> str:
        kind, obj = event.get("type"), event.get("object")
        if kind == "ERROR":
            code = obj.get("code") if isinstance(obj, dict) else None
            if code == 410:
                raise _Expired
            raise ApiError(f"watch error: {str(obj)[:300]}", code)
        meta = obj.get("metadata") if isinstance(obj, dict) else None
        if isinstance(meta, dict) and meta.get("resourceVersion"):
            resource_version = str(meta["resourceVersion"])
        name = _name(obj)
        if name is None or kind == "BOOKMARK":
            return resource_version
        if kind in ("ADDED", "MODIFIED"):
            self._cache[name] = _own_annotations(obj)
        elif kind == "DELETED":
            self._cache.pop(name, None)
        return resource_version
