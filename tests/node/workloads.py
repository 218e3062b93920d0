"""The pods and workloads the node scenarios run, and how they report what happened to them.

Every test app is a busybox shell in `localhost/lw-app:1`. Shells that must report signals log
lines `EVENT UPTIME` to a file on a hostPath volume; /proc/uptime is the same clock inside the
containers and in the test, so "SIGTERM 5.02 s after the delete" is measured, not inferred.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..e2e.kube import Obj
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
