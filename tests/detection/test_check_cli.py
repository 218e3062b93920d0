"""`lifecycle-webhook check` without a cluster: its output formats and its usage errors (exit 2).
The cluster side is tests/e2e/test_check.py, against the real API server."""

import json

import pytest
import yaml

from webhook.check import Report, render
from webhook.cli import main
from webhook.detection.judge import NEVER_SEEN, SETTINGS_CHANGED
from webhook.detection.owners import Owner


def report():
    found = Report(checked=7)
    found.unprotected[(Owner("shop", "Deployment", "web"), NEVER_SEEN)] = 3
    found.unprotected[(Owner("shop", "Pod", "debug"), NEVER_SEEN)] = 1
    found.unprotected[(Owner("api", "StatefulSet", "db"), SETTINGS_CHANGED)] = 2
    return found


def test_table_groups_by_owner_with_reason_count_and_fix():
    lines = render(report(), "table").splitlines()
    assert lines[0].split()[:4] == ["NAMESPACE", "OWNER", "PODS", "REASON"]
    assert lines[1].split()[:3] == ["api", "statefulset/db", "2"]
    assert lines[1].endswith("kubectl rollout restart statefulset/db -n api")
    assert SETTINGS_CHANGED in lines[1]
    assert lines[2].split()[:3] == ["shop", "deployment/web", "3"]
    assert lines[-1] == "6 of 7 pods in scope are unprotected (3 owners)"
    columns = {line.index("PODS") for line in lines[:1]} | {lines[1].index("2   ")}
    assert len(columns) == 1, "columns are aligned"


def test_nothing_unprotected_says_so():
    assert render(Report(checked=4), "table") == "no unprotected pods (4 pods in scope checked)\n"


def test_json_and_yaml_carry_the_same_document():
    document = json.loads(render(report(), "json"))
    assert yaml.safe_load(render(report(), "yaml")) == document
    assert document["checked"] == 7 and document["unprotected"] == 6
    assert document["owners"][2] == {
        "namespace": "shop",
        "kind": "Pod",
        "name": "debug",
        "reason": NEVER_SEEN,
        "pods": 1,
        "fix": document["owners"][2]["fix"],
    }
    assert "kubectl delete pod debug -n shop" in document["owners"][2]["fix"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--page-size=0"], "want a number from 1 to 10000"),
        (["-o", "wide"], "invalid choice"),
        (["--mode=everywhere"], "invalid choice"),
        (["--webhook-configuration=x", "--mode=cluster"], "drop --mode"),
        (["--kubeconfig=/nonexistent/kubeconfig"], "no such file"),
        (["--config=/nonexistent/config.yaml"], "cannot read --config"),
    ],
)
def test_usage_errors_exit_2_with_a_message(argv, message, capsys):
    assert main(["check", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert message in captured.err


def test_no_cluster_configured_exits_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert main(["check"]) == 2
    assert "no cluster configured" in capsys.readouterr().err


def test_a_bad_config_file_lists_its_problems(tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text("prestopSeconds: soon\n")
    assert main(["check", f"--config={config}"]) == 2
    assert "--config" in capsys.readouterr().err
