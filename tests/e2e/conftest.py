"""Fixtures for the end-to-end tests: one real API server per session, a fresh namespace per
test, and the webhook configuration each test needs switched in before it runs."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Generator, Iterator

import pytest

from ..session_report import allow_build_time, attach_logs, write_timings
from ..tools import BUILD_TIMEOUT_SECONDS
from . import session as e2e_session
from .kube import INJECT
from .session import E2E
from .webhooks import WebhookSetup

_state: dict[str, E2E | float] = {}


@pytest.fixture(scope="session")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2E]:
    workdir = tmp_path_factory.mktemp("e2e")
    with contextlib.ExitStack() as stack:
        env = e2e_session.start(workdir, stack)
        _state["env"] = env
        _state["started"] = time.monotonic()
        yield env
        _state["finished"] = time.monotonic()


@pytest.fixture
def namespace_mode(e2e: E2E) -> E2E:
    e2e.use(WebhookSetup(mode="namespace"))
    return e2e


@pytest.fixture
def cluster_mode(e2e: E2E) -> E2E:
    e2e.use(WebhookSetup(mode="cluster"))
    return e2e


@pytest.fixture
def injected_namespace(namespace_mode: E2E) -> str:
    """A fresh namespace labelled for injection (namespace mode active)."""
    return namespace_mode.kube.create_namespace("e2e", labels={INJECT: "enabled"})


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    allow_build_time(items, "e2e", BUILD_TIMEOUT_SECONDS + 300)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the processes' logs to a failed e2e test's report."""
    report = yield
    env = _state.get("env")
    if report.failed and isinstance(env, E2E) and item.get_closest_marker("e2e"):
        attach_logs(report, env.processes(), 6000)
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    env = _state.get("env")
    if not isinstance(env, E2E):
        return
    write_timings(
        terminalreporter,
        "e2e timings",
        env.timings,
        _state.get("started"),
        _state.get("finished"),
        [f"logs and certificates: {env.workdir}"],
    )
