"""Prometheus metrics (SPEC section 5), in a registry of their own, on a plain-HTTP port.

Label values that come from requests are folded into a fixed set so a caller cannot grow
the series count; children are cached because `labels()` takes a lock on every call.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

OPERATIONS = ("CREATE", "UPDATE", "DELETE", "CONNECT")
OUTCOMES = ("mutated", "unchanged", "skipped", "denied", "invalid", "error")
FEATURES = ("prestop", "grace", "init_order", "poststart")
CLOSE_REASONS = ("handshake_timeout", "head_timeout", "body_timeout", "evicted", "handshake_failed")
EXPOSURES = ("none", "cluster", "loadBalancer", "unknown")
DURATION_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.0,
    5.0,
    10.0,
)
"""Reviews take tens of microseconds to a few milliseconds; the buckets past 1 s show reviews
slower than the chart's timeoutSeconds (2 s), which the API server gave up on."""


class Metrics:
    """Every metric the server exports, bound to one `CollectorRegistry`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "lifecycle_webhook_admission_requests_total",
            "Admission reviews answered, by operation and outcome.",
            ["operation", "outcome"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "lifecycle_webhook_admission_duration_seconds",
            "Time from the first byte of the body being read to the answer being built.",
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.mutations = Counter(
            "lifecycle_webhook_mutations_total",
            "Pods changed (or, in report-only mode, that would be changed), by feature.",
            ["feature"],
            registry=self.registry,
        )
        self.warnings = Counter(
            "lifecycle_webhook_warnings_total",
            "Admission warnings returned, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.profiles = Counter(
            "lifecycle_webhook_profile_matches_total",
            "Pods a profile of the config applied to, by profile name.",
            ["profile"],
            registry=self.registry,
        )
        self.exposures = Counter(
            "lifecycle_webhook_exposures_total",
            "Pods whose exposure was read (a profile tests it, or fromLoadBalancer), by exposure.",
            ["exposure"],
            registry=self.registry,
        )
        self.certificate_expiry = Gauge(
            "lifecycle_webhook_certificate_expiry_timestamp_seconds",
            "notAfter of the serving certificate in use, as a Unix timestamp.",
            registry=self.registry,
        )
        self.config_reloads = Counter(
            "lifecycle_webhook_config_reloads_total",
            "Configuration file reloads after a change on disk, by result.",
            ["result"],
            registry=self.registry,
        )
        self.certificate_reloads = Counter(
            "lifecycle_webhook_certificate_reloads_total",
            "Serving certificate reloads after a change on disk, by result.",
            ["result"],
            registry=self.registry,
        )
        self.open_connections = Gauge(
            "lifecycle_webhook_open_connections",
            "Connections to the admission port now open in this process, in any state.",
            registry=self.registry,
        )
        self.handshakes_in_progress = Gauge(
            "lifecycle_webhook_tls_handshakes_in_progress",
            "Connections accepted whose TLS handshake has not finished.",
            registry=self.registry,
        )
        self.connections_refused = Counter(
            "lifecycle_webhook_connections_refused_total",
            "Connections reset at accept, before TLS, because --max-connections were open.",
            registry=self.registry,
        )
        self.connections_closed = Counter(
            "lifecycle_webhook_connections_closed_early_total",
            "Connections the server closed before a complete request, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.reviews_shed = Counter(
            "lifecycle_webhook_reviews_shed_total",
            "Reviews not answered because they waited longer than their timeout.",
            registry=self.registry,
        )
        self.unprotected_pods = Gauge(
            "lifecycle_webhook_unprotected_pods",
            "Pods in scope running without what the webhook would add now (never seen by it, "
            "or settings changed since), by namespace; only the Lease holder exports it.",
            ["namespace"],
            registry=self.registry,
        )
        self.remediations = Counter(
            "lifecycle_webhook_remediations_total",
            "Restarts of workloads whose pods missed the webhook (remediate: restart), by kind "
            "and result (restarted, error, given_up).",
            ["kind", "result"],
            registry=self.registry,
        )
        self.detector_leader = Gauge(
            "lifecycle_webhook_detector_leader",
            "1 while this process holds the detector's Lease and reports unprotected pods.",
            registry=self.registry,
        )
        for reason in CLOSE_REASONS:
            self.connections_closed.labels(reason)
        self._request_children: dict[tuple[str, str], Any] = {}
        for operation in (*OPERATIONS, "other"):
            for outcome in OUTCOMES:
                self._request_children[operation, outcome] = self.requests.labels(
                    operation, outcome
                )
        self._feature_children = {f: self.mutations.labels(f) for f in FEATURES}
        self._exposure_children = {e: self.exposures.labels(e) for e in EXPOSURES}
        self._profile_children: dict[str, Any] = {}
        self._warning_children: dict[str, Any] = {}
        for result in ("success", "error"):
            self.config_reloads.labels(result)
            self.certificate_reloads.labels(result)
        self._observe = self.duration.observe

    def review(
        self,
        operation: str,
        outcome: str,
        seconds: float,
        features: Iterable[str] = (),
        warning_reasons: Iterable[str] = (),
        profile: str | None = None,
        exposure: str | None = None,
    ) -> None:
        """Count one answered review. Profile names come from the config file, a bounded set."""
        child = self._request_children.get((operation, outcome))
        if child is None:
            child = self._request_children["other", outcome]
        child.inc()
        self._observe(seconds)
        for feature in features:
            self._feature_children[feature].inc()
        if profile is not None:
            profile_child = self._profile_children.get(profile)
            if profile_child is None:
                profile_child = self._profile_children[profile] = self.profiles.labels(profile)
            profile_child.inc()
        if exposure in self._exposure_children:
            self._exposure_children[exposure].inc()
        for reason in warning_reasons:
            warning_child = self._warning_children.get(reason)
            if warning_child is None:
                warning_child = self._warning_children[reason] = self.warnings.labels(reason)
            warning_child.inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def serve_metrics(
    exposition: Callable[[], bytes], host: str, port: int, sock: socket.socket | None = None
) -> ThreadingHTTPServer:
    """Serve `GET /metrics` on a daemon thread; other paths are 404. With `sock` (a worker's
    socket, bound by the supervisor) it serves there instead of binding host:port."""

    class Handler(BaseHTTPRequestHandler):
        timeout = 10  # a scraper that stops reading must not hold a thread forever

        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] != "/metrics":
                self._reply(404, b"not found\n", "text/plain; charset=utf-8")
                return
            try:
                body = exposition()
            except OSError as exc:  # --workers: a worker's metrics could not be read
                self._reply(503, f"{exc}\n".encode(), "text/plain; charset=utf-8")
                return
            self._reply(200, body, CONTENT_TYPE_LATEST)

        def _reply(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Scrapes are not worth a log line each."""

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def server_bind(self) -> None:
            if self.address_family == socket.AF_INET6 and host == "":
                self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            super().server_bind()

    if sock is not None:
        server = Server(sock.getsockname()[:2], Handler, bind_and_activate=False)
        server.socket.close()
        server.socket = sock
        server.server_activate()
        threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
        return server
    if host == "" or ":" in host:  # "" is every interface: IPv4 and IPv6 on one socket
        Server.address_family = socket.AF_INET6
    try:
        server = Server(("::" if host == "" else host, port), Handler)
    except OSError:
        if host != "":
            raise
        Server.address_family = socket.AF_INET  # no IPv6 in this kernel
        server = Server(("", port), Handler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
