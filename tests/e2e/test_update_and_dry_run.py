"""We intercept CREATE only: later updates of a mutated pod go through untouched. A
server-side dry-run create shows the mutation and stores nothing."""

from __future__ import annotations

import pytest

from .kube import ApiError, is_mutated, make_pod, pre_stop, unique_name
from .server import metric_value
from .session import E2E

pytestmark = pytest.mark.e2e


def test_updating_labels_of_a_mutated_pod_succeeds(
    namespace_mode: E2E, injected_namespace: str
) -> None:
    kube = namespace_mode.kube
    stored = kube.create_and_read_pod(injected_namespace, make_pod(unique_name("upd")))
    name = stored["metadata"]["name"]
    assert is_mutated(stored)

    patched = kube.patch_pod(
        injected_namespace, name, {"metadata": {"labels": {"tier": "web"}}}
    ).body
    assert patched["metadata"]["labels"]["tier"] == "web"

    replaced = kube.get_pod(injected_namespace, name)
    replaced["metadata"]["labels"]["tier"] = "api"
    path = f"/api/v1/namespaces/{injected_namespace}/pods/{name}"
    kube.request("PUT", path, replaced)

    final = kube.get_pod(injected_namespace, name)
    assert final["metadata"]["labels"]["tier"] == "api"
    assert final["spec"] == stored["spec"]
    assert final["metadata"]["annotations"] == stored["metadata"]["annotations"]
    # the API server never sent us the updates (operations: [CREATE] in the chart)
    metrics = namespace_mode.server.metrics()
    requests = "lifecycle_webhook_admission_requests_total"
    assert metric_value(metrics, requests, {"operation": "UPDATE"}) == 0
    assert metric_value(metrics, requests, {"operation": "CREATE"}) > 0


def test_server_side_dry_run_shows_the_mutation_and_stores_nothing(
    namespace_mode: E2E, injected_namespace: str
) -> None:
    kube = namespace_mode.kube
    name = unique_name("dry")
    answer = kube.create_pod(injected_namespace, make_pod(name), dry_run=True).body
    assert is_mutated(answer)
    assert pre_stop(answer, "app") == {"sleep": {"seconds": 5}}
    with pytest.raises(ApiError) as missing:
        kube.get_pod(injected_namespace, name)
    assert missing.value.code == 404
