"""The AdmissionReview envelope (webhook.admission): what the API server accepts, byte for byte.

Rules: research/k8s-semantics.md section A (A4 uid/GVK echo, A5 explicit allowed, A6
patch/patchType pairing, A7 standard padded base64, A8 denials, A9 warnings).
"""

from __future__ import annotations

import base64
import copy
from typing import Any

import jsonpatch
import orjson
import pytest

from webhook.admission import BadReview, ReviewRequest, build_response, parse_review
from webhook.core import Settings, mutate
from webhook.core.model import AdmissionWarning, Mutation

V1 = "admission.k8s.io/v1"
V1BETA1 = "admission.k8s.io/v1beta1"
POD_KIND = {"group": "", "version": "v1", "kind": "Pod"}
PODS = {"group": "", "version": "v1", "resource": "pods"}


def pod(**metadata: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "namespace": "shop", **metadata},
        "spec": {"containers": [{"name": "app", "image": "nginx"}]},
    }


def review(api_version: str = V1, **request: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
        "kind": POD_KIND,
        "resource": PODS,
        "operation": "CREATE",
        "namespace": "shop",
        "dryRun": False,
        "object": pod(),
        "oldObject": None,
    }
    body.update(request)
    return {"apiVersion": api_version, "kind": "AdmissionReview", "request": body}


def parse(document: Any) -> ReviewRequest:
    return parse_review(orjson.dumps(document))


OPS = [
    {"op": "add", "path": "/spec/terminationGracePeriodSeconds", "value": 45},
    {"op": "add", "path": "/metadata/annotations", "value": {"x": "?>?ÿÿÿ"}},
]


def mutation(**fields: Any) -> Mutation:
    return Mutation(**{"ops": [], "outcome": "unchanged", **fields})


# --- the envelope -----------------------------------------------------------------------


@pytest.mark.parametrize("api_version", [V1, V1BETA1])
def test_answer_echoes_uid_and_comes_in_the_requests_api_version(api_version: str) -> None:
    request = parse(review(api_version, uid="uid-1"))
    answer = build_response(request, mutation(ops=OPS, outcome="mutated"))
    assert answer["apiVersion"] == api_version
    assert answer["kind"] == "AdmissionReview"
    assert answer["response"]["uid"] == "uid-1"


def test_allowed_is_sent_explicitly_even_without_a_patch() -> None:
    for m in (None, mutation(), mutation(outcome="skipped")):
        answer = build_response(parse(review()), m)
        assert answer["response"]["allowed"] is True
        assert "allowed" in orjson.dumps(answer).decode()


def test_patch_is_standard_padded_base64_of_the_ops() -> None:
    answer = build_response(parse(review()), mutation(ops=OPS, outcome="mutated"))
    response = answer["response"]
    assert response["patchType"] == "JSONPatch"
    patch = response["patch"]
    assert len(patch) % 4 == 0 and patch.endswith("=")  # padded
    assert "+" in patch and "/" in patch  # the standard alphabet, not the URL-safe one
    assert "-" not in patch and "_" not in patch
    assert orjson.loads(base64.b64decode(patch, validate=True)) == OPS


def test_no_ops_means_neither_patch_nor_patch_type() -> None:
    for m in (None, mutation(), mutation(outcome="skipped")):
        response = build_response(parse(review()), m)["response"]
        assert "patch" not in response
        assert "patchType" not in response


def test_warnings_only_when_there_are_some_and_texts_as_given() -> None:
    quiet = build_response(parse(review()), mutation(ops=OPS, outcome="mutated"))
    assert "warnings" not in quiet["response"]
    warnings = (
        AdmissionWarning("invalid-value", "lifecycle-webhook: prestop-seconds: not an integer"),
        AdmissionWarning("unknown-key", "lifecycle-webhook: unknown key prestop-secs"),
    )
    loud = build_response(parse(review()), mutation(outcome="unchanged", warnings=warnings))
    assert loud["response"]["warnings"] == [w.text for w in warnings]
    assert loud["response"]["allowed"] is True


def test_denial_shape() -> None:
    message = "lifecycle-webhook: prestop-seconds: not an integer 0-3600"
    denied = mutation(
        ops=OPS,
        outcome="denied",
        denial=message,
        warnings=(AdmissionWarning("invalid-value", "lifecycle-webhook: w"),),
    )
    response = build_response(parse(review()), denied)["response"]
    assert response["allowed"] is False
    assert response["status"] == {"code": 400, "message": message}
    assert "patch" not in response and "patchType" not in response
    assert response["warnings"] == ["lifecycle-webhook: w"]


def test_real_core_patch_decodes_and_applies_to_the_pod() -> None:
    document = review()
    request = parse(document)
    assert request.pod is not None
    original = copy.deepcopy(request.pod)
    result = mutate(request.pod, Settings(namespace=request.namespace))
    assert result.outcome == "mutated"
    response = build_response(request, result)["response"]
    ops = orjson.loads(base64.b64decode(response["patch"], validate=True))
    patched = jsonpatch.apply_patch(original, ops)
    assert patched["spec"]["containers"][0]["lifecycle"]["preStop"]
    assert request.pod == original  # the core did not modify the request's pod


# --- classification ---------------------------------------------------------------------


def test_pod_create_is_to_be_mutated() -> None:
    request = parse(review())
    assert request.pod == pod()
    assert request.operation == "CREATE"


def test_without_resource_and_kind_the_object_says_what_it_is() -> None:
    minimal = review()
    del minimal["request"]["kind"], minimal["request"]["resource"]
    assert parse(minimal).pod == pod()
    minimal["request"]["object"] = {"apiVersion": "v1", "kind": "Service", "metadata": {}}
    assert parse(minimal).pod is None


def test_resource_decides_over_the_object() -> None:
    secret = review(resource={"group": "", "version": "v1", "resource": "secrets"})
    assert parse(secret).pod is None


@pytest.mark.parametrize("operation", ["UPDATE", "DELETE", "CONNECT"])
def test_other_operations_are_skipped(operation: str) -> None:
    request = parse(review(operation=operation, object=None if operation == "DELETE" else pod()))
    assert request.pod is None
    assert request.operation == operation


@pytest.mark.parametrize(
    "sub_resource", ["status", "binding", "ephemeralcontainers", "eviction", "exec"]
)
def test_subresources_are_skipped(sub_resource: str) -> None:
    request = parse(review(subResource=sub_resource, object={"kind": "Binding"}))
    assert request.pod is None


@pytest.mark.parametrize(
    ("kind", "resource"),
    [
        (
            {"group": "apps", "version": "v1", "kind": "Deployment"},
            {"group": "apps", "version": "v1", "resource": "deployments"},
        ),
        (
            {"group": "", "version": "v1", "kind": "ConfigMap"},
            {"group": "", "version": "v1", "resource": "configmaps"},
        ),
        (
            {"group": "example.com", "version": "v1", "kind": "Pod"},
            {"group": "example.com", "version": "v1", "resource": "pods"},
        ),
        (
            {"group": "", "version": "v2", "kind": "Pod"},
            {"group": "", "version": "v2", "resource": "pods"},
        ),
    ],
)
def test_other_kinds_and_resources_are_skipped(
    kind: dict[str, str], resource: dict[str, str]
) -> None:
    request = parse(review(kind=kind, resource=resource, object={"kind": kind["kind"]}))
    assert request.pod is None


def test_skipped_reviews_are_allowed_without_patch() -> None:
    request = parse(review(operation="UPDATE"))
    answer = build_response(request, None)
    assert answer["response"] == {"uid": request.uid, "allowed": True}


def test_dry_run_is_recorded_and_does_not_change_classification() -> None:
    wet = parse(review())
    dry = parse(review(dryRun=True))
    assert dry.dry_run and not wet.dry_run
    assert dry.pod == wet.pod


# --- what the log line needs --------------------------------------------------------------


def test_log_fields_come_from_request_then_object_metadata() -> None:
    owners = [
        {"kind": "ReplicaSet", "name": "web-5d9c", "uid": "u1"},
        {"kind": "Other", "name": "second"},
    ]
    obj = pod(ownerReferences=owners)
    del obj["metadata"]["name"], obj["metadata"]["namespace"]
    obj["metadata"]["generateName"] = "web-5d9c-"
    request = parse(review(object=obj, name="", namespace="shop"))
    assert (request.uid, request.namespace, request.name) == (
        "705ab4f5-6393-11e8-b7cc-42010a800002",
        "shop",
        "web-5d9c-",
    )
    assert (request.owner_kind, request.owner_name) == ("ReplicaSet", "web-5d9c")

    named = parse(review(name="explicit"))
    assert named.name == "explicit"
    from_object = parse(review(namespace=None))
    assert from_object.namespace == "shop"


@pytest.mark.parametrize(
    "metadata",
    [
        "not a mapping",
        {"ownerReferences": "nope"},
        {"ownerReferences": [None]},
        {"ownerReferences": [{"kind": 3}]},
        {"name": ["x"]},
    ],
)
def test_odd_metadata_shapes_do_not_break_parsing(metadata: Any) -> None:
    obj = {"kind": "Pod", "metadata": metadata, "spec": {}}
    request = parse(review(object=obj, name=None))
    assert request.pod == obj
    assert request.owner_kind == "" and isinstance(request.name, str)


# --- BadReview ------------------------------------------------------------------------------


def _without(document: dict[str, Any], *path: str) -> dict[str, Any]:
    document = copy.deepcopy(document)
    target = document
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return document


BAD: list[tuple[str, bytes]] = [
    ("empty body", b""),
    ("not JSON", b"{not json"),
    ("invalid UTF-8", b'{"apiVersion": "\xff"}'),
    ("JSON array", b"[]"),
    ("JSON string", b'"AdmissionReview"'),
    ("JSON number", b"42"),
    ("deeply nested", b"[" * 100_000 + b"]" * 100_000),
    ("no apiVersion", orjson.dumps(_without(review(), "apiVersion"))),
    ("wrong apiVersion", orjson.dumps(review("admission.k8s.io/v2"))),
    ("other group", orjson.dumps(review("v1"))),
    ("no kind", orjson.dumps(_without(review(), "kind"))),
    ("wrong kind", orjson.dumps({**review(), "kind": "AdmissionRequest"})),
    ("no request", orjson.dumps(_without(review(), "request"))),
    ("request null", orjson.dumps({**review(), "request": None})),
    ("request a list", orjson.dumps({**review(), "request": [1]})),
    ("no uid", orjson.dumps(_without(review(), "request", "uid"))),
    ("empty uid", orjson.dumps(review(uid=""))),
    ("uid a number", orjson.dumps(review(uid=12))),
    ("pod CREATE without object", orjson.dumps(_without(review(), "request", "object"))),
    ("pod CREATE with object null", orjson.dumps(review(object=None))),
    ("pod CREATE with object a list", orjson.dumps(review(object=[pod()]))),
]


@pytest.mark.parametrize(("case", "body"), BAD, ids=[case for case, _ in BAD])
def test_bad_reviews_raise_bad_review_with_a_message(case: str, body: bytes) -> None:
    with pytest.raises(BadReview) as raised:
        parse_review(body)
    assert raised.value.message
    assert len(raised.value.message) < 400


def test_bad_review_message_says_what_is_wrong() -> None:
    with pytest.raises(BadReview, match="uid"):
        parse(review(uid=""))
    with pytest.raises(BadReview, match="not JSON"):
        parse_review(b"nope")
    with pytest.raises(BadReview, match="AdmissionReview"):
        parse(review("admission.k8s.io/v2"))
