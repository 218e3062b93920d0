"""The whole golden corpus through the real API server.

For every pod of every case (Pods, and the pod templates of workloads, created as Pods):
the input is created for real in a namespace the chart selects, and the golden output is
created with a server-side dry run in a namespace the webhook never sees. Both then carry the
same API-server defaults (and ServiceAccount volumes), so the stored pod must equal the
golden pod exactly; the warnings the API server relays must be the golden warnings; cases
whose golden result is a denial must be rejected with that message, and no other pod may be.

A template's pod is created as its controller would create it (`harness.as_created`: the
ReplicaSet's ownerReference for a Deployment...); the Services of a case (in its input or
--services) are created in its namespace first, and --namespace-label labels the namespace.
Offline-only: a case whose exposure is unknown offline (no Services given) has no
counterpart in a cluster, where the Services are always known.
"""

from __future__ import annotations

import argparse
import copy
import difflib
import re
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import yaml

from webhook.core.model import DEFAULT_EXCLUDED_NAMESPACES
from webhook.manifests import load_documents, pod_sites

from ..golden import harness
from ..golden.harness import DENIED, OUT, WARNINGS, Case, discover
from .kube import INJECT, ApiError, Kube, Obj
from .procs import wait_until
from .server import DEFAULT_CONFIG, RELEASE_NAMESPACE
from .session import E2E

pytestmark = pytest.mark.e2e

OFFLINE_ONLY = {"profiles-unknown-exposure"}
CASES = [case for case in discover() if case.name not in OFFLINE_ONLY]
OURS = "lifecycle-webhook: "
SERVICE_ACCOUNT_VOLUME = re.compile(r"kube-api-access-[a-z0-9]{5}")


def test_the_corpus_is_there() -> None:
    assert len(CASES) >= 20, f"golden corpus missing or tiny: {len(CASES)} cases"


@pytest.fixture(scope="module", autouse=True)
def default_server_config(e2e: E2E) -> Iterator[None]:
    """Cases switch the server's config file; later modules expect the built-in defaults."""
    yield
    e2e.server.set_config(DEFAULT_CONFIG)


@pytest.fixture(scope="module")
def expected_namespace(e2e: E2E) -> str:
    """Where golden outputs are dry-run created: labelled so the webhook is never called."""
    return e2e.kube.create_namespace("golden-expected", labels={INJECT: "disabled"})


def case_flags(case: Case) -> argparse.Namespace:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--config")
    parser.add_argument("--cluster-version")
    parser.add_argument("--namespace-annotation", action="append", default=[])
    parser.add_argument("--namespace-label", action="append", default=[])
    parser.add_argument("--services", action="append", default=[])
    flags, unknown = parser.parse_known_args(case.flags)
    assert not unknown, f"flags the e2e test does not reproduce: {unknown}"
    return flags


def server_config(flags: argparse.Namespace) -> tuple[str, set[str]]:
    """The config file the server runs with for this case, and its excluded namespaces."""
    config: dict[str, object] = {}
    if flags.config:
        config = yaml.safe_load(Path(flags.config).read_text()) or {}
    if flags.cluster_version:
        config["clusterVersion"] = flags.cluster_version
    excluded = set(config.get("excludedNamespaces") or DEFAULT_EXCLUDED_NAMESPACES)  # type: ignore[call-overload]
    return yaml.safe_dump(config, sort_keys=True), excluded | {RELEASE_NAMESPACE}


def key_values(items: list[str]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in items)


def case_services(case: Case, documents: list[Obj]) -> list[tuple[str, Obj]]:
    """The Service objects of the case, with the namespace each names ("" for none)."""
    texts = [Path(path).read_text() for path in case_flags(case).services]
    found = []
    for document in [*documents, *(d for text in texts for d in load_documents(text))]:
        items = document.get("items", []) if document.get("kind") == "List" else [document]
        for item in items:
            if item.get("kind") == "Service":
                found.append((item["metadata"].get("namespace", ""), item))
    return found


def normalized(pod: Obj) -> Obj:
    """What must match: labels, annotations and spec (status and server bookkeeping dropped,
    the random suffix of the ServiceAccount volume made constant)."""
    metadata = pod["metadata"]
    kept = {key: metadata[key] for key in ("name", "labels", "annotations") if key in metadata}
    spec = yaml.safe_load(
        SERVICE_ACCOUNT_VOLUME.sub("kube-api-access", yaml.safe_dump(pod["spec"]))
    )
    return {"metadata": kept, "spec": spec}


def as_pod(site_pod: Obj, name: str) -> Obj:
    pod = copy.deepcopy(site_pod)
    metadata = pod.setdefault("metadata", {})
    metadata.pop("namespace", None)
    metadata.pop("generateName", None)
    metadata["name"] = name
    return pod


def stored_as(kube: Kube, namespace: str, pod: Obj, want: Obj) -> bool:
    """Whether `pod`, created through the webhook now (dry run), would be stored as `want`."""
    return normalized(kube.create_pod(namespace, pod, dry_run=True).body) == want


def service_accounts(pod: Obj) -> set[str]:
    spec = pod.get("spec") or {}
    return {name for name in (spec.get("serviceAccountName"), spec.get("serviceAccount")) if name}


def diff(want: Obj, got: Obj) -> str:
    return "".join(
        difflib.unified_diff(
            yaml.safe_dump(want, sort_keys=True).splitlines(keepends=True),
            yaml.safe_dump(got, sort_keys=True).splitlines(keepends=True),
            "golden (as the API server stores it)",
            "stored through the webhook",
        )
    )


def expected_denials(case: Case) -> dict[str, str]:
    path = case.output(DENIED)
    if not path.exists():
        return {}
    denials = {}
    for line in path.read_text().splitlines():
        label, _, denial = line.partition(": ")
        denials[label] = denial
    return denials


def case_ids() -> Iterator[str]:
    return (case.name for case in CASES)


@pytest.mark.parametrize("case", CASES, ids=list(case_ids()))
def test_golden_case_through_the_api_server(
    namespace_mode: E2E, expected_namespace: str, case: Case
) -> None:
    kube = namespace_mode.kube
    flags = case_flags(case)
    config_text, excluded = server_config(flags)
    namespace_mode.server.set_config(config_text)
    annotations = key_values(flags.namespace_annotation)
    labels = {INJECT: "enabled", **key_values(flags.namespace_label)}

    documents = load_documents(case.path.read_text())
    inputs = [site for doc in documents for site in pod_sites(doc)]
    services = case_services(case, documents)
    denials = expected_denials(case)
    outputs = []
    if not denials:
        out_text = case.output(OUT).read_text()
        outputs = [site for doc in load_documents(out_text) for site in pod_sites(doc)]
        assert len(outputs) == len(inputs), "golden output has a different number of pods"

    namespaces: dict[str, str] = {}

    def namespace_for(original: str) -> str:
        if original in excluded:
            if not kube.namespace_exists(original):
                kube.create_namespace(name=original, labels={INJECT: "enabled"})
            kube.ensure_service_account(original, "default")
            return original
        if original not in namespaces:
            created = kube.create_namespace("golden", labels=labels, annotations=annotations)
            namespaces[original] = created
            for where, item in services:
                if where == original:
                    body = copy.deepcopy(item)
                    body["metadata"].pop("namespace", None)
                    body["spec"].setdefault("ports", [{"port": 80}])
                    kube.request("POST", f"/api/v1/namespaces/{created}/services", body)
        return namespaces[original]

    warnings: list[str] = []
    for index, site in enumerate(inputs):
        name = (site.pod.get("metadata") or {}).get("name") or f"{case.name}-{index}"
        namespace = namespace_for(site.namespace)
        pod = as_pod(harness.as_created(site), name)
        for account in service_accounts(pod):
            kube.ensure_service_account(namespace, account)
            kube.ensure_service_account(expected_namespace, account)

        if site.label in denials:
            with pytest.raises(ApiError) as rejected:
                kube.create_pod(namespace, pod)
            assert rejected.value.code == 400, rejected.value
            assert denials[site.label] in rejected.value.message
            warnings += [w for w in rejected.value.warnings if w.startswith(OURS)]
            continue

        if services and outputs:
            # The webhook's Service watch lags the API server by a moment: wait for it.
            want = normalized(
                kube.create_pod(
                    expected_namespace,
                    as_pod(harness.as_created(outputs[index]), name),
                    dry_run=True,
                ).body
            )
            wait_until(
                partial(stored_as, kube, namespace, pod, want),
                30,
                f"{site.label}: the webhook to see the case's Services",
                interval=0.2,
            )
        try:
            created = kube.create_pod(namespace, pod)
        except ApiError as exc:
            try:
                kube.create_pod(expected_namespace, pod, dry_run=True)
            except ApiError as without_webhook:
                pytest.fail(
                    f"{site.label}: the golden input itself is rejected by the API server, "
                    f"webhook or not; the case needs fixing: {without_webhook.message}"
                )
            raise AssertionError(f"{site.label}: rejected through the webhook: {exc}") from exc
        warnings += [w for w in created.warnings if w.startswith(OURS)]
        if not outputs:
            continue
        stored = kube.get_pod(namespace, name)
        expected = kube.create_pod(
            expected_namespace, as_pod(harness.as_created(outputs[index]), name), dry_run=True
        )
        want, got = normalized(expected.body), normalized(stored)
        assert got == want, f"{site.label}: stored pod differs from the golden output\n" + diff(
            want, got
        )

    # Exactly, in order: the core reads annotations in sorted key order, as the API server
    # serialises them, and never repeats a text (the API server would drop the repeat).
    golden_warnings = case.output(WARNINGS).read_text().splitlines()
    assert warnings == golden_warnings
