"""The node suite: one real node (tests/node/cluster.py) per pytest session, with
lifecycle-webhook called through its Service.

It needs root and a kernel that lets it create PID, mount and network namespaces, bridges,
veth pairs and iptables rules. Where the kernel refuses, the suite is skipped with the reason
printed, except with CI=true, where that is a failure: this project's CI machines allow all of it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field

import pytest

from ..session_report import allow_build_time, attach_logs, write_timings
from ..tools import BUILD_TIMEOUT_SECONDS, build_tools, skip_or_fail
from .cluster import Node, start_node
from .images import build_images
from .sandbox import KernelRefused
from .webhooks import NodeWebhooks

NODE_PROGRAMS = ("unshare", "nsenter", "ip", "containerd", "ctr", "runc", "iptables", "gcc")
DEPENDENCY_SCRIPT = "hack/node-deps.sh"


@dataclass
class NodeEnv:
    node: Node
    webhooks: NodeWebhooks
    figures: dict[str, str] = field(default_factory=dict)
    """What the scenarios measured, printed at the end of the session."""


_state: dict[str, NodeEnv | float] = {}


def _check_prerequisites() -> None:
    if os.geteuid() != 0:
        skip_or_fail("the node suite needs root (namespaces, mounts, iptables, cgroups)")
    missing = [program for program in NODE_PROGRAMS if shutil.which(program) is None]
    if not os.path.exists("/usr/lib/cni/bridge"):
        missing.append("/usr/lib/cni/bridge")
    if missing:
        skip_or_fail(f"missing {', '.join(missing)}: run `bash {DEPENDENCY_SCRIPT}` (as root)")


@pytest.fixture(scope="session")
def node_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeEnv]:
    _check_prerequisites()
    tools = build_tools("all", "node")
    images = build_images()
    workdir = tmp_path_factory.mktemp("node")
    with contextlib.ExitStack() as stack:
        try:
            node = start_node(tools, images, workdir, stack)
        except KernelRefused as refused:
            skip_or_fail(f"the kernel refused what the node needs: {refused}")
        started = time.monotonic()
        webhooks = NodeWebhooks(node, node.host)
        webhooks.start()
        webhooks.register("Fail")
        node.timings["lifecycle-webhook replicas ready, registered"] = time.monotonic() - started
        env = NodeEnv(node, webhooks)
        _state["env"] = env
        _state["started"] = time.monotonic()
        yield env
        _state["finished"] = time.monotonic()


@pytest.fixture
def node(node_env: NodeEnv) -> NodeEnv:
    """The node with both webhook replicas serving and `failurePolicy: Fail` registered."""
    webhooks = node_env.webhooks
    if any(replica.state != "ready" for replica in webhooks.replicas):
        webhooks.start_all()
    if webhooks.failure_policy != "Fail":
        webhooks.register("Fail")
    return node_env


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    allow_build_time(items, "node_env", BUILD_TIMEOUT_SECONDS + 600)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the node's process logs to a failed node test's report."""
    report = yield
    env = _state.get("env")
    if report.failed and isinstance(env, NodeEnv) and item.get_closest_marker("node"):
        attach_logs(report, env.node.processes(), 4000)
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    env = _state.get("env")
    if not isinstance(env, NodeEnv):
        return
    write_timings(
        terminalreporter,
        "node timings and figures",
        env.node.timings,
        _state.get("started"),
        _state.get("finished"),
        [
            *(f"{what}: {figure}" for what, figure in env.figures.items()),
            f"logs: {env.node.workdir}",
        ],
    )
