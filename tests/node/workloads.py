"""The pods and workloads the node scenarios run, and how they report what happened to them.

Every test app is a busybox shell in `localhost/lw-app:1`. Shells that must report signals log
lines `EVENT UPTIME` to a file on a hostPath volume; /proc/uptime is the same clock inside the
containers and in the test, so "SIGTERM 5.02 s after the delete" is measured, not inferred.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from ..e2e.kube import ApiError, Kube, Obj, is_mutated, make_pod, unique_name
from .images import APP_IMAGE

LOG_VOLUME = "events"
LOG_MOUNT = "/events"


def uptime() -> float:
    return float(Path("/proc/uptime").read_text().split()[0])


def _logger(name: str) -> str:
    return f'log() {{ read up rest < /proc/uptime; echo "$1 $up" >> {LOG_MOUNT}/{name}; }}; '


def term_logging(name: str, exit_on_term: bool = True) -> list[str]:
    """A shell that logs START, then TERM when it gets SIGTERM (and exits, unless told not to)."""
    on_term = "log TERM; exit 0" if exit_on_term else "log TERM"
    beat = f"read up rest < /proc/uptime; echo $up > {LOG_MOUNT}/{name}.beat; "
    return [
        "sh",
        "-c",
        _logger(name)
        + f"trap '{on_term}' TERM; log START; "
        + f"while true; do {beat}sleep 0.2 & wait $!; done",
    ]


def http_app(port: int = 8080) -> list[str]:
    """busybox httpd that exits at once on SIGTERM: the common app with no drain of its own.

    PID 1 of a container gets no default signal actions, so the shell traps TERM and exits,
    which ends httpd with it (the kernel kills the rest of a PID namespace whose init exits).
    """
    return ["sh", "-c", f"trap 'exit 0' TERM; httpd -f -p {port} -h /www & wait"]


def container(name: str, command: list[str], **extra: Any) -> Obj:
    return {
        "name": name,
        "image": APP_IMAGE,
        "imagePullPolicy": "Never",
        "command": command,
        "volumeMounts": [{"name": LOG_VOLUME, "mountPath": LOG_MOUNT}],
        **extra,
    }


def logging_pod(
    name: str,
    log_dir: Path,
    containers: list[Obj],
    annotations: dict[str, str],
    init_containers: list[Obj] | None = None,
    grace: int | None = None,
) -> Obj:
    """A pod whose containers log to `log_dir`/`name`/ (a hostPath the test reads)."""
    spec: Obj = {
        "containers": containers,
        "volumes": [
            {
                "name": LOG_VOLUME,
                "hostPath": {"path": str(log_dir / name), "type": "DirectoryOrCreate"},
            }
        ],
        "automountServiceAccountToken": False,
    }
    if init_containers:
        spec["initContainers"] = init_containers
    if grace is not None:
        spec["terminationGracePeriodSeconds"] = grace
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations},
        "spec": spec,
    }


@dataclass(frozen=True)
class Events:
    """What one container logged, in seconds after `origin`."""

    times: dict[str, list[float]]
    last_beat: float | None

    def first(self, event: str) -> float | None:
        found = self.times.get(event)
        return found[0] if found else None


def read_events(log_dir: Path, name: str, origin: float) -> Events:
    times: dict[str, list[float]] = {}
    path = log_dir / name
    if path.exists():
        for line in path.read_text().splitlines():
            event, _, stamp = line.partition(" ")
            times.setdefault(event, []).append(round(float(stamp) - origin, 2))
    beat_path = log_dir / f"{name}.beat"
    beat = None
    if beat_path.exists() and beat_path.read_text().strip():
        beat = round(float(beat_path.read_text().split()[0]) - origin, 2)
    return Events(times, beat)


def http_deployment(name: str, replicas: int, labels: dict[str, str]) -> Obj:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "automountServiceAccountToken": False,
                    "containers": [
                        {
                            "name": "web",
                            "image": APP_IMAGE,
                            "imagePullPolicy": "Never",
                            "command": http_app(),
                            "ports": [{"name": "http", "containerPort": 8080}],
                            "readinessProbe": {
                                "httpGet": {"path": "/", "port": "http"},
                                "periodSeconds": 1,
                                "failureThreshold": 1,
                            },
                        }
                    ],
                },
            },
        },
    }


def cluster_ip_service(name: str, labels: dict[str, str]) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {
            "type": "ClusterIP",
            "selector": labels,
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
        },
    }


def app_pod(name: str, node_name: str | None = None) -> Obj:
    """A pod that sleeps and exits at once on SIGTERM."""
    pod = make_pod(
        name,
        containers=[
            {
                "name": "app",
                "image": APP_IMAGE,
                "imagePullPolicy": "Never",
                "command": ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"],
            }
        ],
        automountServiceAccountToken=False,
    )
    if node_name:
        pod["spec"]["nodeName"] = node_name
    return pod


@dataclass
class PodCreator:
    """Creates pods in `namespace` one after another, every `interval` seconds, on a thread,
    while the webhook behind `failurePolicy: Fail` is being restarted or upgraded.

    They are bound to a node that does not exist: stored through the whole admission chain,
    never started, so hundreds of them cost the node nothing. Each create's outcome is kept:
    None when the stored pod is mutated, else why not (an error, or "created unmutated").
    """

    kube: Kube
    namespace: str
    interval: float = 0.05
    outcomes: list[tuple[str, str | None]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _run(self) -> None:
        while not self._stop.is_set():
            name = unique_name("during")
            try:
                pod = self.kube.create_pod(
                    self.namespace, app_pod(name, node_name="elsewhere"), timeout=15
                ).body
                self.outcomes.append((name, None if is_mutated(pod) else "created unmutated"))
            except ApiError as exc:
                self.outcomes.append((name, exc.message[:300] or str(exc)[:300]))
            self._stop.wait(self.interval)

    def __enter__(self) -> PodCreator:
        self._thread = threading.Thread(target=self._run, name="pod-creator", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    @property
    def failed(self) -> list[tuple[str, str]]:
        return [(name, why) for name, why in self.outcomes if why is not None]
