"""The namespace cache against a scriptable fake API server that misbehaves on cue."""

from __future__ import annotations

import json
import os
import socket
import ssl
import threading
import time
from typing import Any

import anyio
import pytest

from webhook import app
from webhook.cluster import watch
from webhook.cluster.api import ApiServer
from webhook.cluster.live import NEEDS_LOOKUP
from webhook.cluster.namespaces import NamespaceCache, NamespaceInfo, StaticNamespaces
from webhook.logs import JsonLog

from .fake_api import is_watch, respond, send_event, silence, start_stream, wait_for

P = "lifecycle-webhook.io/"


def namespace(name: str, version: int, **annotations: str) -> dict[str, Any]:
    meta = {"name": name, "resourceVersion": str(version)}
    return {"metadata": meta | {"annotations": {P + k: v for k, v in annotations.items()}}}


def is_list(path: str) -> bool:
    return path.startswith("/api/v1/namespaces?") and not is_watch(path)


def an_empty_cluster(path: str, tls: ssl.SSLSocket) -> bool:
    """No namespaces and a watch that stays open, silent; False for anything else."""
    if is_list(path):
        respond(tls, 200, {"items": [], "metadata": {"resourceVersion": "5"}})
    elif is_watch(path):
        silence(tls)
    else:
        return False
    return True


def test_a_trickling_live_read_cannot_hold_a_review_past_the_deadline(
    fake: Any, stopped_after: Any
) -> None:
    def handler(path: str, tls: ssl.SSLSocket) -> None:
        if not an_empty_cluster(
            path, tls
        ):  # a live read, trickling: each piece in time, the whole not
            body = json.dumps(namespace("new", 6)).encode()
            message = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
            for i in range(0, len(message), 8):
                tls.sendall(message[i : i + 8])
                time.sleep(0.4)

    server = fake(handler)
    source = stopped_after(NamespaceCache(server.api(), JsonLog("error"))).start()
    assert source.informer.synced.wait(5)
    started = time.monotonic()
    deadline = started + app.LIVE_READ_DEADLINE
    result = anyio.run(app._read_live, source.lookup, "new", deadline)
    took = time.monotonic() - started
    assert result is None, "past the deadline the namespace counts as unreadable (a warning)"
    assert took < app.LIVE_READ_DEADLINE + 0.5


def test_concurrent_misses_make_one_read_and_a_failure_is_remembered(
    fake: Any, stopped_after: Any
) -> None:
    def handler(path: str, tls: ssl.SSLSocket) -> None:
        if not an_empty_cluster(path, tls):
            time.sleep(30)  # never answers

    server = fake(handler)
    source = stopped_after(
        NamespaceCache(server.api(), JsonLog("error"), lookup_timeout=0.3)
    ).start()
    assert source.informer.synced.wait(5)
    results: list[Any] = []
    threads = [
        threading.Thread(target=lambda: results.append(source.lookup("slow"))) for _ in range(20)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert results == [None] * 20
    reads = [p for p in server.paths if p.endswith("/namespaces/slow")]
    assert len(reads) == 1, reads
    assert source.lookup("slow") is None
    assert len([p for p in server.paths if p.endswith("/namespaces/slow")]) == 1


def test_watch_data_wins_over_an_older_live_read(fake: Any, stopped_after: Any) -> None:
    go = threading.Event()

    def handler(path: str, tls: ssl.SSLSocket) -> None:
        if is_list(path):
            respond(tls, 200, {"items": [], "metadata": {"resourceVersion": "5"}})
        elif is_watch(path):
            start_stream(tls)
            go.wait(5)
            send_event(tls, "ADDED", namespace("new", 6, **{"prestop-seconds": "1"}))
            send_event(tls, "MODIFIED", namespace("new", 7, **{"prestop-seconds": "2"}))
            send_event(tls, "ADDED", namespace("gone", 8))
            send_event(tls, "DELETED", namespace("gone", 9))
            time.sleep(30)
        else:  # the live read answers with the older version, after the watch moved on
            go.set()
            time.sleep(0.3)
            respond(tls, 200, namespace("new", 6, **{"prestop-seconds": "1"}))

    server = fake(handler)
    source = stopped_after(NamespaceCache(server.api(), JsonLog("error"), lookup_timeout=2)).start()
    assert source.informer.synced.wait(5)
    assert source.lookup("new") == NamespaceInfo({P + "prestop-seconds": "1"})
    wait_for(lambda: source.peek("new") == NamespaceInfo({P + "prestop-seconds": "2"}))
    wait_for(lambda: source.peek("gone") == NEEDS_LOOKUP)


def test_watches_that_end_at_once_are_retried_with_backoff(fake: Any, stopped_after: Any) -> None:
    def handler(path: str, tls: ssl.SSLSocket) -> None:
        if is_list(path):
            respond(tls, 200, {"items": [], "metadata": {"resourceVersion": "5"}})
        else:
            tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    server = fake(handler)
    stopped_after(NamespaceCache(server.api(), JsonLog("error"))).start()
    time.sleep(2)
    watches = [p for p in server.paths if is_watch(p)]
    assert 1 <= len(watches) <= 5, len(watches)


def test_a_silent_watch_is_reopened_from_its_resource_version(
    fake: Any, stopped_after: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(watch, "WATCH_READ_TIMEOUT", 0.5)

    def handler(path: str, tls: ssl.SSLSocket) -> None:
        if is_list(path):
            respond(tls, 200, {"items": [], "metadata": {"resourceVersion": "5"}})
        else:
            start_stream(tls)
            send_event(tls, "BOOKMARK", {"metadata": {"resourceVersion": "42"}})
            time.sleep(30)  # then silence: a connection that died without closing

    server = fake(handler)
    stopped_after(NamespaceCache(server.api(), JsonLog("error"))).start()
    wait_for(lambda: sum("resourceVersion=42" in p for p in server.paths) >= 1, 3)
    assert sum(is_list(p) for p in server.paths) == 1, "a stall is not a reason to list again"


def test_a_cluster_that_refuses_warns_per_pod_one_that_is_absent_does_not(
    fake: Any, stopped_after: Any
) -> None:
    def forbidden(path: str, tls: ssl.SSLSocket) -> None:
        respond(tls, 403, {"kind": "Status", "code": 403, "reason": "Forbidden"})

    server = fake(forbidden)
    refusing = stopped_after(
        NamespaceCache(server.api(), JsonLog("error"), lookup_timeout=0.3)
    ).start()
    wait_for(lambda: any(is_list(p) for p in server.paths))
    time.sleep(0.2)
    assert refusing.lookup("shop") is None, "RBAC missing: the core warns on every pod"

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        nothing_listens = probe.getsockname()[1]
    absent = ApiServer(f"https://127.0.0.1:{nothing_listens}", server.api().context, lambda: None)
    quiet = stopped_after(NamespaceCache(absent, JsonLog("error"), lookup_timeout=0.3)).start()
    wait_for(lambda: quiet.informer.unreachable)
    assert quiet.lookup("shop") == NamespaceInfo(), "no cluster: one log line, no per-pod warning"


def test_the_cache_keeps_our_annotations_and_the_labels_only(fake: Any, stopped_after: Any) -> None:
    shop = namespace("shop", 3, **{"prestop-seconds": "7"})
    shop["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] = "{}" * 500
    shop["metadata"]["labels"] = {"team": "web", "kubernetes.io/metadata.name": "shop"}
    shop["spec"] = {"finalizers": ["kubernetes"]}

    def handler(path: str, tls: ssl.SSLSocket) -> None:
        if is_list(path):
            respond(tls, 200, {"items": [shop], "metadata": {"resourceVersion": "5"}})
        elif is_watch(path):
            silence(tls)
        else:  # a live read keeps the same
            respond(tls, 200, shop | {"metadata": shop["metadata"] | {"name": "fresh"}})

    server = fake(handler)
    source = stopped_after(NamespaceCache(server.api(), JsonLog("error"))).start()
    assert source.informer.synced.wait(5)
    expected = NamespaceInfo(
        {P + "prestop-seconds": "7"}, {"team": "web", "kubernetes.io/metadata.name": "shop"}
    )
    assert source.peek("shop") == expected
    assert source.lookup("fresh") == expected


def test_static_namespaces_answer_annotations_and_labels_without_io() -> None:
    static = StaticNamespaces({"shop": {P + "prestop-seconds": "3"}}, labels={"batch": {"a": "b"}})
    assert static.peek("shop") == NamespaceInfo({P + "prestop-seconds": "3"})
    assert static.lookup("batch") == NamespaceInfo(labels={"a": "b"})
    assert static.peek("unknown") == NamespaceInfo()


def test_a_failing_cache_logs_once_and_says_when_it_is_back(
    fake: Any, stopped_after: Any, tmp_path: Any
) -> None:
    """The README's log events: `namespace cache unavailable` once per outage, then
    `namespace cache synced`. A cluster that answers with errors is not "not reachable"."""
    refusing = threading.Event()
    refusing.set()

    def handler(path: str, tls: ssl.SSLSocket) -> None:
        if refusing.is_set():
            respond(tls, 500, {"kind": "Status", "code": 500, "reason": "InternalError"})
        elif is_list(path):
            respond(
                tls, 200, {"items": [namespace("shop", 3)], "metadata": {"resourceVersion": "5"}}
            )
        else:
            silence(tls)

    log_file = tmp_path / "log"
    fd = os.open(log_file, os.O_WRONLY | os.O_CREAT, 0o600)
    server = fake(handler)
    source = stopped_after(NamespaceCache(server.api(), JsonLog("info", fd=fd))).start()
    wait_for(lambda: sum(is_list(p) for p in server.paths) >= 2, 10)  # retried, with backoff
    refusing.clear()
    assert source.informer.synced.wait(10)
    wait_for(lambda: "namespace cache synced" in log_file.read_text())
    source.stop()
    os.close(fd)
    events = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert [e["event"] for e in events] == ["namespace cache unavailable", "namespace cache synced"]
    assert events[0]["level"] == "error" and "HTTP 500" in events[0]["error"]
    assert events[1]["namespaces"] == 1
