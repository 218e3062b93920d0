"""Golden files: one set of real manifests, three code paths, one expected result.

Every case in `cases/` runs through the core (`mutate` + `apply_patch`, checked against
jsonpatch as an independent applier), the CLI (in-process, and once as a real process) and
the HTTP app (AdmissionReview in, base64 patch out, applied with jsonpatch). All must give
the committed output; the output must be a fixed point of the core and valid against the
Kubernetes OpenAPI schema. Regenerate with `python -m tests.golden.regenerate` or
`UPDATE_GOLDEN=1 pytest tests/golden`, then read the printed diff.
"""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import jsonpatch
import kubernetes_validate
import orjson
import pytest
from kubernetes_validate.utils import all_versions

from tests.golden import harness
from tests.golden.regenerate import regenerate
from webhook import cli
from webhook.app import ServerState, create_app
from webhook.cluster.namespaces import StaticNamespaces
from webhook.cluster.services import StaticServices
from webhook.core import mutate
from webhook.logs import JsonLog
from webhook.manifests import load_documents, pod_sites
from webhook.metrics import Metrics

CASES = harness.discover()
MUTATED_CASES = [case for case in CASES if not case.output(harness.DENIED).exists()]
ids = [case.name for case in CASES]


@pytest.fixture(scope="module", autouse=True)
def _update_golden(request: pytest.FixtureRequest) -> None:
    if not os.environ.get("UPDATE_GOLDEN"):
        return
    report = "".join(regenerate())
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    assert capture is not None
    with capture.global_and_fixture_disabled():
        sys.stdout.write("\n" + report)


def _read(case: harness.Case, suffix: str) -> str:
    path = case.output(suffix)
    return path.read_text(encoding="utf-8") if path.exists() else ""


def _golden_documents(case: harness.Case) -> list[dict[str, Any]]:
    return load_documents(_read(case, harness.OUT))


# --- the directory itself ---------------------------------------------------------------


def test_cases_are_discovered() -> None:
    assert len(CASES) >= 40
    assert {"plain-pod", "istio-sidecar", "multi-document", "list", "big-env"} <= set(ids)


def test_every_input_has_its_outputs_and_no_output_is_stale() -> None:
    expected: set[str] = set()
    missing: list[str] = []
    for case in CASES:
        result = harness.DENIED if case.output(harness.DENIED).exists() else harness.OUT
        for suffix in (result, harness.WARNINGS):
            expected.add(case.output(suffix).name)
            if not case.output(suffix).exists():
                missing.append(case.output(suffix).name)
    stale = sorted(path.name for path in harness.output_files() if path.name not in expected)
    assert not missing, f"inputs without outputs (regenerate): {missing}"
    assert not stale, f"stale golden files found (no input produces them): {stale}"
    both = [
        c.name
        for c in CASES
        if c.output(harness.OUT).exists() and c.output(harness.DENIED).exists()
    ]
    assert not both, f"cases with both an output and a denial: {both}"


# --- path 1: the core ---------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_core(case: harness.Case) -> None:
    """mutate + apply_patch gives the committed files; jsonpatch applies the same ops alike."""
    run = harness.run_core(case)
    for suffix, text in run.expected_files().items():
        committed = _read(case, suffix)
        assert committed == text, harness.unified_diff(committed, text, case.output(suffix).name)
    for site_run in run.sites:
        ops = site_run.mutation.ops
        if site_run.mutation.outcome == "denied":
            assert ops == []
            continue
        oracle = jsonpatch.apply_patch(site_run.before, ops, in_place=False)
        assert oracle == site_run.after
        _assert_adds_are_new(site_run.before, ops)


def _assert_adds_are_new(document: dict[str, Any], ops: list[dict[str, Any]]) -> None:
    """Every `add` creates a member: the API server's patch must not overwrite silently."""
    current: Any = document
    for op in ops:
        if op["op"] == "add":
            pointer = jsonpatch.JsonPointer(op["path"])
            parent, last = pointer.to_last(current)
            if isinstance(parent, dict):
                assert last not in parent, f"add onto existing member {op['path']}"
        current = jsonpatch.apply_patch(current, [op], in_place=False)


# --- path 2: the CLI ----------------------------------------------------------------------


def _expected_stderr(case: harness.Case) -> str:
    denials = _read(case, harness.DENIED).splitlines()
    reasons = {w.reason for run in harness.run_core(case).sites for w in run.mutation.warnings}
    hint = cli.SERVICES_HINT + "\n" if "services_unavailable" in reasons else ""
    return (
        _read(case, harness.WARNINGS)
        + hint
        + "".join(f"lifecycle-webhook mutate: denied: {line}\n" for line in denials)
    )


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_cli(case: harness.Case, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(case.argv)
    out, err = capsys.readouterr()
    denied = case.output(harness.DENIED).exists()
    assert (code, out, err) == (
        1 if denied else 0,
        _read(case, harness.OUT),
        _expected_stderr(case),
    )


def test_cli_as_a_process() -> None:
    """Once per run: the real entry point, a real process, stdin as input."""
    case = next(case for case in CASES if case.name == "multi-document")
    argv = [arg if arg != str(case.path) else "-" for arg in case.argv]
    done = subprocess.run(
        [sys.executable, "-m", "webhook", *argv],
        input=case.path.read_bytes(),
        capture_output=True,
        cwd=harness.ROOT,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode() == _read(case, harness.OUT)
    assert done.stderr.decode() == _expected_stderr(case)


# --- path 3: HTTP -------------------------------------------------------------------------


def _review(uid: str, pod: dict[str, Any], namespace: str) -> dict[str, Any]:
    metadata = pod.get("metadata") or {}
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "name": metadata.get("name", ""),
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod,
            "oldObject": None,
            "dryRun": False,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    }


async def _post_all(state: ServerState, bodies: list[bytes]) -> list[httpx.Response]:
    transport = httpx.ASGITransport(app=create_app(state))
    async with httpx.AsyncClient(transport=transport, base_url="http://webhook") as client:
        return [
            await client.post("/mutate", content=body, headers={"content-type": "application/json"})
            for body in bodies
        ]


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_http(case: harness.Case) -> None:
    """Each pod as the API server would send it (a template's with its controller's
    ownerReference); the returned patch applied gives the golden pod."""
    documents = load_documents(case.path.read_text(encoding="utf-8"))
    options = harness.options(case).with_input(documents)
    sites = [site for document in documents for site in pod_sites(document)]
    namespaces = {site.namespace for site in sites}
    labels = {name: dict(options.settings(name).namespace_labels or {}) for name in namespaces}
    services = None
    if options.services is not None:
        services = {name: options.settings(name).services or [] for name in namespaces}
    state = ServerState(
        config=options.config,
        namespaces=StaticNamespaces(
            {name: dict(options.namespace_annotations) for name in namespaces}, labels
        ),
        services=StaticServices(services),  # type: ignore[arg-type]
        metrics=Metrics(),
        log=JsonLog(level="error"),
        cluster_version_override=options.cluster_version,
    )
    pods = [harness.as_created(site) for site in sites]
    bodies = [
        orjson.dumps(_review(f"uid-{index}", pod, site.namespace))
        for index, (site, pod) in enumerate(zip(sites, pods, strict=True))
    ]
    responses = asyncio.run(_post_all(state, bodies))

    denials = dict(
        line.split(": lifecycle-webhook: ", 1) for line in _read(case, harness.DENIED).splitlines()
    )
    golden_views = [
        site.pod for document in _golden_documents(case) for site in pod_sites(document)
    ]
    if not denials:
        assert len(golden_views) == len(sites)
    warnings: list[str] = []
    for index, (site, response) in enumerate(zip(sites, responses, strict=True)):
        assert response.status_code == 200, response.text
        answer = response.json()["response"]
        assert answer["uid"] == f"uid-{index}"
        warnings += answer.get("warnings", [])
        if site.label in denials:
            assert answer["allowed"] is False
            assert answer["status"]["code"] == 400
            assert answer["status"]["message"] == "lifecycle-webhook: " + denials[site.label]
            assert "patch" not in answer
            continue
        assert answer["allowed"] is True
        patched = pods[index]
        if "patch" in answer:
            assert answer["patchType"] == "JSONPatch"
            ops = orjson.loads(base64.b64decode(answer["patch"], validate=True))
            assert ops, "an empty patch must be left out"
            patched = jsonpatch.apply_patch(pods[index], ops, in_place=False)
        else:
            assert "patchType" not in answer
        assert harness.as_written(patched, site) == golden_views[index], site.label
    assert warnings == _read(case, harness.WARNINGS).splitlines()


# --- the outputs themselves -------------------------------------------------------------


@pytest.mark.parametrize("case", MUTATED_CASES, ids=[case.name for case in MUTATED_CASES])
def test_output_is_a_fixed_point(case: harness.Case) -> None:
    """The webhook run on its own output changes nothing (SPEC 4.4)."""
    documents = _golden_documents(case)
    options = harness.options(case).with_input(documents)
    for document in documents:
        for site in pod_sites(document):
            mutation = mutate(site.pod, options.settings(site.namespace, site.owner_kind))
            assert mutation.ops == [], (site.label, mutation.ops)
            assert mutation.outcome in ("unchanged", "skipped")


def _objects(documents: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for document in documents:
        if document.get("kind") == "List":
            yield from _objects(document.get("items", []))
        else:
            yield document


def _schema_version(minor: int) -> str:
    supported = sorted(int(version.split(".")[1]) for version in all_versions())
    return f"1.{min(max(minor, supported[0]), supported[-1])}.0"


@pytest.mark.parametrize("case", MUTATED_CASES, ids=[case.name for case in MUTATED_CASES])
def test_output_validates_against_the_kubernetes_schema(case: harness.Case) -> None:
    """Strict OpenAPI validation stands in for "the API server would accept this"."""
    version = _schema_version(harness.options(case).cluster_version[1])
    validated = 0
    for obj in _objects(_golden_documents(case)):
        group = str(obj.get("apiVersion", "")).rpartition("/")[0]
        if "." in group:
            continue  # a custom resource: no schema offline
        kubernetes_validate.validate(obj, version, strict=True)
        validated += 1
    assert validated >= 1
