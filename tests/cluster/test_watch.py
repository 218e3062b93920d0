"""The informer against a fake API server: paging, 410s, bookmarks, backoff, memory, stop."""

from __future__ import annotations

import json
import os
import ssl
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from webhook.cluster.watch import Informer
from webhook.logs import JsonLog

from .fake_api import (
    end_stream,
    gone,
    is_watch,
    respond,
    send_event,
    silence,
    start_stream,
    wait_for,
)

PODS = "/api/v1/pods"


def query(path: str) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(urlsplit(path).query).items()}


def pod(name: str, version: int, image: str = "app:1", namespace: str = "shop") -> dict[str, Any]:
    meta = {"name": name, "namespace": namespace, "resourceVersion": str(version)}
    return {"metadata": meta, "spec": {"containers": [{"name": "app", "image": image}]}}


def image_of(obj: dict[str, Any]) -> str:
    return str(obj["spec"]["containers"][0]["image"])


def page(items: list[dict[str, Any]], version: str, token: str = "") -> dict[str, Any]:
    meta = {"resourceVersion": version} | ({"continue": token} if token else {})
    return {"items": items, "metadata": meta}


class Recorder:
    """The callbacks of one informer, as a list of what they were called with."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def options(self) -> dict[str, Any]:
        return {
            "on_add": lambda key, new: self.calls.append(("add", key, new)),
            "on_update": lambda key, old, new: self.calls.append(("update", key, old, new)),
            "on_delete": lambda key, old: self.calls.append(("delete", key, old)),
            "on_relist": lambda store: self.calls.append(("relist", dict(store))),
        }


def informer(server: Any, stopped_after: Any, **options: Any) -> Informer[Any]:
    options.setdefault("log", JsonLog("error"))
    options.setdefault("transform", image_of)
    made: Informer[Any] = Informer(server.api(), PODS, name="pod", **options)
    stopped_after(made)
    return made.start()


def test_a_paged_list_follows_its_continue_tokens_then_watches_from_its_version(
    fake: Any, stopped_after: Any
) -> None:
    pods = [pod(f"p{i}", 10 + i) for i in range(5)]

    def handler(path: str, tls: ssl.SSLSocket) -> None:
        if is_watch(path):
            silence(tls)
            return
        start = int(query(path).get("continue", "0"))
        limit = int(query(path)["limit"])
        rest = str(start + limit) if start + limit < len(pods) else ""
        respond(tls, 200, page(pods[start : start + limit], "20", rest))

    server = fake(handler)
    recorder = Recorder()
    watched = informer(server, stopped_after, page_size=2, **recorder.options())
    assert watched.synced.wait(5)
    assert watched.snapshot() == {f"shop/p{i}": "app:1" for i in range(5)}
    lists = [query(p) for p in server.paths if not is_watch(p)]
    assert lists == [
        {"limit": "2"},
        {"limit": "2", "continue": "2"},
        {"limit": "2", "continue": "4"},
    ]
    wait_for(lambda: any(is_watch(p) for p in server.paths))
    watch = query(next(p for p in server.paths if is_watch(p)))
    assert watch["resourceVersion"] == "20" and watch["allowWatchBookmarks"] == "true"
    assert int(watch["timeoutSeconds"]) > 0
    assert [c[0] for c in recorder.calls] == ["add"] * 5 + ["relist"]


def test_an_expired_continue_token_starts_the_list_over(fake: Any, stopped_after: Any) -> None:
    expired = threading.Event()

    def handler(path: str, tls: ssl.SSLSocket) -> None:
        token = query(path).get("continue")
        if is_watch(path):
            silence(tls)
        elif token is None:
            respond(tls, 200, page([pod("a", 11)], "30" if expired.is_set() else "20", "t"))
        elif not expired.is_set():  # the first list took longer than etcd keeps its snapshot
            expired.set()
            gone(tls)
        else:
            respond(tls, 200, page([pod("b", 12)], "30"))

    server = fake(handler)
    watched = informer(server, stopped_after, page_size=1)
    assert watched.synced.wait(5)
    assert watched.snapshot() == {"shop/a": "app:1", "shop/b": "app:1"}
    wait_for(lambda: any(is_watch(p) for p in server.paths))
    assert query(next(p for p in server.paths if is_watch(p)))["resourceVersion"] == "30"
    assert not watched.failing


@pytest.mark.parametrize("how", ["error event", "http status"])
def test_410_gone_relists_and_reports_what_changed_meanwhile(
    fake: Any, stopped_after: Any, how: str
) -> None:
    """Deletions missed while the watch was too old still reach the consumer (counts!)."""
    lists = []

    def handler(path: str, tls: ssl.SSLSocket) -> None:
        if not is_watch(path):
            lists.append(path)
            if len(lists) == 1:
                respond(tls, 200, page([pod("a", 11), pod("b", 12), pod("c", 13)], "20"))
            else:  # a deleted, b changed, c the same, d new
                items = [pod("b", 31, "app:2"), pod("c", 13), pod("d", 32)]
                respond(tls, 200, page(items, "40"))
        elif query(path)["resourceVersion"] == "40":
            silence(tls)
        elif how == "http status":
            gone(tls)
        else:
            start_stream(tls)
            send_event(tls, "ERROR", {"kind": "Status", "code": 410, "reason": "Expired"})
            time.sleep(30)

    server = fake(handler)
    recorder = Recorder()
    watched = informer(server, stopped_after, **recorder.options())
    wait_for(lambda: len(lists) == 2 and len(recorder.calls) == 8)
    assert recorder.calls[4:] == [
        ("delete", "shop/a", "app:1"),
        ("update", "shop/b", "app:1", "app:2"),
        ("add", "shop/d", "app:1"),
        ("relist", {"shop/b": "app:2", "shop/c": "app:1", "shop/d": "app:1"}),
    ]
    assert watched.current


def test_a_watch_that_ends_resumes_from_its_last_event_or_bookmark(
    fake: Any, stopped_after: Any
) -> None:
    watches: list[str] = []

    def handler(path: str, tls: ssl.SSLSocket) -> None:
        if not is_watch(path):
            respond(tls, 200, page([pod("a", 11)], "20"))
            return
        watches.append(query(path)["resourceVersion"])
        start_stream(tls)
        if len(watches) == 1:
            send_event(tls, "MODIFIED", pod("a", 21, "app:2"))
            send_event(tls, "BOOKMARK", {"kind": "Pod", "metadata": {"resourceVersion": "25"}})
            end_stream(tls)  # timeoutSeconds reached
        elif len(watches) == 2:
            send_event(tls, "ADDED", pod("b", 26))
            send_event(tls, "DELETED", pod("a", 27, "app:2"))
            end_stream(tls)
        else:
            time.sleep(30)

    server = fake(handler)
    recorder = Recorder()
    watched = informer(server, stopped_after, **recorder.options())
    wait_for(lambda: len(watches) == 3)
    assert watches == ["20", "25", "27"]
    assert sum(not is_watch(p) for p in server.paths) == 1, "a watch that ends is no relist"
    assert watched.snapshot() == {"shop/b": "app:1"}
    assert recorder.calls[2:] == [
        ("update", "shop/a", "app:1", "app:2"),
        ("add", "shop/b", "app:1"),
        ("delete", "shop/a", "app:2"),
    ]


def test_errors_back_off_and_resume_the_watch_without_a_relist(
    fake: Any, stopped_after: Any
) -> None:
    failing = threading.Event()
    failing.set()

    def handler(path: str, tls: ssl.SSLSocket) -> None:
        if not is_watch(path):
            respond(tls, 200, page([pod("a", 11)], "20"))
        elif failing.is_set():
            respond(tls, 500, {"kind": "Status", "code": 500, "reason": "InternalError"})
        else:
            silence(tls)

    server = fake(handler)
    watched = informer(server, stopped_after)
    assert watched.synced.wait(5)
    time.sleep(2)  # backoff from 0.5 s, doubling: 3 or 4 tries, not hundreds
    tries = [query(p) for p in server.paths if is_watch(p)]
    assert 2 <= len(tries) <= 5, len(tries)
    assert watched.failing and not watched.current
    assert watched.get("shop/a") == "app:1", "a failing watch keeps what it had"
    failing.clear()
    wait_for(lambda: watched.current, 10)
    watches = [query(p) for p in server.paths if is_watch(p)]
    assert {w["resourceVersion"] for w in watches} == {"20"}, "each resumed from where it was"
    assert sum(not is_watch(p) for p in server.paths) == 1


def test_a_silent_watch_is_reopened_after_the_read_timeout(fake: Any, stopped_after: Any) -> None:
    def handler(path: str, tls: ssl.SSLSocket) -> None:
        if not is_watch(path):
            respond(tls, 200, page([], "20"))
        else:
            start_stream(tls)
            send_event(tls, "ADDED", pod("a", 21))
            time.sleep(30)  # a connection that died without closing

    server = fake(handler)
    informer(server, stopped_after, read_timeout=0.3)
    wait_for(lambda: sum(is_watch(p) for p in server.paths) >= 3)
    versions = [query(p)["resourceVersion"] for p in server.paths if is_watch(p)]
    assert versions[:3] == ["20", "21", "21"]
    assert sum(not is_watch(p) for p in server.paths) == 1


def test_selectors_go_on_the_list_and_the_watch(fake: Any, stopped_after: Any) -> None:
    def handler(path: str, tls: ssl.SSLSocket) -> None:
        if is_watch(path):
            silence(tls)
        else:
            respond(tls, 200, page([], "20"))

    server = fake(handler)
    informer(server, stopped_after, field_selector="status.phase!=Failed", label_selector="a=b")
    wait_for(lambda: any(is_watch(p) for p in server.paths))
    for path in server.paths[:2]:
        assert query(path)["fieldSelector"] == "status.phase!=Failed"
        assert query(path)["labelSelector"] == "a=b"


def test_the_transform_decides_what_is_kept(fake: Any, stopped_after: Any) -> None:
    """None keeps nothing; a change to None is a delete; a change the transform does not
    keep is no update at all."""

    def handler(path: str, tls: ssl.SSLSocket) -> None:
        if not is_watch(path):
            respond(tls, 200, page([pod("a", 11), pod("skip", 12, "")], "20"))
            return
        start_stream(tls)
        labelled = pod("a", 21)
        labelled["metadata"]["labels"] = {"new": "label"}  # not in what is kept
        send_event(tls, "MODIFIED", labelled)
        send_event(tls, "MODIFIED", pod("a", 22, ""))
        send_event(tls, "ADDED", {"metadata": {"resourceVersion": "23"}})  # no name: ignored
        send_event(tls, "ADDED", pod("b", 24))
        time.sleep(30)

    server = fake(handler)
    recorder = Recorder()
    watched = informer(
        server, stopped_after, transform=lambda obj: image_of(obj) or None, **recorder.options()
    )
    wait_for(lambda: watched.get("shop/b") is not None)
    assert watched.snapshot() == {"shop/b": "app:1"}
    assert recorder.calls == [
        ("add", "shop/a", "app:1"),
        ("relist", {"shop/a": "app:1"}),
        ("delete", "shop/a", "app:1"),
        ("add", "shop/b", "app:1"),
    ]


def test_the_store_holds_what_the_transform_keeps_not_the_objects(
    fake: Any, stopped_after: Any
) -> None:
    """2,000 pods of 10 KB each (20 MB of JSON), listed 25 a page: the store costs what the
    kept tuples cost (under 1 KB a pod), and only about a page is ever held at once (orjson
    needs ~15 times a page's bytes while it parses it, then returns them)."""
    count, size, per_page = 2000, 10_000, 25
    pages = []  # rendered before memory is traced: only the informer's side is measured
    for start in range(0, count, per_page):
        items = [pod(f"p{i}", i) for i in range(start, start + per_page)]
        for item in items:
            item["metadata"]["annotations"] = {"blob": "x" * size}
        rest = str(start + per_page) if start + per_page < count else ""
        body = json.dumps(page(items, "5000", rest)).encode()
        head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)
        pages.append(head + body)

    def handler(path: str, tls: ssl.SSLSocket) -> None:
        if is_watch(path):
            silence(tls)
        else:
            tls.sendall(pages[int(query(path).get("continue", "0")) // per_page])

    server = fake(handler)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        watched = informer(
            server,
            stopped_after,
            page_size=per_page,
            transform=lambda obj: (obj["metadata"]["name"], image_of(obj)),
        )
        assert watched.synced.wait(60)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(watched) == count
    assert current - before < count * 1000, f"{current - before} bytes kept for {count} pods"
    assert peak - before < count * size / 3, f"peak {peak - before} bytes: more than a page"


def test_a_failing_transform_or_callback_is_logged_and_the_watch_goes_on(
    fake: Any, stopped_after: Any, tmp_path: Path
) -> None:
    def handler(path: str, tls: ssl.SSLSocket) -> None:
        if not is_watch(path):
            respond(tls, 200, page([pod("a", 11), {"metadata": {"name": "odd"}}], "20"))
            return
        start_stream(tls)
        send_event(tls, "ADDED", pod("b", 21))
        send_event(tls, "ADDED", pod("c", 22))
        time.sleep(30)

    def on_add(key: str, value: str) -> None:
        if key == "shop/b":
            raise ValueError("consumer bug")

    log_file = tmp_path / "log"
    fd = os.open(log_file, os.O_WRONLY | os.O_CREAT, 0o600)
    server = fake(handler)
    watched = informer(server, stopped_after, on_add=on_add, log=JsonLog("error", fd=fd))
    wait_for(lambda: watched.get("shop/c") is not None)
    watched.stop()
    os.close(fd)
    assert watched.snapshot() == {"shop/a": "app:1", "shop/b": "app:1", "shop/c": "app:1"}
    lines = [json.loads(x) for x in log_file.read_text().splitlines()]
    assert [(x["event"], x["error"]) for x in lines] == [
        ("pod cache transform failed", "KeyError: 'spec'"),
        ("pod cache callback failed", "ValueError: consumer bug"),
    ]


@pytest.mark.parametrize("where", ["in a silent watch", "in a backoff sleep"])
def test_stop_ends_the_thread(fake: Any, stopped_after: Any, where: str) -> None:
    def handler(path: str, tls: ssl.SSLSocket) -> None:
        if where == "in a backoff sleep":
            respond(tls, 503, {"kind": "Status", "code": 503})
        elif is_watch(path):
            silence(tls)
        else:
            respond(tls, 200, page([], "20"))

    server = fake(handler)
    watched = informer(server, stopped_after)  # the read timeout is minutes
    wait_for(lambda: any(is_watch(p) for p in server.paths) or watched.failing)
    time.sleep(0.2)
    assert watched.stop(timeout=10)
    requests = len(server.paths)
    time.sleep(0.6)
    assert len(server.paths) == requests, "nothing is requested after stop()"


def test_relist_judges_every_object_again_without_reporting_a_failure(
    fake: Any, stopped_after: Any
) -> None:
    """`relist()` cuts the watch short and lists again, so a transform that reads more than
    the object (the detector's settings) sees every object anew; it is not an outage."""
    suffix = ["-a"]

    def handler(path: str, tls: ssl.SSLSocket) -> None:
        if is_watch(path):
            silence(tls)
        else:
            respond(tls, 200, page([pod("a", 11), pod("b", 12)], "20"))

    server = fake(handler)
    recorder = Recorder()
    watched = informer(
        server,
        stopped_after,
        transform=lambda obj: image_of(obj) + suffix[0],
        **recorder.options(),
    )
    assert watched.synced.wait(5)
    wait_for(lambda: any(is_watch(p) for p in server.paths))
    suffix[0] = "-b"
    watched.relist()
    wait_for(lambda: watched.get("shop/a") == "app:1-b")
    assert watched.snapshot() == {"shop/a": "app:1-b", "shop/b": "app:1-b"}
    assert sum(1 for p in server.paths if not is_watch(p)) == 2
    updates = [c for c in recorder.calls if c[0] == "update"]
    assert updates == [
        ("update", "shop/a", "app:1-a", "app:1-b"),
        ("update", "shop/b", "app:1-a", "app:1-b"),
    ]
    assert not watched.failing
