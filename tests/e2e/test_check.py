"""`lifecycle-webhook check` against the real API server: pods created while the webhook failed
open are listed by owner (a Deployment through its ReplicaSet) with exit 1; pods the real
webhook mutated pass with exit 0; a namespace annotation changed afterwards makes the earlier
pods "settings changed since"."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from webhook.core.model import PREFIX
from webhook.detection.judge import NEVER_SEEN, SETTINGS_CHANGED

from ..tools import REPO
from .kube import (
    INJECT,
    Obj,
    create_deployment_with_replicaset,
    is_mutated,
    make_pod,
    owner_reference,
    unique_name,
)
from .procs import wait_until
from .session import E2E
from .test_rbac import as_service_account
from .webhooks import WebhookSetup

pytestmark = pytest.mark.e2e

DOWN = WebhookSetup(failure_policy="Ignore", target="refused")
UP = WebhookSetup(failure_policy="Ignore")


def run_check(e2e: E2E, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [
        sys.executable,
        "-m",
        "webhook",
        "check",
        f"--kubeconfig={e2e.plane.kubeconfig}",
        f"--config={e2e.server.config_path}",
        *args,
    ]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=REPO, check=False)


def owners(result: subprocess.CompletedProcess[str]) -> dict[tuple[str, str], tuple[int, str]]:
    document = json.loads(result.stdout)
    return {(row["kind"], row["name"]): (row["pods"], row["reason"]) for row in document["owners"]}


def owned_pod(name: str, owner: Obj) -> Obj:
    pod = make_pod(name, labels={"app": owner["metadata"]["name"]})
    pod["metadata"]["ownerReferences"] = [owner_reference(owner)]
    return pod


def test_check_lists_pods_that_missed_the_webhook_by_owner(e2e: E2E) -> None:
    kube = e2e.kube
    e2e.use(DOWN)
    namespace = kube.create_namespace("check", labels={INJECT: "enabled"})
    replicaset = create_deployment_with_replicaset(kube, namespace, "web")
    statefulset = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "db", "uid": "00000000-0000-0000-0000-000000000001"},
    }
    for index in range(3):
        assert not is_mutated(
            kube.create_pod(namespace, owned_pod(f"web-{index}", replicaset)).body
        )
    kube.create_pod(namespace, owned_pod("db-0", statefulset))
    kube.create_pod(namespace, make_pod("debug"))
    kube.create_pod(namespace, make_pod("opted-out", labels={INJECT: "false"}))

    configuration = f"--webhook-configuration={e2e.registration.name}"
    down = run_check(e2e, configuration, "-n", namespace, "-o", "json")
    assert down.returncode == 1, down.stderr
    assert owners(down) == {
        ("Deployment", "web"): (3, NEVER_SEEN),
        ("StatefulSet", "db"): (1, NEVER_SEEN),
        ("Pod", "debug"): (1, NEVER_SEEN),
    }
    assert json.loads(down.stdout)["checked"] == 5
    rows = json.loads(down.stdout)["owners"]
    assert f"kubectl rollout restart deployment/web -n {namespace}" in [r["fix"] for r in rows]

    # The same from the chart's mode flags, cluster-wide, in a table: a page of 2 pods
    # makes the list continue many times.
    table = run_check(e2e, "--mode=namespace", "--page-size=2")
    assert table.returncode == 1, table.stderr
    line = next(
        line for line in table.stdout.splitlines() if f"{namespace} " in line and "web" in line
    )
    assert line.split()[:3] == [namespace, "deployment/web", "3"], line
    as_yaml = yaml.safe_load(run_check(e2e, configuration, "-n", namespace, "-o", "yaml").stdout)
    assert as_yaml == json.loads(down.stdout)

    # The webhook is back; the owners' pods are recreated (what the fix command leads to).
    e2e.use(UP)
    fresh = kube.create_namespace("check-up", labels={INJECT: "enabled"})
    replicaset = create_deployment_with_replicaset(kube, fresh, "web")
    for index in range(2):
        assert is_mutated(kube.create_pod(fresh, owned_pod(f"web-{index}", replicaset)).body)
    up = run_check(e2e, configuration, "-n", fresh)
    assert up.returncode == 0, up.stdout + up.stderr
    assert up.stdout == "no unprotected pods (2 pods in scope checked)\n"

    # A namespace annotation changes the grace period the webhook would give: earlier pods
    # are stale until restarted.
    kube.patch_namespace(fresh, {"annotations": {PREFIX + "shutdown-seconds": "60"}})
    stale = run_check(e2e, configuration, "-n", fresh, "-o", "json")
    assert stale.returncode == 1, stale.stderr
    assert owners(stale) == {("Deployment", "web"): (2, SETTINGS_CHANGED)}
    wait_until(
        lambda: (
            kube.create_pod(fresh, make_pod("probe"), dry_run=True).body["spec"][
                "terminationGracePeriodSeconds"
            ]
            == 65
        ),
        15,
        "the webhook to see the namespace annotation",
    )
    kube.create_pod(fresh, owned_pod(unique_name("web"), replicaset))
    assert owners(run_check(e2e, configuration, "-n", fresh, "-o", "json"))[
        ("Deployment", "web")
    ] == (2, SETTINGS_CHANGED), "the pod created after the change is protected"


def test_check_errors_exit_2_with_a_message(e2e: E2E) -> None:
    missing = run_check(e2e, "--webhook-configuration=no-such-configuration")
    assert missing.returncode == 2
    assert missing.stdout == ""
    assert "MutatingWebhookConfiguration 'no-such-configuration' not found" in missing.stderr


CHECK_RULES: list[Obj] = [
    {"apiGroups": [""], "resources": ["pods", "namespaces"], "verbs": ["list"]},
    {"apiGroups": ["apps"], "resources": ["replicasets"], "verbs": ["get"]},
    {
        "apiGroups": ["admissionregistration.k8s.io"],
        "resources": ["mutatingwebhookconfigurations"],
        "verbs": ["get"],
    },
]
"""What the README says `check` needs here (services and jobs only for exposure and jobs=inject)."""


def without(resource: str) -> list[Obj]:
    rules = []
    for rule in CHECK_RULES:
        kept = [r for r in rule["resources"] if r != resource]
        if kept:
            rules.append({**rule, "resources": kept})
    return rules


def test_check_runs_read_only_with_the_documented_verbs_and_each_is_needed(
    e2e: E2E, tmp_path: Path
) -> None:
    kube = e2e.kube
    e2e.use(DOWN)
    namespace = kube.create_namespace("check-rbac", labels={INJECT: "enabled"})
    replicaset = create_deployment_with_replicaset(kube, namespace, "web")
    kube.create_pod(namespace, owned_pod("web-0", replicaset))
    configuration = f"--webhook-configuration={e2e.registration.name}"

    def as_account(rules: list[Obj], *args: str) -> subprocess.CompletedProcess[str]:
        directory = tmp_path / unique_name("account")
        directory.mkdir()
        as_service_account(e2e, directory, rules)
        kubeconfig = f"--kubeconfig={directory / 'service-account.kubeconfig'}"
        return run_check(e2e, kubeconfig, configuration, *args)

    allowed = as_account(CHECK_RULES, "-n", namespace, "-o", "json")
    assert allowed.returncode == 1, allowed.stderr
    assert owners(allowed) == {("Deployment", "web"): (1, NEVER_SEEN)}
    everywhere = as_account(CHECK_RULES, "-o", "json")
    assert everywhere.returncode == 1, everywhere.stderr
    for resource in ("pods", "namespaces", "replicasets", "mutatingwebhookconfigurations"):
        denied = as_account(without(resource), "-o", "json")
        assert denied.returncode == 2, (resource, denied.stdout)
        assert "403" in denied.stderr and resource in denied.stderr, denied.stderr
        assert denied.stdout == ""
