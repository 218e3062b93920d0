"""A one-node Kubernetes cluster inside the sandbox: the e2e control plane plus
kube-controller-manager, kube-scheduler, containerd (CRI, runc, CNI bridge), kubelet and
kube-proxy in iptables mode, all on the node address 10.200.0.1.

The configuration mirrors a kubeadm node where it matters to the tests (cgroupfs driver, CNI
bridge + host-local, kube-proxy iptables with its default sync periods, the ServiceAccount and
root-CA controllers) and departs from it only where this VM requires (see each comment).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..e2e.cluster import ControlPlane, Host, start_control_plane, write_kubeconfig
from ..e2e.kube import Kube
from ..e2e.procs import ManagedProcess, run_checked, wait_until
from ..tools import Tools
from .images import Images
from .sandbox import NODE_ADDRESS, POD_RANGE, SERVICE_RANGE, Relay, Sandbox, remove_cgroups

NODE_NAME = "lwnode"
API_PORT = 6443
WEBHOOK_PORT = 8443
WEBHOOK_METRICS_PORT = 9090
CONTAINERD_SOCKET = "/run/containerd/containerd.sock"
KUBERNETES_SERVICE_IP = "10.96.0.1"
READY_TIMEOUT_SECONDS = 120
CGROUP_PREFIX = "lwnode-"
"""The kubelet's --cgroup-root is /lwnode-<pytest's PID>, so a stale one can be recognised."""
CGROUP_HIERARCHIES = (
    "blkio",
    "cpu",
    "cpuacct",
    "cpuset",
    "devices",
    "freezer",
    "memory",
    "pids",
    "systemd",
    "hugetlb",
)


@dataclass(frozen=True)
class NodeHost(Host):
    """The control plane on the node address, started and reached through the sandbox."""

    sandbox: Sandbox | None = None
    relays: dict[tuple[str, int], Relay] = field(default_factory=dict)

    def spawn(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> ManagedProcess:
        assert self.sandbox is not None
        return self.sandbox.spawn(name, argv, env=env, cwd=cwd)

    def reach(self, port: int, address: str | None = None) -> int:
        assert self.sandbox is not None
        key = (address or self.address, port)
        if key not in self.relays:
            self.relays[key] = self.sandbox.relay(*key)
        return self.relays[key].port


@dataclass
class Node:
    workdir: Path
    tools: Tools
    sandbox: Sandbox
    host: NodeHost
    plane: ControlPlane
    inside_kubeconfig: Path
    """For processes inside the node: the API server at its node address."""
    timings: dict[str, float]

    @property
    def kube(self) -> Kube:
        return self.plane.kube

    def kubectl(self, *argv: str, timeout: float = 120, check: bool = True) -> str:
        kubectl = [str(self.tools.kubectl), f"--kubeconfig={self.plane.kubeconfig}"]
        return run_checked([*kubectl, *argv], timeout, check).stdout

    def http_get(self, host: str, port: int, path: str, timeout: float = 5) -> tuple[int, str]:
        """Plain HTTP GET to an address inside the node."""
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
        connection.sock = self.sandbox.dial(host, port, timeout)
        connection.sock.settimeout(timeout)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, response.read().decode(errors="replace")
        finally:
            connection.close()

    def processes(self) -> list[ManagedProcess]:
        return self.sandbox.processes()


def start_node(tools: Tools, images: Images, workdir: Path, stack: contextlib.ExitStack) -> Node:
    """Everything is torn down by `stack`, in reverse order, also when a later step fails."""
    timings: dict[str, float] = {}
    started = time.monotonic()
    sandbox = Sandbox(workdir, images.pause_binary)
    _remove_stale_cgroups()
    cgroup_root = f"{CGROUP_PREFIX}{os.getpid()}"
    stack.callback(_remove_cgroups, cgroup_root)
    stack.callback(sandbox.stop)
    sandbox.start()
    timings["namespaces"] = time.monotonic() - started

    host = NodeHost(
        address=NODE_ADDRESS,
        service_range=SERVICE_RANGE,
        apiserver_flags=(),
        serving_ips=("127.0.0.1", NODE_ADDRESS, KUBERNETES_SERVICE_IP),
        fixed_ports={
            "etcd": 2379,
            "etcd-peer": 2380,
            "apiserver": API_PORT,
            "webhook": WEBHOOK_PORT,
            "webhook-metrics": WEBHOOK_METRICS_PORT,
        },
        sandbox=sandbox,
    )
    plane = start_control_plane(tools, workdir, stack, host)
    timings["etcd + kube-apiserver ready"] = plane.start_seconds
    pki = workdir / "pki"
    inside = workdir / "node.kubeconfig"
    write_kubeconfig(
        inside,
        f"https://{NODE_ADDRESS}:{API_PORT}",
        plane.ca_path.read_bytes(),
        (pki / "admin.crt").read_bytes(),
        (pki / "admin.key").read_bytes(),
    )

    mark = time.monotonic()
    sandbox.spawn(
        "kube-controller-manager",
        [
            str(tools.directory / "kube-controller-manager"),
            f"--kubeconfig={inside}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={plane.ca_path}",
            "--use-service-account-credentials=false",
            f"--cluster-cidr={POD_RANGE}",
            "--v=1",
        ],
    )
    sandbox.spawn(
        "kube-scheduler",
        [
            str(tools.directory / "kube-scheduler"),
            f"--kubeconfig={inside}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            "--v=1",
        ],
    )

    containerd = _start_containerd(sandbox, workdir)
    for archive in images.archives:
        sandbox.run(
            [
                "ctr",
                f"--address={CONTAINERD_SOCKET}",
                "-n",
                "k8s.io",
                "images",
                "import",
                str(archive),
            ],
            timeout=120,
        )
    timings["containerd ready, images imported"] = time.monotonic() - mark

    mark = time.monotonic()
    _prepare_cgroup_root(cgroup_root)
    kubelet = _start_kubelet(sandbox, tools, workdir, inside, plane.ca_path, cgroup_root)
    kube = plane.kube

    def node_ready() -> bool:
        kubelet.check_alive()
        containerd.check_alive()
        node = kube.request("GET", f"/api/v1/nodes/{NODE_NAME}").body
        conditions = {c["type"]: c["status"] for c in node.get("status", {}).get("conditions", [])}
        return conditions.get("Ready") == "True"

    wait_until(
        node_ready, READY_TIMEOUT_SECONDS, "node Ready", interval=0.5, on_timeout=kubelet.tail
    )
    timings["kubelet registered, node Ready"] = time.monotonic() - mark

    mark = time.monotonic()
    proxy = _start_kube_proxy(sandbox, tools, workdir, inside)

    def proxy_synced() -> bool:
        proxy.check_alive()
        rules = sandbox.run(["iptables-save", "-t", "nat"], check=False).stdout
        return "default/kubernetes:https" in rules

    wait_until(
        proxy_synced, READY_TIMEOUT_SECONDS, "kube-proxy rules", interval=0.5, on_timeout=proxy.tail
    )
    timings["kube-proxy synced"] = time.monotonic() - mark
    timings["node total"] = time.monotonic() - started
    return Node(workdir, tools, sandbox, host, plane, inside, timings)


def _remove_stale_cgroups() -> None:
    """Cgroups of an earlier run whose pytest was killed before its teardown (its processes
    died with it: they were all in the node's PID namespace)."""
    memory = Path("/sys/fs/cgroup/memory")
    for path in memory.glob(f"{CGROUP_PREFIX}*") if memory.is_dir() else []:
        pid = path.name.removeprefix(CGROUP_PREFIX)
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            remove_cgroups(f"/{path.name}", attempts=1)


def _remove_cgroups(root: str) -> None:
    left = remove_cgroups(root)
    if left:
        raise RuntimeError(f"cgroups still busy after the node stopped: {left[:5]}")


def _start_containerd(sandbox: Sandbox, workdir: Path) -> ManagedProcess:
    cni = workdir / "cni"
    (cni / "net.d").mkdir(parents=True)
    (cni / "net.d" / "10-lwnode.conflist").write_text(
        json.dumps(
            {
                "cniVersion": "0.4.0",
                "name": "lwnode",
                "plugins": [
                    {
                        "type": "bridge",
                        "bridge": "cni0",
                        "isGateway": True,
                        "ipMasq": False,
                        "hairpinMode": True,
                        "ipam": {
                            "type": "host-local",
                            "ranges": [[{"subnet": POD_RANGE, "gateway": "10.201.0.1"}]],
                            "routes": [{"dst": "0.0.0.0/0"}],
                        },
                    },
                    {"type": "portmap", "capabilities": {"portMappings": True}},
                    {"type": "loopback"},
                ],
            },
            indent=2,
        )
    )
    config = workdir / "containerd.toml"
    # /run is the node's own tmpfs, so state, sockets and shim sockets stay inside it.
    config.write_text(
        f"""version = 2
root = "{workdir / "containerd"}"
state = "/run/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "{CONTAINERD_SOCKET}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/pause:local"
  # This VM's capability bounding set lacks CAP_SYS_RESOURCE: runc cannot write the negative
  # oom_score_adj the pause container asks for. Clamp every container's to containerd's own.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "/usr/sbin/runc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni / "net.d"}"
"""
    )
    process = sandbox.spawn("containerd", ["containerd", f"--config={config}"])

    def answering() -> bool:
        process.check_alive()
        return (
            sandbox.run(
                ["ctr", f"--address={CONTAINERD_SOCKET}", "version"], check=False
            ).returncode
            == 0
        )

    wait_until(answering, 60, "containerd", interval=0.2, on_timeout=process.tail)
    return process


def _prepare_cgroup_root(root: str) -> None:
    """The kubelet insists its --cgroup-root exists; cpuset children start empty (unusable)."""
    base = Path("/sys/fs/cgroup")
    for hierarchy in CGROUP_HIERARCHIES:
        if not (base / hierarchy).is_dir():
            continue
        path = base / hierarchy / root.lstrip("/")
        path.mkdir(exist_ok=True)
        if hierarchy == "cpuset":
            for knob in ("cpuset.cpus", "cpuset.mems"):
                (path / knob).write_text((base / hierarchy / knob).read_text())


def _start_kubelet(
    sandbox: Sandbox, tools: Tools, workdir: Path, kubeconfig: Path, ca_path: Path, cgroup_root: str
) -> ManagedProcess:
    root_dir = workdir / "kubelet"
    root_dir.mkdir()
    resolv = workdir / "resolv.conf"
    resolv.write_text("# no DNS on the test node\n")
    config = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": cgroup_root,
        "failSwapOn": False,
        "failCgroupV1": False,
        "containerRuntimeEndpoint": f"unix://{CONTAINERD_SOCKET}",
        "address": NODE_ADDRESS,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": False},
            "x509": {"clientCAFile": str(ca_path)},
        },
        "authorization": {"mode": "AlwaysAllow"},
        "podLogsDir": str(workdir / "pod-logs"),
        "resolvConf": str(resolv),
        # The test machine's disk may be fuller than the defaults allow; never evict test pods.
        "evictionHard": {
            "memory.available": "50Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        # No CAP_SYS_RESOURCE here: a negative oom_score_adj cannot be written.
        "oomScoreAdj": 0,
        "maxPods": 40,
        "serializeImagePulls": False,
    }
    config_path = workdir / "kubelet.yaml"
    config_path.write_text(yaml.safe_dump(config))
    return sandbox.spawn(
        "kubelet",
        [
            str(tools.directory / "kubelet"),
            f"--config={config_path}",
            f"--kubeconfig={kubeconfig}",
            f"--root-dir={root_dir}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={NODE_ADDRESS}",
            "--v=3",
        ],
    )


def _start_kube_proxy(
    sandbox: Sandbox, tools: Tools, workdir: Path, kubeconfig: Path
) -> ManagedProcess:
    config = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "mode": "iptables",
        "hostnameOverride": NODE_NAME,
        "clusterCIDR": POD_RANGE,
        # nf_conntrack_max and the conntrack timeouts are not writable from a network
        # namespace; 0 means "leave them as they are".
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
        "oomScoreAdj": 0,
        "metricsBindAddress": "127.0.0.1:10249",
        "healthzBindAddress": "127.0.0.1:10256",
    }
    config_path = workdir / "kube-proxy.yaml"
    config_path.write_text(yaml.safe_dump(config))
    return sandbox.spawn(
        "kube-proxy",
        [str(tools.directory / "kube-proxy"), f"--config={config_path}", "--v=1"],
    )
