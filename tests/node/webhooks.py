"""lifecycle-webhook on the node, called the way a cluster calls it: through a Service.

Two server processes (the chart's default of two replicas) listen on their own node addresses.
The chart's Service (without its pod selector: the replicas are processes, not pods) and an
EndpointSlice listing both addresses stand in front of them, and the chart's
MutatingWebhookConfiguration is registered unchanged but for its `caBundle`: the API server
resolves `clientConfig.service` to the ClusterIP and kube-proxy's rules carry the call.

`EndpointSlice` conditions play the part of the EndpointSlice controller: when a replica is
deleted in a cluster its endpoint turns `ready: false, terminating: true` at once, and the
replica keeps serving through its preStop and drain; a replica that is back is `ready` again
once its /readyz answers.
"""

from __future__ import annotations

import base64
import copy
import signal
import time
from dataclasses import dataclass
from typing import Literal

from ..e2e.kube import INJECT, ApiError, Kube, Obj, is_mutated, make_pod, unique_name
from ..e2e.procs import wait_until
from ..e2e.server import RELEASE_NAMESPACE, WebhookServer
from ..e2e.webhooks import mutating_configuration, render_chart
from ..pki import as_bytes
from .cluster import Node, NodeHost
from .sandbox import EXTRA_ADDRESSES

RELEASE = "lw"
SLICE_NAME = "lifecycle-webhook-node-replicas"
ACTIVATION_TIMEOUT_SECONDS = 60
DRAIN_SECONDS = 5
"""The chart's default `server.drainSeconds`."""

EndpointState = Literal["ready", "terminating"]


@dataclass
class Replica:
    server: WebhookServer
    state: EndpointState | None = None
    """None: not in the EndpointSlice."""


class NodeWebhooks:
    def __init__(self, node: Node, host: NodeHost) -> None:
        self.node = node
        self.kube: Kube = node.kube
        documents = render_chart(
            node.tools.helm, node.workdir, {"mode": "namespace", "failurePolicy": "Fail"}, RELEASE
        )
        self.configuration = mutating_configuration(documents)
        services = [doc for doc in documents if doc.get("kind") == "Service"]
        assert len(services) == 1, [doc["metadata"]["name"] for doc in services]
        self.service = services[0]
        self.service_name = str(self.service["metadata"]["name"])
        dns = f"{self.service_name}.{RELEASE_NAMESPACE}.svc"
        self.replicas = [
            Replica(
                WebhookServer(
                    node.workdir,
                    node.plane.ca,
                    node.inside_kubeconfig,
                    name=f"lifecycle-webhook-{index}",
                    host=host,
                    address=address,
                    dns_names=(dns, f"{dns}.cluster.local"),
                    drain_seconds=DRAIN_SECONDS,
                )
            )
            for index, address in enumerate(EXTRA_ADDRESSES)
        ]
        self.failure_policy: str | None = None
        self.probe_namespace = self.kube.create_namespace("node-probe", labels={INJECT: "enabled"})

    # -- set-up --------------------------------------------------------------------------

    def start(self) -> None:
        kube = self.kube
        if not kube.namespace_exists(RELEASE_NAMESPACE):
            kube.create_namespace(name=RELEASE_NAMESPACE)
        service = copy.deepcopy(self.service)
        service["spec"].pop("selector", None)
        kube.request("POST", f"/api/v1/namespaces/{RELEASE_NAMESPACE}/services", service)
        for replica in self.replicas:
            replica.server.start()
            replica.state = "ready"
        self.publish()

    def register(self, failure_policy: Literal["Fail", "Ignore"]) -> None:
        """The chart's configuration with `failurePolicy`, trusted through its caBundle."""
        configuration = copy.deepcopy(self.configuration)
        bundle = base64.b64encode(as_bytes(self.node.plane.ca.cert_pem)).decode()
        for hook in configuration["webhooks"]:
            assert "service" in hook["clientConfig"], hook["clientConfig"]
            hook["clientConfig"]["caBundle"] = bundle
            hook["failurePolicy"] = failure_policy
        self.kube.apply_mutating_webhook_configuration(configuration)
        self.failure_policy = failure_policy
        if any(replica.state == "ready" for replica in self.replicas):
            wait_until(
                self.mutates,
                ACTIVATION_TIMEOUT_SECONDS,
                "pods mutated through the Service",
                interval=0.5,
            )

    def unregister(self) -> None:
        """Removes the configuration (the chart test installs its own)."""
        self.kube.delete_mutating_webhook_configuration(self.configuration["metadata"]["name"])
        self.failure_policy = None

    def mutates(self) -> bool:
        """A dry-run pod in an injected namespace comes back mutated."""
        try:
            pod = self.kube.create_pod(
                self.probe_namespace, make_pod(unique_name("probe")), dry_run=True
            ).body
        except ApiError:
            return False
        return is_mutated(pod)

    # -- the EndpointSlice -----------------------------------------------------------------

    def publish(self) -> None:
        """Writes every replica's state to the EndpointSlice (create or replace)."""
        endpoints = [
            {
                "addresses": [replica.server.address],
                "conditions": {
                    "ready": replica.state == "ready",
                    "serving": True,
                    "terminating": replica.state == "terminating",
                },
                "nodeName": "lwnode",
            }
            for replica in self.replicas
            if replica.state is not None
        ]
        port = self.replicas[0].server.port
        body: Obj = {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": SLICE_NAME,
                "namespace": RELEASE_NAMESPACE,
                "labels": {
                    "kubernetes.io/service-name": self.service_name,
                    "endpointslice.kubernetes.io/managed-by": "lifecycle-webhook-node-tests",
                },
            },
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
        }
        path = f"/apis/discovery.k8s.io/v1/namespaces/{RELEASE_NAMESPACE}/endpointslices"
        try:
            current = self.kube.request("GET", f"{path}/{SLICE_NAME}").body
        except ApiError as exc:
            if exc.code != 404:
                raise
            self.kube.request("POST", path, body)
            return
        body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        self.kube.request("PUT", f"{path}/{SLICE_NAME}", body)

    # -- replicas --------------------------------------------------------------------------

    def stop_all(self) -> None:
        """Every replica gone, as after `kubectl scale --replicas=0`: no endpoints left."""
        for replica in self.replicas:
            replica.state = None
        self.publish()
        for replica in self.replicas:
            replica.server.stop()

    def start_all(self) -> None:
        for replica in self.replicas:
            if replica.server.process is None or not replica.server.process.alive():
                replica.server.start()
            replica.state = "ready"
        self.publish()

    def restart(self, replica: Replica) -> float:
        """Deletes and recreates one replica the way a rollout does; returns its downtime.

        Its endpoint turns terminating and it gets SIGTERM at the same moment (the chart's
        preStop sleep would only add to its serving time); it drains, exits, starts again,
        and is ready in the slice once /readyz says so.
        """
        assert replica.server.process is not None
        replica.state = "terminating"
        self.publish()
        stopped = time.monotonic()
        replica.server.process.signal(signal.SIGTERM)
        replica.server.process.popen.wait(timeout=DRAIN_SECONDS + 30)
        replica.server.stop()
        replica.state = None
        self.publish()
        replica.server.start()
        replica.state = "ready"
        self.publish()
        return time.monotonic() - stopped
