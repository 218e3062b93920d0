"""A real helm (pinned, built by hack/build-test-tools.sh) and a cached `helm template`."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from ..tools import REPO, build_tools

CHART = REPO / "charts" / "lifecycle-webhook"
RELEASE = "lcw"
NAMESPACE = "lifecycle-system"
OLDEST_KUBE = "1.30.0"
NEWEST_KUBE = "1.37.0"

Obj = dict[str, Any]
Render = Callable[..., list[Obj]]


@pytest.fixture(scope="session")
def helm() -> Path:
    """The pinned helm (cached: a no-op when already built)."""
    return build_tools("helm").helm


@pytest.fixture(scope="session")
def helm_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """helm's cache/config/data in a temporary directory, so runs are hermetic."""
    base = tmp_path_factory.mktemp("helm-home")
    env = dict(os.environ)
    for name in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
        env[name] = str(base / name.lower())
    return env


def helm_args(values: Mapping[str, Any]) -> list[str]:
    """`--set-json` for every value, so types are exact (3 is a number, "3" a string)."""
    args: list[str] = []
    for key, value in values.items():
        args += ["--set-json", f"{key}={json.dumps(value)}"]
    return args


def run_helm(helm: Path, env: Mapping[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(helm), *args], capture_output=True, text=True, timeout=120, env=dict(env), check=False
    )


@pytest.fixture(scope="session")
def template(
    helm: Path, helm_env: dict[str, str]
) -> Callable[..., subprocess.CompletedProcess[str]]:
    """`helm template` with values; returns the finished process (for tests expecting failure)."""

    def run(
        values: Mapping[str, Any] | None = None,
        kube_version: str = OLDEST_KUBE,
        namespace: str = NAMESPACE,
        release: str = RELEASE,
    ) -> subprocess.CompletedProcess[str]:
        return run_helm(
            helm,
            helm_env,
            "template",
            release,
            str(CHART),
            "--namespace",
            namespace,
            "--kube-version",
            kube_version,
            *helm_args(values or {}),
        )

    return run


@pytest.fixture(scope="session")
def render(template: Callable[..., subprocess.CompletedProcess[str]]) -> Render:
    """The rendered documents for these values (memoized: the matrix reuses renders)."""
    cache: dict[str, list[Obj]] = {}

    def run(values: Mapping[str, Any] | None = None, **kwargs: str) -> list[Obj]:
        key = json.dumps([values or {}, kwargs], sort_keys=True)
        if key not in cache:
            result = template(values, **kwargs)
            if result.returncode != 0:
                raise AssertionError(f"helm template failed for {values}:\n{result.stderr}")
            cache[key] = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
        copied: list[Obj] = json.loads(json.dumps(cache[key]))  # a deep copy per caller
        return copied

    return run


def only(documents: list[Obj], kind: str, name: str | None = None) -> Obj:
    found = [
        d
        for d in documents
        if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def all_of(documents: list[Obj], kind: str) -> list[Obj]:
    return [d for d in documents if d["kind"] == kind]
