"""lifecycle-webhook's real HTTPS server, run as a subprocess the way the chart runs it.

The serving pair lives in a directory laid out like a Secret volume the kubelet mounts
(`tls.crt -> ..data/tls.crt`, `..data -> ..<timestamp>`), and rotation swaps `..data`
atomically, exactly as the kubelet does when cert-manager or the bootstrap renews the Secret.
"""

from __future__ import annotations

import contextlib
import os
import signal
import ssl
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from webhook.certs import KeyPair, generate_serving

from ..pki import as_bytes
from ..tools import REPO
from .cluster import Host, https_get
from .procs import ManagedProcess, wait_until

START_TIMEOUT_SECONDS = 30
RELOAD_TIMEOUT_SECONDS = 15
DEFAULT_CONFIG = "{}\n"
"""An empty config file: every setting at its built-in default."""
RELEASE_NAMESPACE = "lifecycle-webhook"
"""The namespace the chart is rendered for; the webhook is told it runs there."""


class SecretVolume:
    """A directory with kubelet AtomicWriter semantics for `tls.crt` and `tls.key`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True)
        self._generation = 0

    @property
    def cert_path(self) -> Path:
        return self.directory / "tls.crt"

    @property
    def key_path(self) -> Path:
        return self.directory / "tls.key"

    def write(self, pair: KeyPair) -> None:
        self._generation += 1
        stamp = time.strftime("..%Y_%m_%d_%H_%M_%S.") + f"{os.getpid()}_{self._generation}"
        payload = self.directory / stamp
        payload.mkdir()
        (payload / "tls.crt").write_bytes(as_bytes(pair.cert_pem))
        (payload / "tls.key").write_bytes(as_bytes(pair.key_pem))
        data = self.directory / "..data"
        previous = os.readlink(data) if data.is_symlink() else None
        staging = self.directory / "..data_tmp"
        with contextlib.suppress(FileNotFoundError):
            staging.unlink()
        staging.symlink_to(stamp)
        staging.rename(data)  # the atomic step
        for name in ("tls.crt", "tls.key"):
            link = self.directory / name
            if not link.is_symlink():
                link.symlink_to(f"..data/{name}")
        if previous:
            for leftover in (self.directory / previous).iterdir():
                leftover.unlink()
            (self.directory / previous).rmdir()


class WebhookServer:
    """`python -m webhook serve` on 127.0.0.1, or on `address` inside the node of `host`.

    By default its pair comes from the test CA (IP SAN: the address; DNS SANs: `dns_names`) in
    a `SecretVolume`; `serving=(cert, key)` runs it on files someone else keeps current (the
    bootstrap)."""

    def __init__(
        self,
        workdir: Path,
        ca: KeyPair,
        kubeconfig: Path,
        serving: tuple[Path, Path] | None = None,
        name: str = "lifecycle-webhook",
        host: Host | None = None,
        address: str = "127.0.0.1",
        dns_names: tuple[str, ...] = ("localhost",),
        drain_seconds: float = 1,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.workdir = workdir
        self.ca = ca
        self.kubeconfig = kubeconfig
        self.name = name
        self.host = host or Host()
        self.address = address
        self.dns_names = dns_names
        self.drain_seconds = drain_seconds
        self.extra_args = tuple(extra_args)
        """More `serve` flags after the ones every test server gets."""
        self.port = self.host.port("webhook")
        self.metrics_port = self.host.port("webhook-metrics")
        self.volume: SecretVolume | None = None
        if serving is None:
            self.volume = SecretVolume(workdir / f"{name}-tls")
            self.volume.write(self.new_serving_pair())
            serving = (self.volume.cert_path, self.volume.key_path)
        self.cert_path, self.key_path = serving
        self.config_path = workdir / f"{name}-config.yaml"
        self.config_path.write_text(DEFAULT_CONFIG)
        self.process: ManagedProcess | None = None
        self.start_seconds = 0.0

    def new_serving_pair(self) -> KeyPair:
        return generate_serving(self.ca, list(self.dns_names), [self.address], 2)

    @property
    def url(self) -> str:
        return f"https://{self.address}:{self.port}/mutate"

    def argv(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "webhook",
            "serve",
            f"--host={self.address}",
            f"--port={self.port}",
            f"--metrics-port={self.metrics_port}",
            f"--tls-cert={self.cert_path}",
            f"--tls-key={self.key_path}",
            f"--kubeconfig={self.kubeconfig}",
            f"--config={self.config_path}",
            f"--drain-seconds={self.drain_seconds:g}",
            *self.extra_args,
        ]

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.name} was not started"
        return self.process.pid

    def start(self) -> ManagedProcess:
        started = time.monotonic()
        env = dict(os.environ)
        env["POD_NAMESPACE"] = RELEASE_NAMESPACE
        env["PYTHONUNBUFFERED"] = "1"
        process = self.host.spawn(
            self.name, self.argv(), self.workdir / f"{self.name}.log", env=env, cwd=REPO
        )
        self.process = process

        def ready() -> bool:
            process.check_alive()
            return self.ready()

        wait_until(ready, START_TIMEOUT_SECONDS, f"{self.name} /readyz", on_timeout=process.tail)
        self.start_seconds = time.monotonic() - started
        return process

    def ready(self) -> bool:
        """GET /readyz answers 200. Any certificate is accepted: this is only "is it up"; the
        tests verify the served certificate themselves."""
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        port = self.host.reach(self.port, self.address)
        status, _ = https_get(f"https://127.0.0.1:{port}/readyz", context, timeout=2)
        return status == 200

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def rotate(self) -> KeyPair:
        """A new serving pair from the same CA, swapped in the way the kubelet does it."""
        assert self.volume is not None, "this server's files are kept by someone else"
        pair = self.new_serving_pair()
        self.volume.write(pair)
        return pair

    def set_config(self, text: str) -> None:
        """Replaces the config file and waits until the server has loaded it (SIGHUP wakes
        its file poller, as `kubectl exec … kill -HUP 1` would)."""
        if self.config_path.read_text() == text:
            return
        assert self.process is not None
        before = self.config_reloads("success")
        staging = self.config_path.with_name(".config-staging")
        staging.write_text(text)
        staging.replace(self.config_path)
        self.process.popen.send_signal(signal.SIGHUP)
        process = self.process
        wait_until(
            lambda: self.config_reloads("success") > before,
            RELOAD_TIMEOUT_SECONDS,
            "the webhook to reload its config file",
            on_timeout=process.tail,
        )

    def config_reloads(self, result: str) -> float:
        return metric_value(
            self.metrics(), "lifecycle_webhook_config_reloads_total", {"result": result}
        )

    def metrics(self) -> str:
        import urllib.request

        url = f"http://127.0.0.1:{self.host.reach(self.metrics_port, self.address)}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())


def metric_value(text: str, name: str, labels: dict[str, str]) -> float:
    """Sum of the samples of `name` whose labels include `labels` (Prometheus text format)."""
    wanted = [f'{key}="{value}"' for key, value in labels.items()]
    total = 0.0
    for line in text.splitlines():
        if line.startswith((name + "{", name + " ")):
            series, _, value = line.rpartition(" ")
            if all(label in series for label in wanted):
                total += float(value)
    return total
