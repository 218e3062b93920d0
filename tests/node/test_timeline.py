"""The shutdown timeline on a real kubelet: when each container gets SIGTERM, and SIGKILL.

Times are counted from the moment the kubelet began stopping the pod (read from its log at
--v=3), which is when its preStop hooks start and its grace-period countdown begins, and also
reported from the DELETE request, which adds the kubelet's reaction time.

The webhook sizes preStop and the grace period from a model of what the kubelet does (SPEC 4.2):
every preStop starts at deletion, a container gets SIGTERM when its preStop ends, native
sidecars get SIGTERM after the regular containers exited, and everything still running at the
end of the grace period is killed. Here the kubelet does it and the containers write down when.
"""

from __future__ import annotations

import datetime
import functools
import re
import time
from collections.abc import Callable

import pytest

from ..e2e.kube import INJECT, ApiError, Kube, Obj, pre_stop, unique_name
from ..e2e.procs import wait_until
from .conftest import NodeEnv
from .workloads import Events, container, logging_pod, read_events, term_logging, uptime

pytestmark = pytest.mark.node

PREFIX = "lifecycle-webhook.io/"
P, S, Q = 4, 3, 2
TOLERANCE_SECONDS = 1.0
"""How far a signal may be from its planned time, counted from when the kubelet began stopping
the pod: its own timing plus the containers' shells on a loaded 2-core machine."""
KUBELET_REACTION_LIMIT_SECONDS = 3.0
"""From the DELETE to the kubelet starting to stop the pod: its watch and pod worker, which
here took 0.0 to 1.6 s (the pod's worker finishes a sync in progress first). That delay is
the kubelet's, and adds to the grace period in the same way (the countdown starts there)."""
START_TIMEOUT_SECONDS = 90
STOP_TIMEOUT_SECONDS = 60


def tuning(**extra: str) -> dict[str, str]:
    return {
        PREFIX + "prestop-seconds": str(P),
        PREFIX + "shutdown-seconds": str(S),
        PREFIX + "sidecar-shutdown-seconds": str(Q),
        **{PREFIX + key: value for key, value in extra.items()},
    }


def running(kube: Kube, namespace: str, name: str) -> bool:
    pod = kube.get_pod(namespace, name)
    statuses = pod.get("status", {}).get("containerStatuses") or []
    return bool(statuses) and all("running" in s.get("state", {}) for s in statuses)


def gone(kube: Kube, namespace: str, name: str) -> bool:
    try:
        kube.get_pod(namespace, name)
    except ApiError as exc:
        return exc.code == 404
    return False


def run_and_delete(node: NodeEnv, namespace: str, pods: list[Obj]) -> dict[str, float]:
    """Creates `pods`, waits until every container runs, deletes each (noting /proc/uptime
    just before its DELETE) and waits until they are gone."""
    kube = node.node.kube
    names = [pod["metadata"]["name"] for pod in pods]

    def wait_for_each(state: Callable[[Kube, str, str], bool], timeout: float) -> None:
        for name in names:
            check = functools.partial(state, kube, namespace, name)
            wait_until(check, timeout, f"pod {name} {state.__name__}", interval=0.5)

    for pod in pods:
        kube.create_pod(namespace, pod)
    wait_for_each(running, START_TIMEOUT_SECONDS)
    deleted = {}
    for name in names:
        deleted[name] = uptime()
        kube.request("DELETE", f"/api/v1/namespaces/{namespace}/pods/{name}")
    wait_for_each(gone, STOP_TIMEOUT_SECONDS)
    return deleted


def test_sigterm_comes_after_the_injected_prestop_and_sigkill_at_the_grace_period(
    node: NodeEnv,
) -> None:
    kube = node.node.kube
    namespace = kube.create_namespace("timeline", labels={INJECT: "enabled"})
    log_dir = node.node.workdir / "events" / namespace
    log_dir.mkdir(parents=True)

    sidecars = logging_pod(
        unique_name("sidecars"),
        log_dir,
        containers=[
            container("app", term_logging("app")),
            container("proxy", term_logging("proxy")),
        ],
        init_containers=[container("native", term_logging("native"), restartPolicy="Always")],
        annotations=tuning(sidecars="proxy"),
        grace=1,
    )
    with_exec = logging_pod(
        unique_name("exec"),
        log_dir,
        containers=[container("app", term_logging("app"))],
        annotations=tuning(prestop="exec"),
        grace=1,
    )
    stubborn = logging_pod(
        unique_name("stubborn"),
        log_dir,
        containers=[container("app", term_logging("app", exit_on_term=False))],
        annotations={PREFIX + "prestop-seconds": "2", PREFIX + "shutdown-seconds": "3"},
        grace=1,
    )

    # What the webhook made of them, as stored by the API server.
    stored = {}
    for pod in (sidecars, with_exec, stubborn):
        created = kube.create_pod(namespace, pod, dry_run=True).body
        stored[pod["metadata"]["name"]] = created
    s_pod, e_pod, k_pod = (stored[p["metadata"]["name"]] for p in (sidecars, with_exec, stubborn))
    assert pre_stop(s_pod, "app") == {"sleep": {"seconds": P}}
    assert pre_stop(s_pod, "proxy") == {"sleep": {"seconds": P + S}}
    assert pre_stop(s_pod, "native") is None
    assert s_pod["spec"]["terminationGracePeriodSeconds"] == P + S + Q + Q
    assert pre_stop(e_pod, "app") == {"exec": {"command": ["sleep", str(P)]}}
    assert pre_stop(k_pod, "app") == {"sleep": {"seconds": 2}}
    assert k_pod["spec"]["terminationGracePeriodSeconds"] == 5

    deleted = run_and_delete(node, namespace, [sidecars, with_exec, stubborn])
    kubelet_log = (node.node.workdir / "kubelet.log").read_text(errors="replace")
    stopping = {name: kubelet_started_stopping(kubelet_log, namespace, name) for name in deleted}

    def events(pod: Obj, name: str) -> Events:
        """Seconds after the kubelet began stopping the pod."""
        pod_name = pod["metadata"]["name"]
        return read_events(log_dir / pod_name, name, stopping[pod_name])

    app, proxy, native = (events(sidecars, name) for name in ("app", "proxy", "native"))
    exec_app = events(with_exec, "app")
    stubborn_app = events(stubborn, "app")
    reaction = {name: round(stopping[name] - deleted[name], 2) for name in deleted}
    report = {
        "kubelet began stopping, seconds after the DELETE": reaction,
        "sidecars": {"app": app.times, "proxy": proxy.times, "native": native.times},
        "exec": exec_app.times,
        "stubborn": {**stubborn_app.times, "last beat": stubborn_app.last_beat},
    }
    for seconds in reaction.values():
        assert 0 <= seconds <= KUBELET_REACTION_LIMIT_SECONDS, report

    app_term, proxy_term, native_term = app.first("TERM"), proxy.first("TERM"), native.first("TERM")
    assert app_term is not None and proxy_term is not None and native_term is not None, report
    assert abs(app_term - P) <= TOLERANCE_SECONDS, report
    assert abs(proxy_term - (P + S)) <= TOLERANCE_SECONDS, report
    # Native sidecars are stopped only after every regular container has exited.
    assert proxy_term <= native_term <= proxy_term + TOLERANCE_SECONDS, report

    exec_term = exec_app.first("TERM")
    assert exec_term is not None and abs(exec_term - P) <= TOLERANCE_SECONDS, report

    # Ignoring SIGTERM: it keeps beating until the kubelet kills it at the grace period.
    stubborn_term, last_beat = stubborn_app.first("TERM"), stubborn_app.last_beat
    assert stubborn_term is not None and abs(stubborn_term - 2) <= TOLERANCE_SECONDS, report
    assert last_beat is not None and abs(last_beat - 5) <= TOLERANCE_SECONDS, report

    def from_delete(pod: Obj, seconds: float) -> str:
        total = seconds + reaction[pod["metadata"]["name"]]
        return f"{seconds:.2f} s ({total:.2f} s after the DELETE)"

    figures = node.figures
    figures["SIGTERM, sleep preStop P=4"] = from_delete(sidecars, app_term)
    figures["SIGTERM, exec sleep P=4"] = from_delete(with_exec, exec_term)
    figures["SIGTERM of the listed sidecar, P+S=7"] = from_delete(sidecars, proxy_term)
    figures["SIGTERM of the native sidecar (after the app)"] = from_delete(sidecars, native_term)
    figures["SIGKILL of an app ignoring TERM, grace 5"] = from_delete(stubborn, last_beat)


KLOG_TIME = re.compile(r"^[IWE](\d{2})(\d{2}) (\d{2}):(\d{2}):(\d{2})\.(\d{6})")


def kubelet_started_stopping(log: str, namespace: str, name: str) -> float:
    """When the kubelet began stopping the pod's containers (its first "Killing container
    with a grace period override" line, logged before any preStop runs), on the
    /proc/uptime clock the containers log with."""
    marker = f'"Killing container with a grace period override" pod="{namespace}/{name}"'
    for line in log.splitlines():
        if marker in line and (match := KLOG_TIME.match(line)):
            month, day, hour, minute, second, micro = map(int, match.groups())
            now = datetime.datetime.now()
            stamp = datetime.datetime(now.year, month, day, hour, minute, second, micro)
            return stamp.timestamp() - (time.time() - uptime())
    raise AssertionError(f"the kubelet log has no {marker}")
