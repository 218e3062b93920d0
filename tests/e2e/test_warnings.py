"""Admission warnings travel API server -> HTTP Warning header -> the user's terminal."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from webhook.core.model import PREFIX

from .kube import make_pod, pre_stop, unique_name
from .session import E2E

pytestmark = pytest.mark.e2e


def test_kubectl_prints_the_warning_for_a_bad_annotation_value(
    namespace_mode: E2E, injected_namespace: str
) -> None:
    name = unique_name("bad-value")
    manifest = make_pod(name, annotations={PREFIX + "prestop-seconds": "abc"})
    result = subprocess.run(
        [
            str(namespace_mode.tools.kubectl),
            f"--kubeconfig={namespace_mode.plane.kubeconfig}",
            "create",
            "--namespace",
            injected_namespace,
            "-f",
            "-",
        ],
        input=yaml.safe_dump(manifest),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("Warning: ")]
    ours = [line for line in warnings if line.startswith("Warning: lifecycle-webhook: ")]
    assert ours, f"kubectl printed no lifecycle-webhook warning; stderr:\n{result.stderr}"
    assert any("prestop-seconds" in line and "abc" in line for line in ours), ours
    assert all(len(line.removeprefix("Warning: ")) <= 120 for line in ours), ours
    # the bad value was ignored, the default used: a warning, not a rejection
    stored = namespace_mode.kube.get_pod(injected_namespace, name)
    assert pre_stop(stored, "app") == {"sleep": {"seconds": 5}}


def test_python_client_sees_the_same_warning_header(
    namespace_mode: E2E, injected_namespace: str
) -> None:
    pod = make_pod(unique_name("bad-value"), annotations={PREFIX + "shutdown-seconds": "+30"})
    response = namespace_mode.kube.create_pod(injected_namespace, pod)
    assert any(
        w.startswith("lifecycle-webhook: ") and "shutdown-seconds" in w for w in response.warnings
    ), response.warnings
