"""Detection in the server, through the real API server: pods created while the webhook failed
open are counted per namespace and reported once on their Deployment by the one replica that
holds the Lease; with `remediate: restart` the Deployment is restarted once.

No controller-manager runs here: the ReplicaSets and pods a Deployment would get are created by
hand with their ownerReferences, and a restart is seen on the Deployment's pod template.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from webhook.app import ServerState
from webhook.cluster.namespaces import NamespaceCache
from webhook.config_file import with_namespace_excluded
from webhook.core.config import parse_config
from webhook.detector import EVENT_REASON, RESTARTED_AT, Detector
from webhook.logs import JsonLog
from webhook.metrics import Metrics

from .kube import INJECT, Kube, Obj, is_mutated, make_pod, owner_reference, unique_name
from .procs import wait_until
from .server import RELEASE_NAMESPACE, WebhookServer, metric_value
from .session import E2E
from .test_rbac import as_service_account
from .webhooks import WebhookSetup, render_chart

pytestmark = pytest.mark.e2e

SECONDS = 40
UNPROTECTED = "lifecycle_webhook_unprotected_pods"
LEADER = "lifecycle_webhook_detector_leader"


class DetectingServer(WebhookServer):
    """A webhook server of its own (the session's keeps serving admission), electing on `lease`."""

    def __init__(self, e2e: E2E, name: str, lease: str, config: str = "{}\n") -> None:
        super().__init__(
            e2e.workdir,
            e2e.plane.ca,
            e2e.plane.kubeconfig,
            name=name,
            extra_args=[f"--lease-name={lease}", "--mode=namespace"],
        )
        self.lease = lease
        self.config_path.write_text(config)

    def unprotected(self, namespace: str) -> float | None:
        """The gauge for `namespace`, None when this process exports no such series."""
        text = self.metrics()
        series = f'{UNPROTECTED}{{namespace="{namespace}"}}'
        for line in text.splitlines():
            if line.startswith(series + " "):
                return float(line.rpartition(" ")[2])
        return None

    def leading(self) -> bool:
        return metric_value(self.metrics(), LEADER, {}) == 1


@pytest.fixture
def servers(e2e: E2E) -> Iterator[list[DetectingServer]]:
    started: list[DetectingServer] = []
    yield started
    for server in started:
        server.stop()


def deployment(kube: Kube, namespace: str, name: str) -> Obj:
    labels = {"app": name}
    return kube.request(
        "POST",
        f"/apis/apps/v1/namespaces/{namespace}/deployments",
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:1"}]},
                },
            },
        },
    ).body


def rollout(kube: Kube, namespace: str, owner: Obj, template_hash: str, pods: int) -> list[Obj]:
    """What the Deployment controller would create: a ReplicaSet and its pods."""
    name = owner["metadata"]["name"]
    labels = {"app": name, "pod-template-hash": template_hash}
    replica_set = kube.request(
        "POST",
        f"/apis/apps/v1/namespaces/{namespace}/replicasets",
        {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": f"{name}-{template_hash}",
                "labels": labels,
                "ownerReferences": [owner_reference(owner)],
            },
            "spec": {
                "replicas": pods,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:1"}]},
                },
            },
        },
    ).body
    created = []
    for index in range(pods):
        pod = make_pod(f"{name}-{template_hash}-{index}", labels=labels)
        pod["metadata"]["ownerReferences"] = [owner_reference(replica_set)]
        created.append(kube.create_pod(namespace, pod).body)
    return created


def warning_events(kube: Kube, namespace: str, kind: str, name: str) -> list[Obj]:
    items = kube.request("GET", f"/api/v1/namespaces/{namespace}/events").body["items"]
    return [
        e
        for e in items
        if e.get("reason") == EVENT_REASON
        and e["involvedObject"]["kind"] == kind
        and e["involvedObject"]["name"] == name
    ]


def failed_open_rollout(e2e: E2E, name: str = "web") -> tuple[str, Obj, list[Obj]]:
    """A namespace in scope, a Deployment and 3 pods created while the webhook failed open."""
    e2e.use(WebhookSetup(failure_policy="Ignore", target="refused"))
    namespace = e2e.kube.create_namespace("detect", labels={INJECT: "enabled"})
    owner = deployment(e2e.kube, namespace, name)
    pods = rollout(e2e.kube, namespace, owner, "5d8f7c9b4", 3)
    assert not any(is_mutated(pod) for pod in pods)
    return namespace, owner, pods


def test_one_replica_counts_and_reports_pods_that_missed_the_webhook(
    e2e: E2E, servers: list[DetectingServer]
) -> None:
    namespace, owner, _ = failed_open_rollout(e2e)
    lease = unique_name("detector")
    for index in range(2):
        servers.append(DetectingServer(e2e, unique_name(f"detect-{index}"), lease))
        servers[-1].start()

    def one_leader() -> bool:
        return sum(server.leading() for server in servers) == 1

    wait_until(one_leader, SECONDS, "one replica holding the Lease")
    (leader,) = [server for server in servers if server.leading()]
    (other,) = [server for server in servers if server is not leader]
    wait_until(lambda: leader.unprotected(namespace) == 3, SECONDS, "the gauge to count 3")
    assert other.unprotected(namespace) is None, "only the Lease holder publishes"

    wait_until(
        lambda: bool(warning_events(e2e.kube, namespace, "Deployment", "web")),
        SECONDS,
        "a Warning Event on the Deployment",
    )
    (event,) = warning_events(e2e.kube, namespace, "Deployment", "web")
    assert event["type"] == "Warning"
    assert event["involvedObject"]["uid"] == owner["metadata"]["uid"]
    assert event["message"] == (
        "3 pods started without lifecycle-webhook's shutdown hooks; "
        f"run kubectl rollout restart deployment/web -n {namespace}"
    )

    # The holder stops: it releases the Lease, the other takes over at once and reports the
    # same count, without a second Event for the same rollout.
    leader.stop()
    wait_until(other.leading, SECONDS, "the other replica to take the Lease")
    wait_until(lambda: other.unprotected(namespace) == 3, SECONDS, "the new holder's gauge")
    assert len(warning_events(e2e.kube, namespace, "Deployment", "web")) == 1


def test_remediation_restarts_the_deployment_once_and_new_pods_are_protected(
    e2e: E2E, servers: list[DetectingServer], tmp_path: Path
) -> None:
    namespace, owner, old_pods = failed_open_rollout(e2e)
    config = "remediate: restart\nremediateIntervalSeconds: 1\n"
    server = DetectingServer(e2e, unique_name("remediate"), unique_name("detector"), config)
    servers.append(server)
    server.start()
    path = f"/apis/apps/v1/namespaces/{namespace}/deployments/web"

    def restarted_at() -> str | None:
        template = e2e.kube.request("GET", path).body["spec"]["template"]
        return (template["metadata"].get("annotations") or {}).get(RESTARTED_AT)

    wait_until(lambda: restarted_at() is not None, SECONDS, "the Deployment to be restarted")
    stamp = restarted_at()

    # What the Deployment controller does next, with the webhook back: a new ReplicaSet whose
    # pods pass through the webhook, and the old pods deleted.
    e2e.use(WebhookSetup())
    new_pods = rollout(e2e.kube, namespace, owner, "7f6b5d4c3", 3)
    assert all(is_mutated(pod) for pod in new_pods)
    for pod in old_pods:
        e2e.kube.request("DELETE", f"/api/v1/namespaces/{namespace}/pods/{pod['metadata']['name']}")
    wait_until(lambda: server.unprotected(namespace) == 0, SECONDS, "the gauge to drop to 0")
    restarts = metric_value(
        server.metrics(),
        "lifecycle_webhook_remediations_total",
        {"kind": "Deployment", "result": "restarted"},
    )
    assert restarts >= 1  # earlier tests' Deployments that missed the webhook count too
    lines = [json.loads(line) for line in server_log(server) if '"remediation"' in line]
    mine = [line for line in lines if line.get("namespace") == namespace]
    assert [(line["workload"], line["result"]) for line in mine] == [
        ("deployment/web", "restarted")
    ]
    assert restarted_at() == stamp, "restarted once, not again"


def server_log(server: WebhookServer) -> list[str]:
    return (server.workdir / f"{server.name}.log").read_text().splitlines()


@pytest.mark.parametrize("remediate", ["off", "restart"])
def test_the_detector_works_with_exactly_the_chart_rules(
    e2e: E2E, tmp_path: Path, remediate: str
) -> None:
    """The chart's ClusterRoles and its Lease Role, and nothing else, let the detector count,
    lead, report and (only when the chart grants patch for `remediate: restart`) restart."""
    documents = render_chart(e2e.tools.helm, tmp_path, {"config.remediate": remediate})
    cluster_rules = [
        rule
        for d in documents
        if d["kind"] == "ClusterRole" and not d["metadata"]["name"].endswith("-webhook-config")
        for rule in d["rules"]
    ]
    (lease_role,) = [
        d for d in documents if d["kind"] == "Role" and "detector" in d["metadata"]["name"]
    ]
    granted_patch = any("patch" in rule["verbs"] for rule in cluster_rules)
    assert granted_patch == (remediate == "restart")
    api = as_service_account(e2e, tmp_path, cluster_rules, {RELEASE_NAMESPACE: lease_role["rules"]})
    namespace, _, _ = failed_open_rollout(e2e)
    config = with_namespace_excluded(
        parse_config({"remediate": "restart", "remediateIntervalSeconds": 1}), RELEASE_NAMESPACE
    )
    log = JsonLog("error")
    namespaces = NamespaceCache(api, log).start()
    state = ServerState(config=config, namespaces=namespaces, metrics=Metrics(), log=log)
    detector = Detector(
        api,
        state,
        namespaces,
        log,
        mode="namespace",
        lease_namespace=RELEASE_NAMESPACE,
        lease_name=lease_role["rules"][1]["resourceNames"][0],
        settle_seconds=0.5,
    ).start()
    path = f"/apis/apps/v1/namespaces/{namespace}/deployments/web"
    try:
        wait_until(lambda: detector.leading, SECONDS, "the Lease with the chart's Role")
        wait_until(lambda: detector.counts().get(namespace) == 3, SECONDS, "pods listed")
        wait_until(
            lambda: bool(warning_events(e2e.kube, namespace, "Deployment", "web")),
            SECONDS,
            "the Event (create events, get replicasets)",
        )

        def restarted() -> bool:
            template = e2e.kube.request("GET", path).body["spec"]["template"]
            return RESTARTED_AT in (template["metadata"].get("annotations") or {})

        def refused() -> bool:
            text = state.metrics.exposition().decode()
            labels = {"kind": "Deployment", "result": "error"}
            return metric_value(text, "lifecycle_webhook_remediations_total", labels) >= 1

        if remediate == "restart":
            wait_until(restarted, SECONDS, "the restart (patch deployments)")
        else:
            wait_until(refused, SECONDS, "a restart refused without the patch rule")
            assert not restarted()
    finally:
        detector.stop()
        namespaces.stop()


def test_a_settings_change_makes_earlier_pods_unprotected(
    e2e: E2E, servers: list[DetectingServer]
) -> None:
    """Pods the webhook mutated are protected until the config or their namespace's
    annotations ask for more: then every pod is judged again."""
    e2e.use(WebhookSetup())
    namespace = e2e.kube.create_namespace("stale", labels={INJECT: "enabled"})
    owner = deployment(e2e.kube, namespace, "api")
    assert all(is_mutated(pod) for pod in rollout(e2e.kube, namespace, owner, "6c5b4a3d2", 3))
    server = DetectingServer(e2e, unique_name("stale"), unique_name("detector"))
    servers.append(server)
    server.start()
    wait_until(server.leading, SECONDS, "the Lease")
    assert server.unprotected(namespace) is None, "mutated pods are protected"

    server.set_config("shutdownSeconds: 45\n")  # the webhook would now raise the grace period
    wait_until(lambda: server.unprotected(namespace) == 3, SECONDS, "stale after the config")
    server.set_config("{}\n")
    wait_until(lambda: server.unprotected(namespace) == 0, SECONDS, "protected again")
    e2e.kube.patch_namespace(
        namespace, {"annotations": {"lifecycle-webhook.io/shutdown-seconds": "45"}}
    )
    wait_until(lambda: server.unprotected(namespace) == 3, SECONDS, "stale after the namespace")
