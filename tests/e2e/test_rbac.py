"""The chart's ClusterRole is what the webhook's caches need: with it, a ServiceAccount's token
watches Namespaces (labels and annotations) and Services; without its `services` rule, the
Services are unknown (so that rule is needed), and nothing asks for `get` on a Service."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path

import pytest
import yaml

from webhook.cluster.api import ApiServer, connect
from webhook.cluster.namespaces import NamespaceCache
from webhook.cluster.services import ServiceCache
from webhook.logs import JsonLog

from .kube import Obj, unique_name
from .procs import wait_until
from .session import E2E
from .webhooks import render_chart

pytestmark = pytest.mark.e2e

SECONDS = 15


def chart_cluster_role(e2e: E2E, tmp_path: Path) -> Obj:
    """The ClusterRole the server's caches run with (the other one is the bootstrap's)."""
    documents = render_chart(e2e.tools.helm, tmp_path, {})
    (role,) = [
        d
        for d in documents
        if d["kind"] == "ClusterRole" and d["metadata"]["name"].endswith("-namespaces")
    ]
    return role


def as_service_account(
    e2e: E2E, tmp_path: Path, rules: list[Obj], role_rules: Mapping[str, list[Obj]] | None = None
) -> ApiServer:
    """A client with the token of a fresh ServiceAccount bound to a ClusterRole of `rules`, and
    in each namespace of `role_rules` to a Role of those rules."""
    kube = e2e.kube
    namespace = kube.create_namespace("rbac")
    account = unique_name("webhook")
    kube.ensure_service_account(namespace, account)
    subject = {"kind": "ServiceAccount", "name": account, "namespace": namespace}
    for where, namespaced in (role_rules or {}).items():
        name = unique_name("e2e-webhook-role")
        base = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{where}"
        kube.request(
            "POST",
            f"{base}/roles",
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": {"name": name},
                "rules": namespaced,
            },
        )
        kube.request(
            "POST",
            f"{base}/rolebindings",
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": name},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                "subjects": [subject],
            },
        )
    role = unique_name("e2e-webhook-reader")
    kube.request(
        "POST",
        "/apis/rbac.authorization.k8s.io/v1/clusterroles",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": role},
            "rules": rules,
        },
    )
    kube.request(
        "POST",
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": role},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": role,
            },
            "subjects": [subject],
        },
    )
    token = kube.request(
        "POST",
        f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token",
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 600},
        },
    ).body["status"]["token"]
    admin = yaml.safe_load(e2e.plane.kubeconfig.read_text())
    config = copy.deepcopy(admin)
    config["users"] = [{"name": account, "user": {"token": token}}]
    config["contexts"][0]["context"]["user"] = account
    path = tmp_path / "service-account.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    server = connect(str(path))
    assert server is not None
    return server


def service(name: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"type": "LoadBalancer", "selector": {"app": "web"}, "ports": [{"port": 80}]},
    }


def test_the_chart_role_lets_the_caches_watch_namespaces_and_services(
    e2e: E2E, tmp_path: Path
) -> None:
    role = chart_cluster_role(e2e, tmp_path)
    assert {"list", "watch"} == set(
        next(r for r in role["rules"] if r.get("resources") == ["services"])["verbs"]
    )
    api = as_service_account(e2e, tmp_path, role["rules"])
    target = e2e.kube.create_namespace("watched", labels={"team": "a"})
    e2e.kube.request("POST", f"/api/v1/namespaces/{target}/services", service("edge"))

    services = ServiceCache(api, JsonLog("error")).start()
    namespaces = NamespaceCache(api, JsonLog("error")).start()
    try:
        assert services.informer.synced.wait(SECONDS), "list+watch of Services"
        assert namespaces.informer.synced.wait(SECONDS), "list+watch of Namespaces"
        wait_until(
            lambda: [s["name"] for s in services.services_in(target) or ()] == ["edge"],
            SECONDS,
            "the Service through the watch",
        )
        info = namespaces.lookup(target)
        assert info is not None and info.labels.get("team") == "a"
        assert version_readable(api)
    finally:
        assert services.informer.stop() and namespaces.informer.stop()


def version_readable(api: ApiServer) -> bool:
    return isinstance(api.get("/version", 5), dict)


def test_without_the_services_rule_exposure_is_unknown(e2e: E2E, tmp_path: Path) -> None:
    role = chart_cluster_role(e2e, tmp_path)
    rules = [r for r in role["rules"] if r.get("resources") != ["services"]]
    api = as_service_account(e2e, tmp_path, rules)
    target = e2e.kube.create_namespace("unwatched")
    services = ServiceCache(api, JsonLog("error"), lookup_timeout=2).start()
    try:
        assert not services.informer.synced.wait(2), "a 403 list never syncs"
        assert services.services_in(target) is None, "a 403 live list: unknown, not none"
    finally:
        assert services.informer.stop()


def test_services_are_never_read_one_by_one(e2e: E2E, tmp_path: Path) -> None:
    """No `get`: a role with only list and watch serves a namespace's Services live too."""
    rules = [{"apiGroups": [""], "resources": ["services"], "verbs": ["list"]}]
    api = as_service_account(e2e, tmp_path, rules)
    target = e2e.kube.create_namespace("listed")
    e2e.kube.request("POST", f"/api/v1/namespaces/{target}/services", service("edge"))
    services = ServiceCache(api, JsonLog("error"), lookup_timeout=2)  # not started: live reads
    found = services.services_in(target)
    assert found is not None and [s["name"] for s in found] == ["edge"]
