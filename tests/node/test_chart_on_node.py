"""The chart itself on the node: `helm install`, an upgrade under load, `helm uninstall`.

The other scenarios run the webhook as processes; this one runs what an operator installs —
the chart's Deployment (two replicas, the certificate bootstrap init container and sidecar,
readiness on /readyz, the preStop sleep, the drain, the PodDisruptionBudget, restricted Pod
Security, read-only root filesystem, uid 65532) from the image the Dockerfile describes
(tests/node/webhook_image.py), with the kubelet, the EndpointSlice controller and kube-proxy
doing their real parts. Pods are created the whole time with `failurePolicy: Fail`.
"""

from __future__ import annotations

import time

import pytest

from webhook.detector import RESTARTED_AT

from ..e2e.kube import INJECT, ApiError, Kube, Obj, is_mutated
from ..e2e.procs import run_checked, wait_until
from ..e2e.webhooks import CHART, helm_env
from .conftest import NodeEnv
from .webhook_image import WEBHOOK_IMAGE, build_webhook_image
from .workloads import PodCreator, http_deployment

pytestmark = pytest.mark.node

RELEASE = "chart"
NAMESPACE = "lifecycle-system"
FULLNAME = f"{RELEASE}-lifecycle-webhook"
HELM_TIMEOUT = "5m"
IMAGE_REPOSITORY, IMAGE_TAG = WEBHOOK_IMAGE.rsplit(":", 1)


def helm(env: NodeEnv, *argv: str) -> str:
    node = env.node
    command = [str(node.tools.helm), f"--kubeconfig={node.plane.kubeconfig}", *argv]
    return run_checked(command, timeout=400, env=helm_env(node.workdir)).stdout


def chart_values(*extra: str) -> list[str]:
    values = [
        f"image.repository={IMAGE_REPOSITORY}",
        f"image.tag={IMAGE_TAG}",
        "image.pullPolicy=Never",
        "failurePolicy=Fail",
        *extra,
    ]
    return [argument for value in values for argument in ("--set", value)]


def secret_exists(kube: Kube) -> bool:
    try:
        kube.request("GET", f"/api/v1/namespaces/{NAMESPACE}/secrets/{FULLNAME}-tls")
    except ApiError as exc:
        if exc.code == 404:
            return False
        raise
    return True


_imported: list[bool] = []


def import_webhook_image(node: NodeEnv) -> None:
    """The chart's image, assembled and imported into the node's containerd once a session."""
    if _imported:
        return
    started = time.monotonic()
    archive = build_webhook_image()
    node.node.sandbox.run(
        [
            "ctr",
            "--address=/run/containerd/containerd.sock",
            "-n",
            "k8s.io",
            "images",
            "import",
            str(archive),
        ],
        timeout=300,
    )
    _imported.append(True)
    node.figures["chart: image assembled and imported"] = f"{time.monotonic() - started:.1f} s"


def test_the_chart_installs_upgrades_and_uninstalls_without_a_failed_create(
    node: NodeEnv,
) -> None:
    kube = node.node.kube
    import_webhook_image(node)

    node.webhooks.unregister()  # only the chart's configuration answers from here on
    installed = False
    try:
        started = time.monotonic()
        helm(
            node,
            *("install", RELEASE, str(CHART), "-n", NAMESPACE, "--create-namespace"),
            *chart_values(),
            *("--wait", f"--timeout={HELM_TIMEOUT}"),
        )
        installed = True
        wait_until(node.webhooks.mutates, 120, "the chart's webhook mutating pods", interval=1)
        node.figures["chart: helm install until pods are mutated"] = (
            f"{time.monotonic() - started:.1f} s"
        )
        assert secret_exists(kube)

        namespace = kube.create_namespace("chart-upgrade", labels={INJECT: "enabled"})
        with PodCreator(kube, namespace) as creator:
            time.sleep(2)
            started = time.monotonic()
            # A changed pod template: the Deployment replaces both replicas, one at a time.
            helm(
                node,
                *("upgrade", RELEASE, str(CHART), "-n", NAMESPACE),
                *chart_values("server.drainSeconds=6"),
                *("--wait", f"--timeout={HELM_TIMEOUT}"),
            )
            node.node.kubectl(
                "rollout", "status", f"deployment/{FULLNAME}", "-n", NAMESPACE, "--timeout=300s"
            )
            upgrade_seconds = time.monotonic() - started
            time.sleep(2)
        assert len(creator.outcomes) >= 50, creator.outcomes
        assert not creator.failed, creator.failed[:10]
        node.figures["chart: helm upgrade rolling both replicas, failurePolicy Fail"] = (
            f"0 failed of {len(creator.outcomes)} creates (rollout {upgrade_seconds:.1f} s)"
        )

        helm(node, "uninstall", RELEASE, "-n", NAMESPACE, "--wait")
        installed = False
        configurations = kube.request(
            "GET", "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"
        ).body["items"]
        assert FULLNAME not in [c["metadata"]["name"] for c in configurations]
        # The Secret is owned by the configuration: the garbage collector removes it.
        wait_until(lambda: not secret_exists(kube), 120, "the certificate Secret collected")
    finally:
        if installed:
            helm(node, "uninstall", RELEASE, "-n", NAMESPACE, "--wait")


def test_the_chart_reports_and_restarts_a_deployment_that_missed_the_webhook(
    node: NodeEnv,
) -> None:
    """A Deployment whose pods started while no webhook was registered: the chart's server
    (its RBAC, its Lease) emits the Warning Event, restarts it once with `remediate: restart`,
    and the real Deployment controller's new pods pass through the webhook."""
    kube = node.node.kube
    import_webhook_image(node)
    node.webhooks.unregister()
    namespace = kube.create_namespace("chart-missed", labels={INJECT: "enabled"})
    kube.request(
        "POST",
        f"/apis/apps/v1/namespaces/{namespace}/deployments",
        http_deployment("web", 2, {"app": "web"}),
    )

    def pods() -> list[Obj]:
        return [p for p in kube.list_pods(namespace) if not p["metadata"].get("deletionTimestamp")]

    wait_until(lambda: len(pods()) == 2, 120, "the Deployment's pods", interval=1)
    assert not any(is_mutated(pod) for pod in pods())
    path = f"/apis/apps/v1/namespaces/{namespace}/deployments/web"
    installed = False
    try:
        helm(
            node,
            *("install", RELEASE, str(CHART), "-n", NAMESPACE, "--create-namespace"),
            *chart_values("config.remediate=restart", "config.remediateIntervalSeconds=5"),
            *("--wait", f"--timeout={HELM_TIMEOUT}"),
        )
        installed = True
        started = time.monotonic()

        def reported() -> bool:
            events = kube.request("GET", f"/api/v1/namespaces/{namespace}/events").body["items"]
            return any(
                e.get("reason") == "PodsMissedWebhook"
                and e["involvedObject"]["kind"] == "Deployment"
                and e["involvedObject"]["name"] == "web"
                for e in events
            )

        def restarted_at() -> str | None:
            template = kube.request("GET", path).body["spec"]["template"]
            return (template["metadata"].get("annotations") or {}).get(RESTARTED_AT)

        wait_until(reported, 120, "the Warning Event on deployment/web", interval=1)
        wait_until(lambda: restarted_at() is not None, 120, "the restart", interval=1)
        node.node.kubectl("rollout", "status", "deployment/web", "-n", namespace, "--timeout=300s")
        wait_until(lambda: len(pods()) == 2, 120, "the old pods gone", interval=1)
        assert all(is_mutated(pod) for pod in pods())
        node.figures["chart: a Deployment that missed the webhook, reported and restarted"] = (
            f"{time.monotonic() - started:.1f} s after helm install"
        )
        stamp = restarted_at()
        time.sleep(8)  # more than remediateIntervalSeconds: nothing left to restart
        assert restarted_at() == stamp
        lease = kube.request(
            "GET", f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases/{FULLNAME}-detector"
        ).body
        assert lease["spec"]["holderIdentity"].startswith(f"{FULLNAME}-")
    finally:
        if installed:
            helm(node, "uninstall", RELEASE, "-n", NAMESPACE, "--wait")
