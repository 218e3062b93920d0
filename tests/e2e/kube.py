"""Plain-JSON calls to the test API server through the `kubernetes` client's transport.

The generated typed models would drop fields they do not know and rename the rest; the tests
compare exactly what the API server stored, so requests and answers stay plain dicts.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from kubernetes import config as kube_config
from kubernetes.client import ApiClient

from webhook.core.model import PREFIX, STATUS_KEY

Obj = dict[str, Any]

INJECT = PREFIX + "inject"
_names = itertools.count(1)


class ApiError(Exception):
    """A non-2xx answer; `status` is the API server's `Status` object when it sent one."""

    def __init__(self, code: int, body: str, warnings: list[str] | None = None) -> None:
        self.code = code
        self.body = body
        self.warnings = warnings or []
        try:
            self.status: Obj = json.loads(body)
        except ValueError:
            self.status = {}
        super().__init__(f"HTTP {code}: {self.message or body[:2000]}")

    @property
    def message(self) -> str:
        return str(self.status.get("message", ""))


@dataclass
class Response:
    body: Obj
    warnings: list[str]


def unique_name(prefix: str) -> str:
    """Names unique within the session (namespaces are never really deleted: no controllers)."""
    return f"{prefix}-{os.getpid() % 10000}-{next(_names)}"


class Kube:
    def __init__(self, kubeconfig: Path) -> None:
        self.api: ApiClient = kube_config.new_client_from_config(config_file=str(kubeconfig))

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: dict[str, str] | None = None,
        content_type: str = "application/json",
        timeout: float = 30,
    ) -> Response:
        url = self.api.configuration.host + path
        if query:
            url += "?" + urlencode(query)
        headers = {"Accept": "application/json", "Content-Type": content_type}
        raw = self.api.call_api(
            method, url, header_params=headers, body=body, _request_timeout=timeout
        )
        data: bytes = raw.read()
        text = data.decode() if data else ""
        warnings = [_unquote_warning(w) for w in raw.headers.getlist("Warning")]
        if not 200 <= raw.status <= 299:
            raise ApiError(raw.status, text, warnings)
        return Response(json.loads(text) if text else {}, warnings)

    # -- namespaces --------------------------------------------------------------------------

    def create_namespace(
        self,
        prefix: str = "e2e",
        labels: dict[str, str] | None = None,
        annotations: dict[str, str] | None = None,
        name: str | None = None,
    ) -> str:
        """A namespace plus its `default` ServiceAccount (no controller creates it here)."""
        name = name or unique_name(prefix)
        meta: Obj = {"name": name}
        if labels:
            meta["labels"] = labels
        if annotations:
            meta["annotations"] = annotations
        self.request(
            "POST",
            "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": meta},
        )
        self.ensure_service_account(name, "default")
        return name

    def ensure_service_account(self, namespace: str, name: str) -> None:
        try:
            self.request(
                "POST",
                f"/api/v1/namespaces/{namespace}/serviceaccounts",
                {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}},
            )
        except ApiError as exc:
            if exc.code != 409:
                raise

    def namespace_exists(self, name: str) -> bool:
        try:
            self.request("GET", f"/api/v1/namespaces/{name}")
        except ApiError as exc:
            if exc.code == 404:
                return False
            raise
        return True

    def patch_namespace(self, name: str, metadata: Obj) -> Obj:
        """Merge patch of labels/annotations; a key set to None is removed."""
        return self.request(
            "PATCH",
            f"/api/v1/namespaces/{name}",
            {"metadata": metadata},
            content_type="application/merge-patch+json",
        ).body

    # -- pods --------------------------------------------------------------------------------

    def create_pod(
        self, namespace: str, pod: Obj, dry_run: bool = False, timeout: float = 30
    ) -> Response:
        query = {"dryRun": "All"} if dry_run else None
        return self.request(
            "POST", f"/api/v1/namespaces/{namespace}/pods", pod, query, timeout=timeout
        )

    def create_and_read_pod(self, namespace: str, pod: Obj) -> Obj:
        """Creates the pod and returns what the API server stored (a fresh GET)."""
        created = self.create_pod(namespace, pod).body
        return self.get_pod(namespace, created["metadata"]["name"])

    def list_pods(self, namespace: str) -> list[Obj]:
        return list(self.request("GET", f"/api/v1/namespaces/{namespace}/pods").body["items"])

    def get_pod(self, namespace: str, name: str) -> Obj:
        return self.request("GET", f"/api/v1/namespaces/{namespace}/pods/{quote(name)}").body

    def patch_pod(self, namespace: str, name: str, patch: Obj) -> Response:
        return self.request(
            "PATCH",
            f"/api/v1/namespaces/{namespace}/pods/{quote(name)}",
            patch,
            content_type="application/merge-patch+json",
        )

    # -- cluster-scoped admission configuration ---------------------------------------------

    def apply_mutating_webhook_configuration(self, config: Obj) -> Obj:
        """Create or replace (PUT with the current resourceVersion)."""
        path = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"
        name = config["metadata"]["name"]
        try:
            current = self.request("GET", f"{path}/{name}").body
        except ApiError as exc:
            if exc.code != 404:
                raise
            return self.request("POST", path, config).body
        body = json.loads(json.dumps(config))
        body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        return self.request("PUT", f"{path}/{name}", body).body

    def get_mutating_webhook_configuration(self, name: str) -> Obj:
        path = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"
        return self.request("GET", f"{path}/{name}").body

    def delete_mutating_webhook_configuration(self, name: str) -> None:
        path = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"
        try:
            self.request("DELETE", f"{path}/{name}")
        except ApiError as exc:
            if exc.code != 404:
                raise


def _unquote_warning(header: str) -> str:
    """`299 - "text"` -> `text` (RFC 7234 warn-code, agent, quoted text)."""
    with contextlib.suppress(UnicodeError):  # http.client decodes as latin-1; it is UTF-8
        header = header.encode("latin-1").decode("utf-8")
    parts = header.split(" ", 2)
    if len(parts) == 3 and parts[2].startswith('"') and parts[2].endswith('"'):
        return parts[2][1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return header


def make_pod(
    name: str = "app",
    containers: list[Obj] | None = None,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    **spec: Any,
) -> Obj:
    """A Pod the API server accepts without nodes: it is stored and stays Pending."""
    meta: Obj = {"name": name}
    if labels:
        meta["labels"] = labels
    if annotations:
        meta["annotations"] = annotations
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {
            "containers": containers or [{"name": "app", "image": "registry.invalid/app:1"}],
            **spec,
        },
    }


def is_mutated(pod: Obj) -> bool:
    return STATUS_KEY in (pod.get("metadata", {}).get("annotations") or {})


def container(pod: Obj, name: str) -> Obj:
    for entry in pod["spec"].get("containers", []) + pod["spec"].get("initContainers", []):
        if entry["name"] == name:
            return dict(entry)
    raise KeyError(f"no container {name!r} in pod {pod['metadata'].get('name')}")


def pre_stop(pod: Obj, name: str) -> Obj | None:
    lifecycle = container(pod, name).get("lifecycle") or {}
    hook = lifecycle.get("preStop")
    return dict(hook) if hook is not None else None


def owner_reference(obj: Obj) -> Obj:
    """A controller reference to `obj`, as its controller would write it on what it owns."""
    return {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "name": obj["metadata"]["name"],
        "uid": obj["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def create_deployment_with_replicaset(kube: Kube, namespace: str, name: str) -> Obj:
    """A Deployment and its ReplicaSet as the controller would have made them (no controller
    runs here), both with 0 replicas; returns the ReplicaSet, whose pods the caller creates."""
    labels = {"app": name}
    template: Obj = {
        "metadata": {"labels": labels},
        "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:1"}]},
    }
    spec = {"replicas": 0, "selector": {"matchLabels": labels}, "template": template}
    path = f"/apis/apps/v1/namespaces/{namespace}"
    deployment = kube.request(
        "POST",
        f"{path}/deployments",
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name}, "spec": spec},
    ).body
    metadata = {
        "name": f"{name}-5d8f7",
        "labels": labels,
        "ownerReferences": [owner_reference(deployment)],
    }
    return kube.request(
        "POST",
        f"{path}/replicasets",
        {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": metadata, "spec": spec},
    ).body
