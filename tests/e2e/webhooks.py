"""The MutatingWebhookConfiguration the tests register: rendered from the chart with the real
helm binary, with only `clientConfig` switched to a 127.0.0.1 URL and its `caBundle`.

The API server learns about a new configuration through an informer, so every switch is
followed by probing with dry-run creates until the behaviour the new configuration implies
is observed (and the old one's is gone).
"""

from __future__ import annotations

import base64
import copy
import os
import socket
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from ..tools import REPO
from .kube import INJECT, ApiError, Kube, Obj, is_mutated, make_pod, unique_name
from .procs import free_port, wait_until
from .server import RELEASE_NAMESPACE

CHART = REPO / "charts" / "lifecycle-webhook"
RELEASE = "e2e"
KUBE_VERSION = "1.34.4"
ACTIVATION_TIMEOUT_SECONDS = 30

Target = Literal["live", "refused", "blackhole"]


@dataclass(frozen=True)
class WebhookSetup:
    """What the test needs registered. `failure_policy` defaults to Fail (a chart value) so a
    broken call fails loudly instead of silently leaving a pod unmutated."""

    mode: Literal["namespace", "cluster"] = "namespace"
    failure_policy: Literal["Fail", "Ignore"] = "Fail"
    target: Target = "live"
    """live: our server; refused: a closed port; blackhole: a port that accepts and never answers."""
    values: tuple[tuple[str, str], ...] = field(default=())
    """More `--set` chart values."""

    def chart_values(self) -> dict[str, str]:
        return {"mode": self.mode, "failurePolicy": self.failure_policy, **dict(self.values)}


def helm_env(workdir: Path) -> dict[str, str]:
    """helm's cache, config and data directories inside the test's tmp dir (hermetic)."""
    env = dict(os.environ)
    for name in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
        env[name] = str(workdir / "helm" / name.lower())
    return env


def render_chart(
    helm: Path, workdir: Path, values: Mapping[str, str], release: str = RELEASE
) -> list[Obj]:
    argv = [
        str(helm),
        "template",
        release,
        str(CHART),
        "--namespace",
        RELEASE_NAMESPACE,
        "--kube-version",
        KUBE_VERSION,
    ]
    for key, value in values.items():
        argv += ["--set", f"{key}={value}"]
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=60, env=helm_env(workdir), check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def mutating_configuration(documents: list[Obj]) -> Obj:
    found = [doc for doc in documents if doc.get("kind") == "MutatingWebhookConfiguration"]
    if len(found) != 1:
        raise AssertionError(
            f"the chart rendered {len(found)} MutatingWebhookConfigurations, not 1"
        )
    return found[0]


def point_at(configuration: Obj, url: str, ca_pem: bytes) -> Obj:
    """The same configuration with every webhook calling `url`; nothing else changes."""
    result = copy.deepcopy(configuration)
    for hook in result["webhooks"]:
        hook["clientConfig"] = {"url": url, "caBundle": base64.b64encode(ca_pem).decode()}
    return result


class Blackhole:
    """A listening socket that never accepts: TLS handshakes to it hang until the caller's
    timeout, which is how a webhook whose process is stuck looks to the API server."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = int(self.sock.getsockname()[1])

    def close(self) -> None:
        self.sock.close()


class Registration:
    """Switches the chart's configuration between setups within one API server."""

    def __init__(self, kube: Kube, helm: Path, workdir: Path, live_url: str, ca_pem: bytes) -> None:
        self.kube = kube
        self.helm = helm
        self.workdir = workdir
        self.live_url = live_url
        self.ca_pem = ca_pem
        self.blackhole = Blackhole()
        self.refused_port = free_port()
        self.current: WebhookSetup | None = None
        self.configuration: Obj | None = None
        self._rendered: dict[tuple[tuple[str, str], ...], Obj] = {}
        self.probe_enabled = kube.create_namespace("e2e-probe-on", labels={INJECT: "enabled"})
        self.probe_plain = kube.create_namespace("e2e-probe-plain")

    def close(self) -> None:
        self.blackhole.close()

    def rendered(self, setup: WebhookSetup) -> Obj:
        key = tuple(sorted(setup.chart_values().items()))
        if key not in self._rendered:
            documents = render_chart(self.helm, self.workdir, setup.chart_values())
            self._rendered[key] = mutating_configuration(documents)
        return self._rendered[key]

    def url_for(self, target: Target) -> str:
        if target == "live":
            return self.live_url
        port = self.refused_port if target == "refused" else self.blackhole.port
        return f"https://127.0.0.1:{port}/mutate"

    @property
    def name(self) -> str:
        assert self.configuration is not None
        return str(self.configuration["metadata"]["name"])

    def use(self, setup: WebhookSetup) -> Obj:
        """Registers `setup` (unless it is already active) and waits until it is in effect."""
        if setup == self.current:
            assert self.configuration is not None
            return self.configuration
        configuration = point_at(self.rendered(setup), self.url_for(setup.target), self.ca_pem)
        self.kube.apply_mutating_webhook_configuration(configuration)
        self.configuration = configuration
        self.current = None
        wait_until(
            lambda: self.in_effect(setup),
            ACTIVATION_TIMEOUT_SECONDS,
            f"webhook configuration {setup} to take effect",
            interval=0.2,
        )
        self.current = setup
        return configuration

    def apply_unmanaged(self, configuration: Obj) -> None:
        """Registers a hand-edited variant (a test's control); the next `use` re-applies."""
        self.kube.apply_mutating_webhook_configuration(configuration)
        self.current = None

    def probe(self, namespace: str) -> Obj | ApiError:
        pod = make_pod(unique_name("probe"))
        try:
            return self.kube.create_pod(namespace, pod, dry_run=True).body
        except ApiError as exc:
            if exc.code >= 500 or "failed calling webhook" in exc.message:
                return exc
            raise

    def in_effect(self, setup: WebhookSetup) -> bool:
        enabled = self.probe(self.probe_enabled)
        if setup.target != "live":
            if setup.failure_policy == "Fail":
                return isinstance(enabled, ApiError)
            return not isinstance(enabled, ApiError) and not is_mutated(enabled)
        if isinstance(enabled, ApiError) or not is_mutated(enabled):
            return False
        plain = self.probe(self.probe_plain)
        if isinstance(plain, ApiError):
            return False
        return is_mutated(plain) == (setup.mode == "cluster")
