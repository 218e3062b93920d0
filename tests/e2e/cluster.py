"""A real etcd and kube-apiserver on 127.0.0.1, envtest-style: no kubelet, no scheduler,
no controllers. Pods are stored and stay Pending, which is all an admission webhook needs.

Choices:
- The ServiceAccount admission plugin stays ON, as in every real cluster: it mutates pods
  (volumes, volumeMounts on every container, init containers included) before our webhook
  sees them, so the patches are proven against what the webhook really receives. The price
  is one `default` ServiceAccount per test namespace (`Kube.create_namespace`).
- API Priority and Fairness and profiling are off: less work on 2 shared cores.
- `--endpoint-reconciler-type=none`: the `kubernetes` Endpoints cannot hold 127.0.0.1.
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import ssl
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from webhook.certs import KeyPair, generate_ca, generate_serving

from ..pki import as_bytes, client_certificate
from ..tools import Tools
from .kube import Kube
from .pki import write_service_account_keys
from .procs import ManagedProcess, free_port, wait_until

START_TIMEOUT_SECONDS = 90
CERT_DAYS = 2


@dataclass(frozen=True)
class Host:
    """Where the control plane runs and how the test reaches it.

    The e2e suite runs it on this machine's 127.0.0.1; the node suite runs it inside the node's
    namespaces (tests/node), where processes are started with `nsenter` and reached through a
    relay, and the API server keeps the `kubernetes` Service's endpoints like a real one.
    """

    address: str = "127.0.0.1"
    """What etcd and kube-apiserver bind to and advertise."""
    service_range: str = "10.0.0.0/24"
    apiserver_flags: tuple[str, ...] = ("--endpoint-reconciler-type=none",)
    """`--endpoint-reconciler-type=none`: the `kubernetes` Endpoints cannot hold 127.0.0.1."""
    serving_ips: tuple[str, ...] = ("127.0.0.1",)
    fixed_ports: Mapping[str, int] = field(default_factory=dict)
    """etcd, etcd-peer, apiserver: ports to use instead of free ones (a fresh netns has all)."""

    def spawn(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> ManagedProcess:
        return ManagedProcess(name, argv, log_path, env=env, cwd=cwd)

    def reach(self, port: int, address: str | None = None) -> int:
        """The port on this machine's 127.0.0.1 that reaches `address:port` (default: the
        control plane's address)."""
        return port

    def port(self, role: str) -> int:
        return self.fixed_ports.get(role) or free_port()


@dataclass
class ControlPlane:
    workdir: Path
    ca: KeyPair
    ca_path: Path
    api_port: int
    kubeconfig: Path
    kube: Kube
    etcd: ManagedProcess
    apiserver: ManagedProcess
    start_seconds: float

    @property
    def server_url(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    def processes(self) -> list[ManagedProcess]:
        return [self.apiserver, self.etcd]


def https_get(url: str, context: ssl.SSLContext, timeout: float = 5) -> tuple[int, str]:
    """GET with a given TLS context; returns (status, body) for any HTTP status."""
    try:
        with urllib.request.urlopen(url, context=context, timeout=timeout) as response:
            return int(response.status), response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode(errors="replace")


def write_kubeconfig(
    path: Path, server: str, ca_pem: bytes, cert_pem: bytes, key_pem: bytes
) -> None:
    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "e2e",
                "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)},
            }
        ],
        "users": [
            {
                "name": "admin",
                "user": {"client-certificate-data": b64(cert_pem), "client-key-data": b64(key_pem)},
            }
        ],
        "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": "admin"}}],
        "current-context": "e2e",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)


def start_control_plane(
    tools: Tools, workdir: Path, stack: contextlib.ExitStack, host: Host | None = None
) -> ControlPlane:
    """Starts etcd and kube-apiserver; every process started is registered on `stack` first."""
    host = host or Host()
    started = time.monotonic()
    pki = workdir / "pki"
    pki.mkdir(parents=True)
    ca = generate_ca()
    ca_path = pki / "ca.crt"
    ca_path.write_bytes(as_bytes(ca.cert_pem))
    serving = generate_serving(ca, ["localhost"], list(host.serving_ips), CERT_DAYS)
    (pki / "apiserver.crt").write_bytes(as_bytes(serving.cert_pem))
    (pki / "apiserver.key").write_bytes(as_bytes(serving.key_pem))
    admin_cert, admin_key = client_certificate(ca.cert_pem, ca.key_pem, "admin", ["system:masters"])
    write_service_account_keys(pki / "sa.key", pki / "sa.pub")

    etcd_port, etcd_peer_port = host.port("etcd"), host.port("etcd-peer")
    api_port = host.port("apiserver")
    etcd_client_url = f"http://{host.address}:{etcd_port}"
    etcd_peer_url = f"http://{host.address}:{etcd_peer_port}"
    etcd = host.spawn(
        "etcd",
        [
            str(tools.etcd),
            "--name=e2e",
            f"--data-dir={workdir / 'etcd-data'}",
            f"--listen-client-urls={etcd_client_url}",
            f"--advertise-client-urls={etcd_client_url}",
            f"--listen-peer-urls={etcd_peer_url}",
            f"--initial-advertise-peer-urls={etcd_peer_url}",
            f"--initial-cluster=e2e={etcd_peer_url}",
            "--unsafe-no-fsync=true",
            "--log-level=warn",
        ],
        workdir / "etcd.log",
    )
    stack.callback(etcd.stop)

    def etcd_healthy() -> bool:
        etcd.check_alive()
        url = f"http://127.0.0.1:{host.reach(etcd_port)}/health"
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(json.loads(response.read()).get("health") == "true")

    wait_until(etcd_healthy, START_TIMEOUT_SECONDS, "etcd /health", on_timeout=etcd.tail)

    apiserver = host.spawn(
        "kube-apiserver",
        [
            str(tools.kube_apiserver),
            f"--etcd-servers={etcd_client_url}",
            f"--bind-address={host.address}",
            f"--secure-port={api_port}",
            f"--advertise-address={host.address}",
            *host.apiserver_flags,
            f"--cert-dir={pki}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={ca_path}",
            f"--service-account-issuer=https://{host.address}:{api_port}/",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--service-cluster-ip-range={host.service_range}",
            "--authorization-mode=RBAC",
            "--allow-privileged=true",
            "--enable-priority-and-fairness=false",
            "--profiling=false",
            "--v=1",
        ],
        workdir / "kube-apiserver.log",
    )
    stack.callback(apiserver.stop)

    context = ssl.create_default_context(cafile=str(ca_path))
    (pki / "admin.crt").write_bytes(admin_cert)
    (pki / "admin.key").write_bytes(admin_key)
    context.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))

    server = f"https://127.0.0.1:{host.reach(api_port)}"

    def apiserver_ready() -> bool:
        apiserver.check_alive()
        status, body = https_get(f"{server}/readyz", context)
        return status == 200 and body.strip() == "ok"

    wait_until(
        apiserver_ready,
        START_TIMEOUT_SECONDS,
        "kube-apiserver /readyz",
        interval=0.25,
        on_timeout=apiserver.tail,
    )

    kubeconfig = workdir / "admin.kubeconfig"
    write_kubeconfig(kubeconfig, server, as_bytes(ca.cert_pem), admin_cert, admin_key)
    kube = Kube(kubeconfig)
    wait_until(
        lambda: kube.namespace_exists("default"),
        START_TIMEOUT_SECONDS,
        "namespace default",
        interval=0.25,
        on_timeout=apiserver.tail,
    )
    return ControlPlane(
        workdir=workdir,
        ca=ca,
        ca_path=ca_path,
        api_port=api_port,
        kubeconfig=kubeconfig,
        kube=kube,
        etcd=etcd,
        apiserver=apiserver,
        start_seconds=time.monotonic() - started,
    )


def served_certificate(port: int, ca_pem: bytes, server_hostname: str = "127.0.0.1") -> bytes:
    """DER of the certificate a fresh TLS handshake with 127.0.0.1:port presents, verified
    against `ca_pem` for `server_hostname` the way the API server verifies a webhook (for a
    `service:` reference it checks `<service>.<namespace>.svc`)."""
    context = ssl.create_default_context(cadata=ca_pem.decode())
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=server_hostname) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der
