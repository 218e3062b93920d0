"""The Service cache: what it keeps of a Service, its index by namespace, its read budget."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from typing import Any

from webhook.cluster.api import ApiServer
from webhook.cluster.live import NEEDS_LOOKUP
from webhook.cluster.services import TARGET_GROUP_ATTRIBUTES, ServiceCache, service_summary
from webhook.logs import JsonLog

from .fake_api import is_watch, respond, send_event, start_stream, wait_for

TG = TARGET_GROUP_ATTRIBUTES


def service(
    name: str,
    namespace: str = "shop",
    version: int = 1,
    kind: str | None = "ClusterIP",
    selector: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "resourceVersion": str(version)}
    if annotations:
        meta["annotations"] = annotations
    spec: dict[str, Any] = {"ports": [{"port": 80}], "clusterIP": "10.0.0.1"}
    if kind:
        spec["type"] = kind
    if selector is not None:
        spec["selector"] = selector
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": spec}


def test_a_summary_keeps_what_exposure_needs_and_nothing_else() -> None:
    balancer = service(
        "web",
        kind="LoadBalancer",
        selector={"app": "web"},
        annotations={TG: "deregistration_delay.timeout_seconds=120", "other": "x"},
    )
    assert service_summary(balancer) == {
        "name": "web",
        "type": "LoadBalancer",
        "selector": {"app": "web"},
        "annotations": {TG: "deregistration_delay.timeout_seconds=120"},
    }
    manifest = service("plain", kind=None)  # a manifest may leave the type to the default
    assert service_summary(manifest) == {
        "name": "plain",
        "type": "ClusterIP",
        "selector": {},
        "annotations": {},
    }
    external = service("db", kind="ExternalName", selector={"app": "db"})
    assert service_summary(external)["selector"] == {}, "an ExternalName selects no pod"  # type: ignore[index]
    assert service_summary({"metadata": {}}) is None


def test_services_in_answers_from_the_watch_by_namespace(fake: Any, stopped_after: Any) -> None:
    go = threading.Event()

    def handler(path: str, tls: ssl.SSLSocket) -> None:
        if not is_watch(path):
            items = [service("b"), service("a", selector={"app": "a"}), service("x", "other")]
            respond(tls, 200, {"items": items, "metadata": {"resourceVersion": "5"}})
            return
        start_stream(tls)
        go.wait(5)
        send_event(tls, "MODIFIED", service("a", version=6, selector={"app": "new"}))
        send_event(tls, "DELETED", service("b", version=7))
        send_event(tls, "ADDED", service("c", "empty", version=8, kind="NodePort"))
        time.sleep(30)

    server = fake(handler)
    cache = stopped_after(ServiceCache(server.api(), JsonLog("error"))).start()
    assert cache.informer.synced.wait(5)
    assert [s["name"] for s in cache.services_in("shop")] == ["a", "b"]
    assert cache.services_in("none-here") == ()
    go.set()
    wait_for(lambda: cache.services_in("empty") != ())
    assert cache.services_in("shop") == (
        {"name": "a", "type": "ClusterIP", "selector": {"app": "new"}, "annotations": {}},
    )
    assert cache.peek("empty") == (
        {"name": "c", "type": "NodePort", "selector": {}, "annotations": {}},
    )
    assert [s["name"] for s in cache.services_in("other")] == ["x"]
    assert not any("/namespaces/" in p for p in server.paths), "no live read once synced"


def test_before_the_sync_one_live_list_per_namespace_answers(fake: Any, stopped_after: Any) -> None:
    def handler(path: str, tls: ssl.SSLSocket) -> None:
        if path.startswith("/api/v1/services"):
            time.sleep(30)  # the cluster-wide list is slow: not synced for a while
        elif "/namespaces/shop/" in path:
            time.sleep(0.2)
            respond(tls, 200, {"items": [service("web"), service("api")], "metadata": {}})
        else:
            time.sleep(30)  # never answers

    server = fake(handler)
    cache = stopped_after(ServiceCache(server.api(), JsonLog("error"), lookup_timeout=0.3)).start()
    assert cache.peek("shop") is NEEDS_LOOKUP
    results: list[Any] = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.services_in("shop")))
        for _ in range(10)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert [[s["name"] for s in r] for r in results] == [["api", "web"]] * 10
    assert sum("/namespaces/shop/services" in p for p in server.paths) == 1
    assert [s["name"] for s in cache.peek("shop")] == ["api", "web"], "remembered a while"

    assert cache.services_in("slow") is None, "unknown: the caller warns"
    assert cache.services_in("slow") is None
    assert sum("/namespaces/slow/services" in p for p in server.paths) == 1


def test_with_nothing_at_the_address_services_are_unknown_without_a_read(
    stopped_after: Any,
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        nothing_listens = probe.getsockname()[1]
    absent = ApiServer(
        f"https://127.0.0.1:{nothing_listens}", ssl.create_default_context(), lambda: None
    )
    cache = stopped_after(ServiceCache(absent, JsonLog("error"))).start()
    wait_for(lambda: cache.informer.unreachable)
    assert cache.peek("shop") is None
    assert cache.services_in("shop") is None
