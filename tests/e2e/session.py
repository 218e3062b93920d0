"""One test cluster per pytest session: etcd, kube-apiserver, lifecycle-webhook, registration."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..tools import Tools, build_tools
from .cluster import ControlPlane, start_control_plane
from .kube import INJECT, Kube, Obj
from .procs import ManagedProcess
from .server import RELEASE_NAMESPACE, WebhookServer
from .webhooks import Registration, WebhookSetup


@dataclass
class E2E:
    workdir: Path
    tools: Tools
    plane: ControlPlane
    server: WebhookServer
    registration: Registration
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def kube(self) -> Kube:
        return self.plane.kube

    def use(self, setup: WebhookSetup) -> Obj:
        started = time.monotonic()
        configuration = self.registration.use(setup)
        self.timings.setdefault("webhook registered and active", time.monotonic() - started)
        return configuration

    def processes(self) -> list[ManagedProcess]:
        found = [self.server.process] if self.server.process else []
        return [*found, *self.plane.processes()]


def start(workdir: Path, stack: contextlib.ExitStack) -> E2E:
    """Everything torn down by `stack`, in reverse order, also when a later step fails."""
    timings: dict[str, float] = {}
    tools = build_tools()
    timings["tools check/build"] = tools.build_seconds
    plane = start_control_plane(tools, workdir, stack)
    timings["etcd + kube-apiserver ready"] = plane.start_seconds
    server = WebhookServer(workdir, plane.ca, plane.kubeconfig)
    stack.callback(server.stop)
    try:
        server.start()
    except Exception as exc:
        raise RuntimeError(f"{exc}\n{plane.apiserver.tail(3000)}") from exc
    timings["lifecycle-webhook ready"] = server.start_seconds
    kube = plane.kube
    if not kube.namespace_exists(RELEASE_NAMESPACE):
        # labelled for injection, so "never mutated there" is the chart's exclusion at work
        kube.create_namespace(name=RELEASE_NAMESPACE, labels={INJECT: "enabled"})
    registration = Registration(kube, tools.helm, workdir, server.url, plane.ca.cert_pem)
    stack.callback(registration.close)
    return E2E(workdir, tools, plane, server, registration, timings)
