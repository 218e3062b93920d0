"""One Linux "node" for the tests: new PID, mount and network namespaces, no route out.

`unshare` creates the three namespaces and runs a tiny init (the pause binary) as PID 1; every
node process (etcd, kube-apiserver, containerd, kubelet, …) is started inside them with
`nsenter`. Why three:
- network: the node address, the pod bridge, kube-proxy's iptables rules and every pod live in a
  namespace that has no interface to the host and no default route, so no packet can leave it.
- mount: tmpfs over /run, /var/lib and /var/log, so containerd's sockets and shim state, CNI's
  cache, pod network-namespace pins and kubelet's volume mounts exist only in there and vanish
  with it; the host's filesystem sees only the test's own work directory.
- PID: when PID 1 ends, the kernel kills every process left inside, shims and containers
  included. `--kill-child` and PR_SET_PDEATHSIG make that happen even when pytest is SIGKILLed.

The test process itself stays on the host. It reaches addresses inside through `dial` (a
thread that entered the network namespace creates the socket) and `Relay` (a 127.0.0.1 port on
the host whose connections are dialled inside), so kubectl and the Python client work unchanged.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import queue
import selectors
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from ..e2e.procs import ManagedProcess, run_checked, wait_until

CLONE_NEWNET = 0x40000000
NODE_ADDRESS = "10.200.0.1"
NODE_PREFIX = 24
EXTRA_ADDRESSES = ("10.200.0.2", "10.200.0.3")
"""More addresses on the node interface: one per webhook replica in the rollout scenario."""
SERVICE_RANGE = "10.96.0.0/24"
POD_RANGE = "10.201.0.0/24"
PRIVATE_TMPFS = ("/run", "/var/lib", "/var/log")

_libc = ctypes.CDLL(None, use_errno=True)


class KernelRefused(Exception):
    """The kernel (or its configuration) refuses something the node needs: skip, saying why."""


def _anchor_script(pause: Path) -> str:
    mounts = "\n".join(f"mount -t tmpfs -o mode=755 tmpfs {path}" for path in PRIVATE_TMPFS)
    return f"""set -eu
{mounts}
mkdir -p /var/log/containers /var/log/pods /var/lib/cni /run/netns
exec {pause}
"""


class Sandbox:
    """The namespaces; `spawn` and `run` put processes inside, `stop` ends all of them."""

    def __init__(self, workdir: Path, pause: Path) -> None:
        self.workdir = workdir
        self.pause = pause
        self.anchor: ManagedProcess | None = None
        self.pid = 0
        """PID (on the host) of the namespaces' init."""
        self._processes: list[ManagedProcess] = []
        self._dialer: _Dialer | None = None
        self._relays: list[Relay] = []

    # -- life cycle ----------------------------------------------------------------------

    def start(self) -> None:
        script = self.workdir / "anchor.sh"
        script.write_text(_anchor_script(self.pause))
        self.anchor = ManagedProcess(
            "node-namespaces",
            [
                "unshare",
                "--pid",
                "--kill-child",
                "--mount",
                "--propagation",
                "private",
                "--net",
                "--mount-proc",
                "sh",
                str(script),
            ],
            self.workdir / "node-namespaces.log",
        )
        anchor = self.anchor
        wait_until(self._find_init, 10, "the node's PID 1", on_timeout=anchor.tail)
        self._dialer = _Dialer(self.pid)
        self._network()

    def _find_init(self) -> bool:
        assert self.anchor is not None
        self.anchor.check_alive()
        children = Path(f"/proc/{self.anchor.pid}/task/{self.anchor.pid}/children")
        pids = children.read_text().split()
        if not pids:
            return False
        if Path(f"/proc/{pids[0]}/exe").resolve() != self.pause.resolve():
            return False  # still the setup script
        self.pid = int(pids[0])
        return True

    def _network(self) -> None:
        steps = [
            ["ip", "link", "set", "lo", "up"],
            # This kernel has no dummy driver; a bridge without ports is a local-only interface.
            ["ip", "link", "add", "node0", "type", "bridge"],
            ["ip", "addr", "add", f"{NODE_ADDRESS}/{NODE_PREFIX}", "dev", "node0"],
            *(
                ["ip", "addr", "add", f"{address}/{NODE_PREFIX}", "dev", "node0"]
                for address in EXTRA_ADDRESSES
            ),
            ["ip", "link", "set", "node0", "up"],
            # Locally generated packets to a ClusterIP need a route before kube-proxy's DNAT
            # in OUTPUT rewrites them; there is still no default route, so nothing leaves.
            ["ip", "route", "add", SERVICE_RANGE, "dev", "node0"],
            ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"],
        ]
        for argv in steps:
            result = self.run(argv, check=False)
            if result.returncode != 0:
                raise KernelRefused(f"{' '.join(argv)}: {result.stderr.strip()}")

    def stop(self) -> None:
        """Processes in reverse start order, then PID 1 (which takes the rest with it)."""
        for process in reversed(self._processes):
            process.stop(grace=5)
        for relay in self._relays:
            relay.close()
        if self._dialer is not None:
            self._dialer.close()
        if self.anchor is not None:
            self.anchor.stop(grace=5)

    # -- processes inside ------------------------------------------------------------------

    def enter(self, argv: Sequence[str], cwd: Path | None = None) -> list[str]:
        """`argv` run inside the node's namespaces (in `cwd`, default /)."""
        return [
            "nsenter",
            f"--target={self.pid}",
            "--pid",
            "--mount",
            "--net",
            f"--wd={cwd or '/'}",
            "--",
            *argv,
        ]

    def spawn(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> ManagedProcess:
        process = InsideProcess(name, self.enter(argv, cwd), self.workdir / f"{name}.log", env=env)
        self._processes.append(process)
        return process

    def processes(self) -> list[ManagedProcess]:
        return list(self._processes)

    def run(
        self, argv: Sequence[str], check: bool = True, timeout: float = 60, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return run_checked(self.enter(argv), timeout, check, input)

    # -- the network inside --------------------------------------------------------------

    def dial(self, host: str, port: int, timeout: float = 5) -> socket.socket:
        """A TCP connection to `host:port` as seen from inside the node."""
        assert self._dialer is not None, "the sandbox is not started"
        return self._dialer.dial(host, port, timeout)

    def relay(self, host: str, port: int) -> Relay:
        relay = Relay(lambda: self.dial(host, port))
        self._relays.append(relay)
        return relay


class InsideProcess(ManagedProcess):
    """A process started by `nsenter`, which forks it into the node's PID namespace and
    waits for it but forwards no signal: signals go to the child, so that `stop` and
    `popen.wait` see the real process drain and exit, not nsenter dying first."""

    def signal(self, sig: signal.Signals) -> None:
        if not self.alive():
            return
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        try:
            pids = [int(pid) for pid in children.read_text().split()]
        except OSError:
            pids = []
        if not pids:
            super().signal(sig)
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)


class _Dialer:
    """A thread living in the node's network namespace that opens sockets for other threads.

    setns(CLONE_NEWNET) changes only the calling thread; a socket keeps the namespace it was
    created in whichever thread uses it later.
    """

    def __init__(self, pid: int) -> None:
        self._requests: queue.Queue[tuple[str, int, float, queue.Queue[object]] | None] = (
            queue.Queue()
        )
        self._entered: queue.Queue[BaseException | None] = queue.Queue()
        self._thread = threading.Thread(
            target=self._run, args=(pid,), name="node-dialer", daemon=True
        )
        self._thread.start()
        error = self._entered.get(timeout=10)
        if error is not None:
            raise KernelRefused(f"cannot enter the node's network namespace: {error}")

    def _run(self, pid: int) -> None:
        try:
            fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    errno = ctypes.get_errno()
                    raise OSError(errno, os.strerror(errno))
            finally:
                os.close(fd)
        except BaseException as exc:
            self._entered.put(exc)
            return
        self._entered.put(None)
        while (request := self._requests.get()) is not None:
            host, port, timeout, reply = request
            try:
                reply.put(socket.create_connection((host, port), timeout=timeout))
            except OSError as exc:
                reply.put(exc)

    def dial(self, host: str, port: int, timeout: float) -> socket.socket:
        reply: queue.Queue[object] = queue.Queue()
        self._requests.put((host, port, timeout, reply))
        result = reply.get(timeout=timeout + 5)
        if isinstance(result, BaseException):
            raise result
        assert isinstance(result, socket.socket)
        result.settimeout(None)
        return result

    def close(self) -> None:
        self._requests.put(None)


class Relay:
    """127.0.0.1:`port` on the host; each connection is piped to a socket from `connect`."""

    def __init__(self, connect: Callable[[], socket.socket]) -> None:
        self._connect = connect
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self.port = int(self._listener.getsockname()[1])
        self._closed = False
        threading.Thread(target=self._accept, name=f"relay-{self.port}", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._pipe, args=(client,), daemon=True).start()

    def _pipe(self, client: socket.socket) -> None:
        try:
            upstream = self._connect()
        except OSError:
            client.close()
            return
        with client, upstream, selectors.DefaultSelector() as selector:
            selector.register(client, selectors.EVENT_READ, upstream)
            selector.register(upstream, selectors.EVENT_READ, client)
            open_ends = 2
            while open_ends and not self._closed:
                for key, _ in selector.select(timeout=1):
                    source: socket.socket = key.fileobj  # type: ignore[assignment]
                    target: socket.socket = key.data
                    try:
                        data = source.recv(65536)
                    except OSError:
                        data = b""
                    if data:
                        with contextlib.suppress(OSError):
                            target.sendall(data)
                        continue
                    selector.unregister(source)
                    open_ends -= 1
                    with contextlib.suppress(OSError):
                        target.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._closed = True
        self._listener.close()


def remove_cgroups(root: str, attempts: int = 50) -> list[str]:
    """rmdir `root` and everything below it in every cgroup hierarchy, deepest first.

    Only empty cgroups can be removed; processes killed a moment ago may still be leaving,
    so each is retried for a few seconds. Returns what could not be removed.
    """
    left: list[str] = []
    base = Path("/sys/fs/cgroup")
    for hierarchy in sorted(base.iterdir()) if base.is_dir() else []:
        top = hierarchy / root.lstrip("/")
        if not top.is_dir():
            continue
        directories = sorted(
            (path for path, _, _ in os.walk(top)), key=lambda p: p.count("/"), reverse=True
        )
        for directory in directories:
            for _ in range(attempts):
                try:
                    os.rmdir(directory)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)
            else:
                left.append(directory)
    return left
