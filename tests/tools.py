"""The pinned binaries the tests run (kube-apiserver, kubectl, etcd, helm; for the node suite
also kubelet, kube-proxy, kube-controller-manager, kube-scheduler).

hack/build-test-tools.sh builds them from Go modules and caches them outside the repository:
a fresh machine builds them once (minutes), later runs only check that they are there.
Without Go the tests that need them are skipped, saying why; with CI=true they fail instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NoReturn

import pytest

REPO = Path(__file__).resolve().parents[1]
BUILD_SCRIPT = REPO / "hack" / "build-test-tools.sh"
BUILD_TIMEOUT_SECONDS = 60 * 60


def in_ci() -> bool:
    return os.environ.get("CI") == "true"


def skip_or_fail(reason: str) -> NoReturn:
    """Outside CI a missing tool skips (and says why); in CI it fails."""
    if in_ci():
        pytest.fail(f"{reason}; CI=true, so this may not be skipped", pytrace=False)
    print(f"\nSKIP: {reason}")
    pytest.skip(reason)


@dataclass(frozen=True)
class Tools:
    directory: Path
    build_seconds: float

    @property
    def kube_apiserver(self) -> Path:
        return self.directory / "kube-apiserver"

    @property
    def kubectl(self) -> Path:
        return self.directory / "kubectl"

    @property
    def etcd(self) -> Path:
        return self.directory / "etcd"

    @property
    def helm(self) -> Path:
        return self.directory / "helm"

    @property
    def node_binaries(self) -> list[Path]:
        return [self.directory / name for name in NODE_BINARIES]


NODE_BINARIES = ("kubelet", "kube-proxy", "kube-controller-manager", "kube-scheduler")
Target = Literal["all", "helm", "node"]


def build_tools(*targets: Target) -> Tools:
    """Runs the build script for `targets` (default `all`; a no-op when cached) and checks
    what it made."""
    targets = targets or ("all",)
    what = " ".join(targets)
    if shutil.which("go") is None:
        skip_or_fail(f"Go is needed to build {what} with {BUILD_SCRIPT.name}; `go` is not on PATH")
    start = time.monotonic()
    result = subprocess.run(
        ["bash", str(BUILD_SCRIPT), *targets],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_SECONDS,
        check=False,
    )
    seconds = time.monotonic() - start
    if result.returncode != 0:
        pytest.fail(
            f"{BUILD_SCRIPT} {what} failed with exit code {result.returncode}\n"
            f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-8000:]}",
            pytrace=False,
        )
    tools = Tools(Path(result.stdout.strip().splitlines()[-1]), seconds)
    wanted: list[Path] = []
    if "all" in targets:
        wanted += [tools.kube_apiserver, tools.kubectl, tools.etcd, tools.helm]
    if "helm" in targets:
        wanted.append(tools.helm)
    if "node" in targets:
        wanted += tools.node_binaries
    for binary in wanted:
        if not os.access(binary, os.X_OK):
            pytest.fail(f"{BUILD_SCRIPT} did not produce {binary}", pytrace=False)
    return tools
