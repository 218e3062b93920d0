"""`lifecycle-webhook serve`: wires config, TLS, namespaces, metrics and the app into uvicorn.

Heavy imports (fastapi, uvicorn, cryptography, kubernetes) happen inside `run_serve`, so
`lifecycle-webhook --help` and the offline commands stay fast, and a cluster client is
imported only when a cluster is configured.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from webhook.admission import DEFAULT_MAX_BODY_BYTES
from webhook.connections import DEFAULT_MAX_CONNECTIONS, DEFAULT_STAGE_SECONDS, Limits
from webhook.logs import LEVELS, JsonLog, bridge_stdlib_logging

if TYPE_CHECKING:
    from webhook.app import ServerState
    from webhook.cluster.api import ApiServer

DEFAULT_PORT = 8443
DEFAULT_METRICS_PORT = 9090
DEFAULT_DRAIN_SECONDS = 5.0
KEEP_ALIVE_SECONDS = 120
"""The API server keeps idle connections up to 90 s; closing earlier races its next request."""
GRACEFUL_SHUTDOWN_SECONDS = 10
"""After the drain, how long in-flight reviews may take before they are cancelled."""
POLL_SECONDS = 2.0
VERSION_ATTEMPTS_AT_START = 3
VERSION_RETRY_SECONDS = 30.0
PROG = "lifecycle-webhook serve"
MAX_WORKERS = 64


ALL_INTERFACES = ""
"""The default --host: one socket for IPv4 and IPv6, so single- and dual-stack clusters alike
reach the webhook (0.0.0.0 would be unreachable in an IPv6-only cluster)."""


def listening_sockets(host: str, port: int) -> list[socket.socket]:
    """Bound sockets for --host: for ALL_INTERFACES one dual-stack socket (IPv4 alone where the
    kernel has no IPv6), else one per address the name resolves to."""
    if host == ALL_INTERFACES:
        try:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            address: tuple[str, int] = ("::", port)
        except OSError:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            address = ("0.0.0.0", port)  # noqa: S104 - a Pod listens in its own network namespace
        return [_bound(sock, address)]
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, resolved in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if sockets:  # --port 0: every address gets the port the first one got
                resolved = (resolved[0], sockets[0].getsockname()[1], *resolved[2:])
            sockets.append(_bound(sock, resolved))
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _bound(sock: socket.socket, address: Any) -> socket.socket:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


_held_signals: list[int] = []


def _hold_signals() -> None:
    """A worker: SIGTERM/SIGINT before uvicorn's handlers are in place are kept and honoured
    once it serves (see `startup`); an early SIGHUP is dropped (the poller runs anyway)."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda received, _: _held_signals.append(received))
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


class UsageError(Exception):
    """A bad flag value: exit 2."""


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", metavar="FILE", help="settings file (YAML or JSON); reloaded on change"
    )
    parser.add_argument(
        "--tls-cert", metavar="FILE", help="serving certificate (PEM); reloaded on change"
    )
    parser.add_argument(
        "--tls-key", metavar="FILE", help="its private key (PEM); reloaded on change"
    )
    parser.add_argument(
        "--client-ca", metavar="FILE", help="require client certificates signed by this CA"
    )
    parser.add_argument(
        "--host",
        default=ALL_INTERFACES,
        metavar="HOST",
        help="address to listen on (default: every interface, IPv4 and IPv6)",
    )
    parser.add_argument(
        "--port", default=DEFAULT_PORT, type=int, metavar="PORT", help="HTTPS port (default 8443)"
    )
    parser.add_argument(
        "--metrics-port",
        metavar="PORT",
        default=DEFAULT_METRICS_PORT,
        type=int,
        help="plain-HTTP port for /metrics (default 9090)",
    )
    parser.add_argument(
        "--drain-seconds",
        metavar="SECONDS",
        default=DEFAULT_DRAIN_SECONDS,
        type=float,
        help="after SIGTERM, keep serving (not ready) this long, then exit (default 5)",
    )
    parser.add_argument(
        "--max-body-bytes",
        metavar="BYTES",
        default=DEFAULT_MAX_BODY_BYTES,
        type=int,
        help="larger request bodies get HTTP 413 (default 3145728)",
    )
    parser.add_argument(
        "--max-connections",
        metavar="N",
        default=DEFAULT_MAX_CONNECTIONS,
        type=int,
        help="open connections per process; beyond, the longest-waiting slow client is "
        "closed or the newcomer refused (default 1000)",
    )
    for flag, what in (
        ("--handshake-timeout", "to finish the TLS handshake, from accept"),
        ("--header-timeout", "to send a request's head"),
        ("--body-timeout", "to send a request's body, after its head"),
    ):
        parser.add_argument(
            flag,
            metavar="SECONDS",
            default=DEFAULT_STAGE_SECONDS,
            type=float,
            help=f"time a client has {what} (default 10)",
        )
    parser.add_argument(
        "--kubeconfig", metavar="FILE", help="cluster to read Namespaces from (default: in-cluster)"
    )
    parser.add_argument(
        "--detect",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="watch pods and report those that missed the webhook (default: on when a "
        "cluster is configured)",
    )
    parser.add_argument(
        "--mode",
        default="namespace",
        choices=["namespace", "cluster"],
        help="the chart's mode: which pods the webhook configuration sends here, so "
        "detection judges only those (default namespace)",
    )
    parser.add_argument(
        "--lease-name",
        default="lifecycle-webhook-detector",
        metavar="NAME",
        help="Lease in the release namespace that elects the one replica that reports",
    )
    parser.add_argument(
        "--cluster-version",
        metavar="1.NN",
        help="Kubernetes version to generate for; overrides the config's clusterVersion",
    )
    parser.add_argument(
        "--workers",
        metavar="N",
        default=1,
        type=int,
        help="server processes sharing the port (default 1); see the README",
    )
    for hidden in ("--worker-index", "--worker-sockets", "--worker-metrics-socket"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    parser.add_argument(
        "--log-level",
        default="info",
        choices=list(LEVELS),
        help="default info (one line per review)",
    )


def _parse_cluster_version(text: str | None) -> tuple[int, int] | None:
    """The flag takes what the config file's clusterVersion takes; None is `auto`."""
    from webhook.core.values import InvalidValue, parse_cluster_version

    if text is None:
        return None
    try:
        return parse_cluster_version(text)
    except InvalidValue as invalid:
        raise UsageError(
            f"--cluster-version: {invalid.reason}, such as 1.30; got {text!r}"
        ) from None


def _check_arguments(args: argparse.Namespace) -> tuple[int, int] | None:
    if bool(args.tls_cert) != bool(args.tls_key):
        raise UsageError("--tls-cert and --tls-key go together: give both or neither")
    for flag, port in (("--port", args.port), ("--metrics-port", args.metrics_port)):
        if not 0 <= port <= 65535:
            raise UsageError(f"{flag} {port}: not a TCP port")
    if args.port == args.metrics_port and args.port != 0:
        raise UsageError("--port and --metrics-port must differ")
    if not 0 <= args.drain_seconds <= 3600:
        raise UsageError(f"--drain-seconds {args.drain_seconds}: want 0 to 3600")
    if args.max_body_bytes < 1:
        raise UsageError(f"--max-body-bytes {args.max_body_bytes}: want at least 1")
    if not 1 <= args.workers <= MAX_WORKERS:
        raise UsageError(f"--workers {args.workers}: want 1 to {MAX_WORKERS}")
    if not 1 <= args.max_connections <= 1_000_000:
        raise UsageError(f"--max-connections {args.max_connections}: want 1 to 1000000")
    for flag, seconds in (
        ("--handshake-timeout", args.handshake_timeout),
        ("--header-timeout", args.header_timeout),
        ("--body-timeout", args.body_timeout),
    ):
        if not 0.1 <= seconds <= 3600:
            raise UsageError(f"{flag} {seconds}: want 0.1 to 3600 seconds")
    for flag, path in (
        ("--tls-cert", args.tls_cert),
        ("--tls-key", args.tls_key),
        ("--client-ca", args.client_ca),
        ("--config", args.config),
    ):
        if path and not Path(path).is_file():
            raise UsageError(f"{flag} {path}: no such file")
    return _parse_cluster_version(args.cluster_version)


class FilePoller:
    """Runs the reload checks every POLL_SECONDS on a daemon thread, and at once on `wake()`."""

    def __init__(self, checks: list[Callable[[], bool]], log: JsonLog) -> None:
        self.checks = checks
        self.log = log
        self._wake = threading.Event()
        threading.Thread(target=self._run, name="file-poller", daemon=True).start()

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait(POLL_SECONDS)
            self._wake.clear()
            for check in self.checks:
                try:
                    check()
                except Exception as exc:
                    self.log.event("reload check failed", level="error", error=repr(exc))


@contextlib.contextmanager
def _self_signed(log: JsonLog) -> Iterator[tuple[str, str]]:
    """A throwaway CA and serving pair for localhost, deleted on exit."""
    from webhook import certs

    directory = tempfile.mkdtemp(prefix="lifecycle-webhook-")
    try:
        ca = certs.generate_ca(common_name="lifecycle-webhook self-signed CA", days=30)
        serving = certs.generate_serving(ca, ["localhost"], ["127.0.0.1", "::1"], days=30)
        ca_path = Path(directory) / "ca.crt"
        ca_path.write_bytes(ca.cert_pem)
        cert_path, key_path = certs.write_pair(directory, "tls", serving)
        print(f"CA bundle: {ca_path}", flush=True)
        log.event(
            "self-signed certificate", ca_bundle=str(ca_path), valid_for="localhost, 127.0.0.1, ::1"
        )
        yield str(cert_path), str(key_path)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def run_serve(args: argparse.Namespace) -> int:
    """Serve until SIGTERM/SIGINT (then drain); 0 on a clean exit, 2 on bad flags or files."""
    started = time.monotonic()
    log = JsonLog(args.log_level)
    try:
        override = _check_arguments(args)
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2

    if args.worker_index is not None:
        _hold_signals()
        log = JsonLog(args.log_level, worker=int(args.worker_index))
    bridge_stdlib_logging(log)
    from webhook.config_file import ConfigFileError, load_config, own_namespace

    namespace = own_namespace()
    try:
        config, config_bytes = load_config(args.config, namespace)
    except ConfigFileError as exc:
        for problem in exc.problems:
            print(f"{PROG}: error: --config {exc.path}: {problem}", file=sys.stderr)
        return 2

    with contextlib.ExitStack() as stack:
        if args.tls_cert:
            cert_file, key_file = args.tls_cert, args.tls_key
        else:
            cert_file, key_file = stack.enter_context(_self_signed(log))
        if args.workers > 1 and args.worker_index is None:
            return _supervise(args, log, cert_file, key_file)
        return _serve(
            args, log, started, config, config_bytes, namespace, override, cert_file, key_file
        )


def _supervise(args: argparse.Namespace, log: JsonLog, cert_file: str, key_file: str) -> int:
    """--workers N: bind once, start N workers on the sockets (webhook/workers.py)."""
    from webhook.workers import Supervisor

    try:
        sockets = listening_sockets(args.host, args.port)
    except OSError as exc:
        log.event("cannot listen", level="error", port=args.port, error=str(exc))
        return 1
    argv = list(getattr(args, "serve_argv", None) or ["serve"])
    if not args.tls_cert:  # every worker serves the supervisor's throwaway pair
        argv += [f"--tls-cert={cert_file}", f"--tls-key={key_file}"]
    return Supervisor(args, argv, log).run(sockets)


def _inherited_sockets(fds: str) -> list[socket.socket]:
    return [socket.socket(fileno=int(fd)) for fd in fds.split(",")]


def _serve(
    args: argparse.Namespace,
    log: JsonLog,
    started: float,
    config: Any,
    config_bytes: bytes,
    namespace: str | None,
    override: tuple[int, int] | None,
    cert_file: str,
    key_file: str,
) -> int:
    from webhook.app import ServerState
    from webhook.cluster.api import ClusterConfigError, connect
    from webhook.cluster.namespaces import NamespaceCache, NamespaceSource, StaticNamespaces
    from webhook.cluster.services import ServiceCache, ServiceSource, StaticServices
    from webhook.config_file import ConfigWatcher
    from webhook.metrics import Metrics, serve_metrics
    from webhook.tls import CertificateReloader, TLSFilesError

    metrics = Metrics()
    try:
        reloader = CertificateReloader(
            cert_file, key_file, args.client_ca, log=log, metrics=metrics
        )
    except TLSFilesError as exc:
        print(f"{PROG}: error: cannot use the TLS files: {exc}", file=sys.stderr)
        return 2

    try:
        api = connect(args.kubeconfig)
    except ClusterConfigError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    namespaces: NamespaceSource
    services: ServiceSource
    after_listening: list[Callable[[], object]] = []
    """Cluster I/O starts once the port is open: its threads would slow the imports above."""
    if api is None:
        namespaces = StaticNamespaces()
        services = StaticServices(None)
        log.event(
            "no cluster configured",
            level="warning",
            effect="namespace annotations are not read; pods get config-file and pod "
            "settings; Service exposure is unknown",
        )
    else:
        namespaces = NamespaceCache(api, log)
        after_listening.append(namespaces.start)
        services = ServiceCache(api, log)

    state = ServerState(
        config=config,
        namespaces=namespaces,
        metrics=metrics,
        log=log,
        max_body_bytes=args.max_body_bytes,
        cluster_version_override=override,
        services=services,
    )
    if isinstance(services, ServiceCache):
        cache = services
        after_listening.append(lambda: state.on_services_needed(cache.start))
    state.certificates_loaded = True
    after_listening.append(_resolve_cluster_version(state, api, log))
    detector = None
    if api is not None and args.detect and isinstance(namespaces, NamespaceCache):
        from webhook.detector import Detector

        detector = Detector(
            api,
            state,
            namespaces,
            log,
            mode=args.mode,
            lease_namespace=namespace,
            lease_name=args.lease_name,
        )
        after_listening.append(detector.start)

    try:
        metrics_server = serve_metrics(
            metrics.exposition,
            args.host,
            args.metrics_port,
            sock=_inherited_sockets(args.worker_metrics_socket)[0]
            if args.worker_metrics_socket
            else None,
        )
    except OSError as exc:
        log.event("cannot listen", level="error", port=args.metrics_port, error=str(exc))
        return 1

    checks: list[Callable[[], bool]] = [reloader.check]
    if args.config:
        checks.append(
            ConfigWatcher(
                args.config, config_bytes, namespace, state.set_config, log=log, metrics=metrics
            ).check
        )
    poller = FilePoller(checks, log)
    signal.signal(signal.SIGHUP, lambda *_: poller.wake())

    server = _build_server(args, state, reloader, metrics, log, started, after_listening)
    try:
        if args.worker_sockets:
            sockets = _inherited_sockets(args.worker_sockets)
        else:
            sockets = listening_sockets(args.host, args.port)
    except OSError as exc:
        metrics_server.shutdown()
        log.event("cannot listen", level="error", port=args.port, error=str(exc))
        return 1
    try:
        server.run(sockets=sockets)
    finally:
        if detector is not None:
            detector.stop()  # releases the Lease: another replica reports at once
        metrics_server.shutdown()
    if server.forced:
        log.event(
            "stopped", level="warning", detail="second signal: did not wait for in-flight reviews"
        )
        return 1
    log.event("stopped")
    return 0


def _resolve_cluster_version(
    state: ServerState, api: ApiServer | None, log: JsonLog
) -> Callable[[], object]:
    """Returns the starter of the background /version read (a no-op without a cluster).

    Readiness waits for it only while the version is `auto`; it runs even when the version
    is given, so a config reload to `auto` later has a detected version to use.
    """
    from webhook.core.model import NEWEST_KNOWN_VERSION

    explicit = bool(state.cluster_version_override or state.config.cluster_version)
    if explicit:
        state.version_resolved = True

    def assume_newest(reason: str) -> None:
        state.set_detected_version(None)
        if not explicit:
            log.event(
                "cluster version unknown",
                level="warning",
                reason=reason,
                assuming=".".join(map(str, NEWEST_KNOWN_VERSION)),
            )

    if api is None:
        assume_newest("no cluster configured")
        return lambda: None

    def detect() -> None:
        """A few quick tries before readiness; then, if need be, retries in the background.

        Assuming the newest version on an old cluster makes sleep hooks the API server
        rejects, so one failed read at start must not decide for the life of the process.
        """
        from webhook.cluster.api import detect_cluster_version

        version = None
        for attempt in range(VERSION_ATTEMPTS_AT_START):
            version = detect_cluster_version(api)
            if version is not None:
                break
            time.sleep(0.5 * (attempt + 1))
        if version is None:
            assume_newest("the API server's /version could not be read; retrying")
        while version is None:
            time.sleep(VERSION_RETRY_SECONDS)
            version = detect_cluster_version(api)
        state.set_detected_version(version)
        log.event(
            "cluster version",
            version=f"{version[0]}.{version[1]}",
            using=".".join(map(str, state.cluster_version)),
        )

    return threading.Thread(target=detect, name="cluster-version", daemon=True).start


def _build_server(
    args: argparse.Namespace,
    state: ServerState,
    reloader: Any,
    metrics: Any,
    log: JsonLog,
    started: float,
    after_listening: list[Callable[[], object]],
) -> Any:
    import asyncio

    import uvicorn

    from webhook.app import create_app
    from webhook.connections import Listener, guarded_protocol

    limits = Limits(
        max_connections=args.max_connections,
        handshake_seconds=args.handshake_timeout,
        head_seconds=args.header_timeout,
        body_seconds=args.body_timeout,
    )

    class DrainingServer(uvicorn.Server):
        """uvicorn closes its listener on the first signal; this one drains first."""

        drain_deadline: float | None = None
        forced = False

        async def startup(self, sockets: Any = None) -> None:
            """uvicorn's startup with our Listener in place of `loop.create_server`: the
            connection cap and stage deadlines need the accept and the handshake."""
            await self.lifespan.startup()
            listener = Listener(
                sockets,
                reloader.listening_context,
                lambda _: None,  # type: ignore[arg-type,return-value]
                limits,
                metrics,
                log,
            )
            listener.protocol_factory = guarded_protocol(
                self.config, self.server_state, self.lifespan.state, listener
            )
            listener.start(asyncio.get_running_loop())
            self.servers = [listener]  # type: ignore[list-item]  # closes like asyncio.Server
            self.started = True
            port = sockets[0].getsockname()[1]
            for start in after_listening:
                start()
            gc.collect()
            gc.freeze()  # startup objects leave the collector's scans: shorter pauses
            gc.set_threshold(50_000, 20, 100)
            log.event(
                "started",
                host=args.host or "*",
                port=port,
                metrics_port=args.metrics_port,
                startup_ms=round((time.monotonic() - started) * 1000, 1),
                cluster_version=".".join(map(str, state.cluster_version)),
                tls_serial=f"{reloader.serial:x}",
                client_ca=bool(args.client_ca),
                max_connections=limits.max_connections,
            )
            for sig in _held_signals:
                self.handle_exit(sig, None)
            _held_signals.clear()

        def handle_exit(self, sig: int, frame: Any) -> None:
            if self.drain_deadline is None and not self.should_exit:
                state.draining = True
                self.drain_deadline = time.monotonic() + args.drain_seconds
                log.event(
                    "draining",
                    signal=signal.Signals(sig).name,
                    drain_seconds=args.drain_seconds,
                    detail="not ready; still serving until the drain ends",
                )
            else:
                log.event("exiting now", signal=signal.Signals(sig).name)
                self.forced = True
                self.should_exit = True
                self.force_exit = True

        async def on_tick(self, counter: int) -> bool:
            if self.drain_deadline is not None and time.monotonic() >= self.drain_deadline:
                self.should_exit = True
            return await super().on_tick(counter)

    config = uvicorn.Config(
        create_app(state),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        lifespan="off",
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
    return DrainingServer(config)
