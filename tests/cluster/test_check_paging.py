"""`check`'s paged list against a fake API server that expires the continue token: the run
starts over and counts every pod once; a token that keeps expiring is an error (exit 2 path).
The real API server's paging is tests/e2e/test_check.py (pages of 2)."""

from __future__ import annotations

import ssl
from urllib.parse import parse_qs, urlsplit

import pytest

from webhook.check import LIST_RESTARTS, Checker, CheckError
from webhook.core.model import Config
from webhook.detection.judge import NEVER_SEEN
from webhook.detection.owners import Owner
from webhook.detection.scope import chart_scope

from .fake_api import fake, gone, respond

__all__ = ["fake"]

NAMESPACE = {"metadata": {"name": "shop", "labels": {"lifecycle-webhook.io/inject": "enabled"}}}


def pod(name: str) -> dict[str, object]:
    return {
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {
            "containers": [{"name": "app", "image": "x"}],
            "terminationGracePeriodSeconds": 30,
        },
    }


def serve(expire: int):
    """Pods in pages of one (p0, p1, p2); the first `expire` continue requests get 410."""
    expired = {"count": 0}

    def handler(path: str, tls: ssl.SSLSocket) -> None:
        parts = urlsplit(path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        if parts.path == "/api/v1/namespaces":
            respond(tls, 200, {"items": [NAMESPACE], "metadata": {}})
            return
        token = query.get("continue", "")
        if token and expired["count"] < expire:
            expired["count"] += 1
            gone(tls)
            return
        index = int(token or 0)
        more = {"continue": str(index + 1)} if index < 2 else {}
        respond(tls, 200, {"items": [pod(f"p{index}")], "metadata": more})

    return handler


def checker(server) -> Checker:
    return Checker(server.api(), chart_scope("namespace", [], None), Config(), (1, 34), 1)


def test_an_expired_continue_token_starts_the_run_over_and_counts_each_pod_once(fake) -> None:
    server = fake(serve(expire=1))
    report = checker(server).run()
    assert report.checked == 3
    assert report.unprotected == {
        (Owner("shop", "Pod", p), NEVER_SEEN): 1 for p in ("p0", "p1", "p2")
    }
    listed = [p for p in server.paths if p.startswith("/api/v1/pods")]
    assert all("limit=1" in p for p in listed)
    assert all("fieldSelector=status.phase" in p for p in listed)


def test_a_token_that_keeps_expiring_is_an_error(fake) -> None:
    server = fake(serve(expire=LIST_RESTARTS))
    with pytest.raises(CheckError, match="continue token expired"):
        checker(server).run()
