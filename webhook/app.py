"""The admission HTTP app: POST /mutate, GET /healthz, GET /readyz.

/mutate is a plain ASGI endpoint mounted in the FastAPI router: raw body, orjson, no
pydantic, no Request/Response objects. FastAPI's per-request dependency solving and
response classes would cost more than the mutation itself (research anchors-performance 4).
An unexpected exception answers HTTP 500, so the API server's failurePolicy decides;
a bug never becomes a denial.
"""

from __future__ import annotations

import asyncio
import re
import time
import traceback
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any, TypeVar

import orjson
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from webhook.admission import (
    DEFAULT_MAX_BODY_BYTES,
    BadReview,
    ReviewRequest,
    build_response,
    parse_review,
)
from webhook.cluster.live import Lookup
from webhook.cluster.namespaces import NamespaceInfo, NamespaceSource
from webhook.cluster.services import Services, ServiceSource, StaticServices
from webhook.connections import ARRIVED
from webhook.core.model import NEWEST_KNOWN_VERSION, Config, Mutation, Settings
from webhook.core.profiles import annotations_read_services, config_reads_services
from webhook.logs import JsonLog
from webhook.metrics import Metrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
T = TypeVar("T")


@dataclass(eq=False)
class ServerState:
    """What the request path reads; reloaders replace fields, requests never write them."""

    config: Config
    namespaces: NamespaceSource
    metrics: Metrics
    log: JsonLog
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    cluster_version_override: tuple[int, int] | None = None
    """--cluster-version; wins over the config file."""
    detected_version: tuple[int, int] | None = None
    """From the API server's /version, when the config says `auto`."""
    version_resolved: bool = False
    """Detection finished (or was not needed); readiness waits for it."""
    certificates_loaded: bool = False
    draining: bool = False
    services: ServiceSource = field(default_factory=StaticServices)
    """The Services of each namespace, for profiles' exposure and fromLoadBalancer."""
    watch_services: Callable[[], object] | None = field(init=False, default=None)
    """Starts the Service watch once the config needs it (see `on_services_needed`)."""
    cluster_version: tuple[int, int] = field(init=False, default=NEWEST_KNOWN_VERSION)
    services_needed: bool = field(init=False, default=False)
    """The config reads Services for every pod (a profile tests exposure, fromLoadBalancer)."""

    def __post_init__(self) -> None:
        self._refresh_version()
        self._refresh_services()

    def on_services_needed(self, start: Callable[[], object]) -> None:
        """Call `start` (again a no-op) now and on every config that reads Services."""
        self.watch_services = start
        self._refresh_services()

    def _refresh_services(self) -> None:
        self.services_needed = config_reads_services(self.config)
        if self.services_needed and self.watch_services is not None:
            self.watch_services()

    def _refresh_version(self) -> None:
        self.cluster_version = (
            self.cluster_version_override
            or self.config.cluster_version
            or self.detected_version
            or NEWEST_KNOWN_VERSION
        )

    def set_config(self, config: Config) -> None:
        self.config = config
        self._refresh_version()
        self._refresh_services()

    def set_detected_version(self, version: tuple[int, int] | None) -> None:
        self.detected_version = version
        self.version_resolved = True
        self._refresh_version()

    def not_ready_because(self) -> list[str]:
        reasons = []
        if not self.certificates_loaded:
            reasons.append("certificates not loaded")
        if not self.version_resolved:
            reasons.append("cluster version not resolved")
        if self.draining:
            reasons.append("shutting down")
        return reasons


def _is_json(content_type: bytes) -> bool:
    media_type = content_type.split(b";", 1)[0].strip().lower()
    return media_type == b"application/json"


def _annotations(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    metadata = pod.get("metadata")
    annotations = metadata.get("annotations") if isinstance(metadata, dict) else None
    return annotations if isinstance(annotations, dict) else None


def _error_body(message: str) -> bytes:
    return orjson.dumps({"error": message})


LIVE_READ_DEADLINE = 0.75
"""The most cache misses (the namespace, its Services) may add to a review, whatever the API
server does: well inside the 2 s the chart gives the API server's call to us (timeoutSeconds)."""


async def _read_live(read: Callable[[str], T | None], name: str, deadline: float) -> T | None:
    """A live read off the event loop; past `deadline` (monotonic), "could not be read"."""
    import anyio
    from anyio import to_thread

    with anyio.move_on_after(deadline - time.monotonic()):
        return await to_thread.run_sync(read, name, abandon_on_cancel=True)
    return None


DEFAULT_REVIEW_TIMEOUT = 10.0
"""The API server's default webhook timeout, for a request without `?timeout=`."""
SHED_CHECK_AFTER = 1.0
"""Younger requests are never stale: the query is parsed only for older ones."""
_GO_DURATION = re.compile(rb"(?:^|&)timeout=((?:[0-9]+(?:\.[0-9]*)?(?:ns|us|\xc2\xb5s|ms|s|m|h))+)")
_DURATION_PART = re.compile(rb"([0-9]+(?:\.[0-9]*)?)(ns|us|\xc2\xb5s|ms|s|m|h)")
_UNIT_SECONDS = {b"ns": 1e-9, b"us": 1e-6, b"\xc2\xb5s": 1e-6, b"ms": 1e-3, b"s": 1.0, b"m": 60.0}
_UNIT_SECONDS[b"h"] = 3600.0


def review_timeout(query: bytes) -> float:
    """The budget the API server gave this call: its `timeout` query parameter, a Go duration
    such as `2s` or `1m0s`; DEFAULT_REVIEW_TIMEOUT when absent or unreadable."""
    found = _GO_DURATION.search(query)
    if found is None:
        return DEFAULT_REVIEW_TIMEOUT
    seconds = sum(
        float(number) * _UNIT_SECONDS[unit]
        for number, unit in _DURATION_PART.findall(found.group(1))
    )
    return seconds if seconds > 0 else DEFAULT_REVIEW_TIMEOUT


class MutateEndpoint:
    """POST /mutate as a raw ASGI app."""

    def __init__(self, state: ServerState) -> None:
        from webhook.core import mutate

        self.state = state
        self.mutate = mutate
        self._shed_since_log = 0
        self._shed_logged_at = 0.0

    def _stale(self, scope: Scope) -> float | None:
        """Seconds the request has waited, when longer than its timeout: the API server has
        given up on it, so answering would only delay the reviews behind it."""
        arrived = scope.get(ARRIVED)
        if arrived is None:
            return None
        waited: float = asyncio.get_running_loop().time() - arrived
        if waited < SHED_CHECK_AFTER or waited < review_timeout(scope["query_string"]):
            return None
        return waited

    async def _shed(self, send: Send, waited: float) -> None:
        self.state.metrics.reviews_shed.inc()
        self._shed_since_log += 1
        now = time.monotonic()
        if now - self._shed_logged_at >= 1.0:  # one line a second at most, under overload
            self.state.log.event(
                "reviews shed",
                level="warning",
                count=self._shed_since_log,
                waited_seconds=round(waited, 3),
                detail="waited longer than their timeout; answered 503 without a review",
            )
            self._shed_since_log, self._shed_logged_at = 0, now
        message = f"review waited {waited:.1f} s, longer than its timeout; not reviewed"
        await self._reply(send, 503, _error_body(message), close=True)

    async def _reply(self, send: Send, status: int, body: bytes, close: bool = False) -> None:
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        if close or self.state.draining:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _invalid(
        self, send: Send, started: float, status: int, message: str, close: bool = False
    ) -> None:
        self._record(None, "invalid", perf_counter() - started, status=status, error=message)
        await self._reply(send, status, _error_body(message), close=close)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = perf_counter()
        state = self.state
        limit = state.max_body_bytes
        for name, value in scope["headers"]:
            if name == b"content-type":
                if not _is_json(value):
                    await self._invalid(
                        send,
                        started,
                        415,
                        "Content-Type must be application/json",
                        close=True,
                    )
                    return
            elif name == b"content-length" and (not value.isdigit() or int(value) > limit):
                await self._invalid(
                    send, started, 413, f"body larger than {limit} bytes", close=True
                )
                return

        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away; nobody to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self._invalid(
                    send, started, 413, f"body larger than {limit} bytes", close=True
                )
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        waited = self._stale(scope)
        if waited is not None:
            await self._shed(send, waited)
            return

        review: ReviewRequest | None = None
        try:
            review = parse_review(body)
            answer, mutation = await self._answer(review)
        except BadReview as exc:
            await self._invalid(send, started, 400, exc.message)
            return
        except Exception as exc:
            await self._reply(send, 500, _error_body("internal error; see the webhook's log"))
            self._record(
                review,
                "error",
                perf_counter() - started,
                status=500,
                error=f"{type(exc).__name__}: {exc}",
                traceback="".join(traceback.format_exception(exc)),
            )
            return
        await self._reply(send, 200, answer)
        if mutation is None:
            self._record(review, "skipped", perf_counter() - started)
        else:
            self._record(
                review,
                mutation.outcome,
                perf_counter() - started,
                mutation.features,
                tuple(w.reason for w in mutation.warnings),
                profile=mutation.profile,
                exposure=mutation.exposure,
            )

    def _record(
        self,
        review: ReviewRequest | None,
        outcome: str,
        seconds: float,
        features: tuple[str, ...] = (),
        reasons: tuple[str, ...] = (),
        *,
        profile: str | None = None,
        exposure: str | None = None,
        status: int = 200,
        error: str | None = None,
        traceback: str | None = None,
    ) -> None:
        """The metrics and the one log line of a review (`review` None: the body was unusable)."""
        operation = review.operation if review else ""
        self.state.metrics.review(
            operation or "other", outcome, seconds, features, reasons, profile, exposure
        )
        self.state.log.review(
            uid=review.uid if review else "",
            namespace=review.namespace if review else "",
            name=review.name if review else "",
            owner_kind=review.owner_kind if review else "",
            owner_name=review.owner_name if review else "",
            operation=operation,
            outcome=outcome,
            features=features,
            warnings=len(reasons),
            duration_ms=seconds * 1000,
            dry_run=review.dry_run if review else False,
            profile=profile,
            exposure=exposure,
            status=status,
            error=error,
            traceback=traceback,
        )

    async def _answer(self, review: ReviewRequest) -> tuple[bytes, Mutation | None]:
        if review.pod is None:
            return orjson.dumps(build_response(review, None)), None
        state = self.state
        # One budget for every live read of this review: the cache answers almost always.
        deadline = time.monotonic() + LIVE_READ_DEADLINE
        peeked = state.namespaces.peek(review.namespace)
        info: NamespaceInfo | None
        if isinstance(peeked, Lookup):
            info = await _read_live(state.namespaces.lookup, review.namespace, deadline)
        else:
            info = peeked
        annotations = info.annotations if info is not None else None
        services: Services | None = None
        if state.services_needed or annotations_read_services(
            annotations, _annotations(review.pod)
        ):
            found = state.services.peek(review.namespace)
            if isinstance(found, Lookup):
                services = await _read_live(state.services.services_in, review.namespace, deadline)
            else:
                services = found
        settings = Settings(
            config=state.config,
            namespace=review.namespace,
            namespace_annotations=annotations,
            namespace_labels=info.labels if info is not None else None,
            services=services,
            cluster_version=state.cluster_version,
        )
        mutation = self.mutate(review.pod, settings)
        return orjson.dumps(build_response(review, mutation)), mutation


class AdmissionApp:
    """POST /mutate goes straight to its endpoint; everything else to FastAPI.

    FastAPI's middleware stack and router cost about 19 µs per review, a fifth of the whole
    request on a 3 KB pod (measured with `make bench`). Health, readiness, lifespan, 404s
    and 405s stay with FastAPI, where /mutate is registered too.
    """

    def __init__(self, endpoint: MutateEndpoint, fallback: FastAPI) -> None:
        self.endpoint = endpoint
        self.fallback = fallback

    @property
    def routes(self) -> list[Any]:
        return list(self.fallback.routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == "/mutate":
            await self.endpoint(scope, receive, send)
        else:
            await self.fallback(scope, receive, send)


def create_app(state: ServerState) -> AdmissionApp:
    """The ASGI app for one server (no API docs routes: the port faces the API server only)."""
    endpoint = MutateEndpoint(state)
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.router.add_route("/mutate", endpoint, methods=["POST"])  # type: ignore[arg-type]

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        return JSONResponse({"alive": True})

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        reasons = state.not_ready_because()
        if reasons:
            return JSONResponse({"ready": False, "reasons": reasons}, status_code=503)
        return JSONResponse({"ready": True})

    return AdmissionApp(endpoint, app)
