"""What the suites with long-lived processes (e2e, node) add to pytest: time for the tool
build in their first test, the processes' logs under a failed test, and their timings at
the end of the session."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import pytest

from .e2e.procs import ManagedProcess


def allow_build_time(items: list[pytest.Item], fixture: str, seconds: float) -> None:
    """The first test using `fixture` starts the session's processes, and may build the Go
    tools first (minutes on a fresh machine): only that test gets `seconds` as its timeout."""
    for item in items:
        if fixture in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.timeout(seconds))
            return


def attach_logs(
    report: pytest.TestReport, processes: Iterable[ManagedProcess], max_bytes: int
) -> None:
    for process in processes:
        report.sections.append((f"log: {process.name}", process.tail(max_bytes)))


def write_timings(
    terminalreporter: pytest.TerminalReporter,
    title: str,
    timings: Mapping[str, float],
    started: object,
    finished: object,
    footer: Iterable[str],
) -> None:
    """`started`/`finished`: monotonic times around the scenarios, when both were reached."""
    terminalreporter.write_sep("-", title)
    for what, seconds in timings.items():
        terminalreporter.write_line(f"{what}: {seconds:.1f}s")
    if isinstance(started, float) and isinstance(finished, float):
        terminalreporter.write_line(f"scenarios (after setup): {finished - started:.1f}s")
    for line in footer:
        terminalreporter.write_line(line)
