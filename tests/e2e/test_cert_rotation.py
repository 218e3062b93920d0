"""The serving certificate is renewed on disk (as a Secret volume is updated) while the API
server keeps creating pods through the webhook: no create fails, none is left unmutated, and
the server ends up serving the new certificate without a restart."""

from __future__ import annotations

import threading

import pytest

from ..pki import as_bytes
from .cluster import served_certificate
from .kube import is_mutated, make_pod
from .pki import serial_number, serial_number_der
from .procs import wait_until
from .session import E2E

pytestmark = pytest.mark.e2e

WRITERS = 2
PODS_BETWEEN_STEPS = 6
MAX_PODS_PER_WRITER = 1500
PAUSE_SECONDS = 0.05
"""Paced so the writers are still busy when each rotation lands (a create takes ~10 ms)."""
RELOAD_TIMEOUT_SECONDS = 20


def test_rotation_while_pods_are_created(namespace_mode: E2E, injected_namespace: str) -> None:
    kube, server = namespace_mode.kube, namespace_mode.server
    assert server.process is not None
    lock = threading.Lock()
    created: list[str] = []
    failures: list[str] = []
    done = threading.Event()

    def writer(index: int) -> None:
        for number in range(MAX_PODS_PER_WRITER):
            if done.wait(PAUSE_SECONDS):
                return
            name = f"rot-{index}-{number}"
            try:
                kube.create_pod(injected_namespace, make_pod(name))
            except Exception as exc:
                with lock:
                    failures.append(f"{name}: {exc}")
            else:
                with lock:
                    created.append(name)

    def count() -> int:
        with lock:
            return len(created) + len(failures)

    def served_serial() -> int:
        ca_pem = as_bytes(namespace_mode.plane.ca.cert_pem)
        return serial_number_der(served_certificate(server.port, ca_pem))

    def wait_for_serial(expected: int) -> None:
        what = "the webhook to serve the rotated certificate"
        wait_until(lambda: served_serial() == expected, RELOAD_TIMEOUT_SECONDS, what)

    def wait_for_more_pods(what: str) -> None:
        target = count() + PODS_BETWEEN_STEPS
        wait_until(lambda: count() >= target, 60, what)

    threads = [threading.Thread(target=writer, args=(i,), daemon=True) for i in range(WRITERS)]
    for thread in threads:
        thread.start()
    try:
        for rotation in range(2):
            wait_for_more_pods(f"pods before rotation {rotation + 1}")
            wait_for_serial(serial_number(server.rotate().cert_pem))
            server.process.check_alive()
        wait_for_more_pods("pods after the last rotation")
    finally:
        done.set()
        for thread in threads:
            thread.join(timeout=60)

    assert not failures, failures[:5]
    stored = {pod["metadata"]["name"]: pod for pod in kube.list_pods(injected_namespace)}
    assert set(created) <= set(stored)
    unmutated = [name for name in created if not is_mutated(stored[name])]
    assert not unmutated, unmutated[:5]
    assert len(created) >= 3 * PODS_BETWEEN_STEPS
