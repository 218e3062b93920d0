"""`config` (the webhook's configuration file) as the chart renders it: whatever `helm template`
accepts, the real server accepts too. The server exits 2 on a configuration file it refuses,
so a value that passed the chart but not the server would crash-loop the webhook on its next
restart; the chart must refuse it up front."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from ..tools import REPO
from .conftest import only

pytestmark = pytest.mark.chart

Template = Callable[..., subprocess.CompletedProcess[str]]

POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: app
spec:
  containers:
    - name: app
      image: registry.example/app:1
      ports:
        - name: http
          containerPort: 8080
    - name: proxy
      image: registry.example/proxy:1
      ports:
        - name: abcdefghijklmno
          containerPort: 9000
"""

# Each of these makes `lifecycle-webhook serve --config` (and `mutate --config`) exit 2.
BAD_CONFIGS: list[dict[str, Any]] = [
    {"prestopSeconds": 3601},
    {"shutdownSeconds": 3601},
    {"sidecarShutdownSeconds": 86400},
    {"prestopSeconds": -1},
    {"prestopSeconds": 5.5},
    {"prestopSeconds": 31, "maxSeconds": 30},
    {"shutdownSeconds": 1, "maxSeconds": 0},
    {"sidecarShutdownSeconds": 7201, "maxSeconds": 7200},
    {"maxSeconds": -1},
    {"maxSeconds": 10**20},  # rendered as 1e+20, which the server cannot read as an integer
    {"prestopHttpPort": "HTTP"},
    {"prestopHttpPort": "a--b"},
    {"prestopHttpPort": "-http"},
    {"prestopHttpPort": "http-"},
    {"prestopHttpPort": "abcdefghijklmnop"},  # 16 characters
    {"prestopHttpPort": ""},
    {"prestopHttpPort": " http"},
    {"prestopHttpPort": 0},
    {"prestopHttpPort": 65536},
    {"prestopHttpPort": "0"},
    {"prestopExec": [""]},
    {"prestopExec": ["", "sleep", "5"]},
    {"prestopExec": []},
    {"prestopExec": [5]},
    {"prestopExec": ""},
    {"prestopExec": " "},
    {"prestopExec": "\t\n"},
    {"prestopExec": "\u00a0"},  # Python's strip() removes it too
    {"prestopExec": "[oops"},
    {"prestopExec": "  [ -f /tmp/x ] && sleep 5"},  # the server reads it as JSON and fails
    {"prestopHttpPath": "/a b"},
    {"prestopHttpPath": "shutdown"},
    {"prestopHttpPath": ""},
    {"prestopHttpPath": "/\u00e4"},
    {"prestopHttpPath": "/a\tb"},
    {"clusterVersion": "1.1234"},
    {"clusterVersion": "2.0"},
    {"clusterVersion": "1.30.1"},
    {"clusterVersion": "v1.30"},
    {"clusterVersion": "latest"},
    {"clusterVersion": 1.3},
    {"prestop": "tcp"},
    {"jobs": "always"},
    {"strict": "yes"},
    {"reportOnly": 1},
    {"prestopSecond": 5},
    {"unknownKey": True},
    {"excludedNamespaces": ["team-a"]},  # the chart writes it from the top-level value
    # issue 9: ceilings, fromLoadBalancer, profiles
    {"maxGracePeriodSeconds": 0},
    {"maxGracePeriodSeconds": 3601},
    {"maxGracePeriodSeconds": 61, "maxSeconds": 60},
    {"prestopSeconds": "fromLoadBalancer"},
    {"prestopSeconds": "fromLoadBalancer or"},
    {"prestopSeconds": "fromLoadBalancer or 3601"},
    {"prestopSeconds": "fromLoadBalancer or 5", "maxSeconds": 4},
    {"prestopSeconds": "fromloadbalancer or 5"},
    {"prestopSeconds": "fromLoadBalancer  or 5"},
    {"profiles": {"name": "a"}},
    {"profiles": [{"match": {}}]},  # no name
    {"profiles": [{"name": "Web"}]},
    {"profiles": [{"name": "a" * 64}]},
    {"profiles": [{"name": "a"}, {"name": "a"}]},
    {"profiles": [{"name": "a", "colour": "red"}]},
    {"profiles": [{"name": "a", "match": {"exposure": "public"}}]},
    {"profiles": [{"name": "a", "match": {"exposure": "unknown"}}]},
    {"profiles": [{"name": "a", "match": {"exposure": []}}]},
    {"profiles": [{"name": "a", "match": {"ownerKind": "Pod"}}]},
    {"profiles": [{"name": "a", "match": {"ownerKind": ["Deployment", "deployment"]}}]},
    {"profiles": [{"name": "a", "match": {"namespace": "shop"}}]},
    {"profiles": [{"name": "a", "match": {"podSelector": {"matchLabels": {"a b": "c"}}}}]},
    {"profiles": [{"name": "a", "match": {"podSelector": {"matchLabels": {"a": "b c"}}}}]},
    {"profiles": [{"name": "a", "match": {"podSelector": {"matchLabels": {"a": 1}}}}]},
    {"profiles": [{"name": "a", "match": {"podSelector": {"matchLabels": {"a": "x" * 64}}}}]},
    {
        "profiles": [
            {"name": "a", "match": {"podSelector": {"matchLabels": {("p" * 254) + "/a": "b"}}}}
        ]
    },
    {"profiles": [{"name": "a", "match": {"podSelector": {"matchFields": {}}}}]},
    {
        "profiles": [
            {
                "name": "a",
                "match": {"podSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}},
            }
        ]
    },
    {
        "profiles": [
            {
                "name": "a",
                "match": {
                    "podSelector": {
                        "matchExpressions": [{"key": "a", "operator": "NotIn", "values": []}]
                    }
                },
            }
        ]
    },
    {
        "profiles": [
            {
                "name": "a",
                "match": {
                    "namespaceSelector": {
                        "matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]
                    }
                },
            }
        ]
    },
    {
        "profiles": [
            {
                "name": "a",
                "match": {
                    "namespaceSelector": {
                        "matchExpressions": [{"key": "a", "operator": "Equals", "values": ["x"]}]
                    }
                },
            }
        ]
    },
    {
        "profiles": [
            {
                "name": "a",
                "match": {"namespaceSelector": {"matchExpressions": [{"operator": "Exists"}]}},
            }
        ]
    },
    {
        "profiles": [
            {
                "name": "a",
                "match": {
                    "namespaceSelector": {
                        "matchExpressions": [{"key": "a", "operator": "Exists", "extra": 1}]
                    }
                },
            }
        ]
    },
    {"profiles": [{"name": "a", "settings": {"maxSeconds": 10}}]},
    {"profiles": [{"name": "a", "settings": {"prestopSecond": 10}}]},
    {"profiles": [{"name": "a", "settings": {"prestopSeconds": 3601}}]},
    {"profiles": [{"name": "a", "settings": {"shutdownSeconds": 31}}], "maxSeconds": 30},
    {"profiles": [{"name": "a", "settings": {"maxGracePeriodSeconds": 0}}]},
    {"profiles": [{"name": "a", "settings": {"prestopSeconds": "fromLoadBalancer or 3601"}}]},
    {"profiles": [{"name": "a", "settings": {"prestop": "tcp"}}]},
    {"profiles": [{"name": "a", "settings": None}]},
]

# Each of these must render, and the server must accept what is rendered.
GOOD_CONFIGS: list[dict[str, Any]] = [
    {},
    {"prestopSeconds": 0, "shutdownSeconds": 3600, "sidecarShutdownSeconds": 3600},
    {"prestopSeconds": 3600},
    {"maxSeconds": 7200, "prestopSeconds": 7200, "shutdownSeconds": 10},
    {"maxSeconds": 0},
    {"maxSeconds": 0, "prestopSeconds": 0, "shutdownSeconds": 0, "sidecarShutdownSeconds": 0},
    {"maxSeconds": 2147483647, "shutdownSeconds": 2147483647},
    {"prestop": "http", "prestopHttpPort": "http"},
    {"prestop": "http", "prestopHttpPort": "abcdefghijklmno", "prestopHttpPath": "/"},
    {"prestop": "http", "prestopHttpPort": "a-1"},
    {"prestop": "http", "prestopHttpPort": 1, "prestopHttpPath": "/drain?now=1#x"},
    {"prestop": "http", "prestopHttpPort": 65535, "prestopHttpPath": "/~!*$'()"},
    {"prestop": "exec", "prestopExec": "sleep 5"},
    {"prestop": "exec", "prestopExec": "  sleep 5 && echo done  "},
    {"prestop": "exec", "prestopExec": ["sleep", "5"]},
    {"prestop": "exec", "prestopExec": ["sh", "-c", ""]},
    {"prestop": "exec", "prestopExec": "on"},  # YAML 1.1 would read it as a boolean
    {"prestop": "exec", "prestopExec": "null"},
    {"prestop": "exec", "prestopExec": "~"},
    {"prestop": "exec", "prestopExec": "1e3"},
    {"prestop": "exec", "prestopExec": "echo '[x]'"},
    {"prestop": "sleep", "clusterVersion": "1.30"},
    {"prestop": "auto", "clusterVersion": "1.0"},
    {"clusterVersion": "1.999"},
    {"clusterVersion": "auto"},
    {"prestop": "none", "jobs": "inject", "reportOnly": True, "strict": True},
    {"strict": False, "reportOnly": False, "jobs": "skip"},
    {"maxGracePeriodSeconds": 1},
    {"maxGracePeriodSeconds": 3600, "prestopSeconds": "fromLoadBalancer or 3600"},
    {"maxSeconds": 7200, "maxGracePeriodSeconds": 7200},
    {"prestopSeconds": "fromLoadBalancer or 0", "maxSeconds": 0},
    {"profiles": []},
    {
        "profiles": [
            {
                "name": "not-exposed",
                "match": {"exposure": "none"},
                "settings": {"prestopSeconds": 0},
            },
            {
                "name": "nlb",
                "match": {"exposure": "loadBalancer"},
                "settings": {"prestopSeconds": 20, "shutdownSeconds": 30},
            },
        ]
    },
    {
        "profiles": [
            {
                "name": "all-of-it",
                "match": {
                    "exposure": ["cluster", "loadBalancer"],
                    "ownerKind": [
                        "Deployment",
                        "StatefulSet",
                        "DaemonSet",
                        "ReplicaSet",
                        "Job",
                        "CronJob",
                        "none",
                    ],
                    "podSelector": {
                        "matchLabels": {"app.kubernetes.io/name": "web", "tier": ""},
                        "matchExpressions": [
                            {"key": "a", "operator": "In", "values": ["x", "y"]},
                            {"key": "example.com/b", "operator": "NotIn", "values": ["z"]},
                            {"key": "c", "operator": "Exists"},
                            {"key": "d", "operator": "DoesNotExist", "values": []},
                        ],
                    },
                    "namespaceSelector": {"matchLabels": {"istio.io/dataplane-mode": "ambient"}},
                },
                "settings": {
                    "prestop": "sleep",
                    "prestopSeconds": "fromLoadBalancer or 20",
                    "prestopExec": ["sleep", "5"],
                    "prestopHttpPath": "/drain",
                    "prestopHttpPort": "http",
                    "shutdownSeconds": 30,
                    "sidecarShutdownSeconds": 10,
                    "jobs": "inject",
                    "reportOnly": True,
                    "maxGracePeriodSeconds": 120,
                },
            },
            {"name": "x", "match": None},
            {"name": "y", "match": {"podSelector": {}}},
            {
                "name": "z",
                "match": {"podSelector": {"matchLabels": None, "matchExpressions": None}},
            },
            {
                "name": "a-" + "b" * 61,
                "match": {"podSelector": {"matchLabels": {("p" * 253) + "/" + "n" * 63: "v" * 63}}},
            },
        ]
    },
]

# Values the server accepts but the chart need not (stricter is fine): the invariant only.
OTHER_CONFIGS: list[dict[str, Any]] = [
    {"prestopSeconds": "5"},
    {"prestopHttpPort": "8080"},
    {"prestopExec": '["sleep", "5"]'},
    {"strict": "true"},
    {"prestopSeconds": 5.0},
    {"maxSeconds": 9007199254740993},
    {"maxGracePeriodSeconds": "50"},
    {"profiles": [{"name": "a", "settings": {"prestopSeconds": "5"}}]},
    {
        "profiles": [
            {
                "name": "a",
                "match": {
                    "podSelector": {
                        "matchExpressions": [{"key": "a", "operator": "Exists", "values": None}]
                    }
                },
            }
        ]
    },
]


def config_file(result: subprocess.CompletedProcess[str]) -> str:
    documents = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    text: str = only(documents, "ConfigMap")["data"]["config.yaml"]
    return text


def mutate(tmp_path: Path, config_text: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "config.yaml"
    config.write_text(config_text)
    pod = tmp_path / "pod.yaml"
    pod.write_text(POD)
    return subprocess.run(
        [sys.executable, "-m", "webhook", "mutate", "--config", str(config), "-f", str(pod)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=False,
    )


@pytest.mark.parametrize("config", BAD_CONFIGS, ids=repr)
def test_a_config_the_server_refuses_fails_the_render(
    template: Template, config: dict[str, Any]
) -> None:
    result = template({"config": config})
    assert result.returncode != 0, f"rendered:\n{config_file(result)}"
    assert "config" in result.stderr, result.stderr


@pytest.mark.parametrize("config", GOOD_CONFIGS, ids=repr)
def test_a_good_config_renders(template: Template, config: dict[str, Any]) -> None:
    result = template({"config": config})
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("config", GOOD_CONFIGS + BAD_CONFIGS + OTHER_CONFIGS, ids=repr)
def test_what_the_chart_renders_the_server_accepts(
    template: Template, tmp_path: Path, config: dict[str, Any]
) -> None:
    """The invariant: helm accepts `config` => `lifecycle-webhook mutate --config <the rendered
    config.yaml>` exits 0 (the same parser as `serve`, which would exit 2)."""
    result = template({"config": config})
    if result.returncode != 0:
        return  # refused up front: nothing reaches the server
    mutated = mutate(tmp_path, config_file(result))
    assert mutated.returncode == 0, (
        f"helm accepted {config!r} but the server refuses it:\n{mutated.stderr}"
    )
