"""The AdmissionReview envelope: bytes in, a small request record out, a response dict back.

Pure and allocation-light: the pod stays the dict orjson produced, nothing is validated
beyond what the answer depends on. Wire rules: research/k8s-semantics.md section A.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import orjson

from webhook.core.model import Mutation

API_VERSIONS = frozenset({"admission.k8s.io/v1", "admission.k8s.io/v1beta1"})
DEFAULT_MAX_BODY_BYTES = 3 * 1024 * 1024
"""The API server's own limit on a request body (3 MiB)."""
KIND = "AdmissionReview"


class BadReview(Exception):
    """The body is not an AdmissionReview we can answer: HTTP 400, no review to echo."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class ReviewRequest:
    """What the server needs from one review; `pod` is set only when the pod is to be mutated."""

    api_version: str
    uid: str
    operation: str
    namespace: str
    name: str
    """metadata.name, else metadata.generateName (pods of controllers have only the latter)."""
    owner_kind: str
    owner_name: str
    dry_run: bool
    pod: dict[str, Any] | None


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _is_pods_create(request: dict[str, Any]) -> bool:
    if request.get("operation") != "CREATE" or request.get("subResource"):
        return False
    resource = request.get("resource")
    if isinstance(resource, dict):
        return (
            resource.get("group", "") == ""
            and resource.get("version") == "v1"
            and resource.get("resource") == "pods"
        )
    kind = request.get("kind")
    if isinstance(kind, dict):
        return (
            kind.get("group", "") == ""
            and kind.get("version") == "v1"
            and kind.get("kind") == "Pod"
        )
    # The API server always sends `resource` and `kind`; a hand-written review may send
    # neither, and then the object says what it is.
    obj = request.get("object")
    return isinstance(obj, dict) and obj.get("apiVersion") == "v1" and obj.get("kind") == "Pod"


def parse_review(body: bytes) -> ReviewRequest:
    """Decode and classify one review; raises BadReview for anything the API server never sends."""
    try:
        review = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadReview(f"body is not JSON: {exc}") from None
    if not isinstance(review, dict):
        raise BadReview("body is not a JSON object")
    api_version = review.get("apiVersion")
    if (
        not isinstance(api_version, str)
        or api_version not in API_VERSIONS
        or review.get("kind") != KIND
    ):
        raise BadReview(
            "not an AdmissionReview: want apiVersion admission.k8s.io/v1 or v1beta1 and "
            f"kind AdmissionReview, got {str(api_version)[:80]!r} {str(review.get('kind'))[:80]!r}"
        )
    request = review.get("request")
    if not isinstance(request, dict):
        raise BadReview("AdmissionReview has no request object")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise BadReview("request.uid is missing or empty")

    obj = request.get("object")
    pod: dict[str, Any] | None = None
    if _is_pods_create(request):
        if not isinstance(obj, dict):
            raise BadReview("pod CREATE without a request.object")
        pod = obj

    name = _text(request.get("name"))
    namespace = _text(request.get("namespace"))
    owner_kind = owner_name = ""
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    if isinstance(meta, dict):
        name = name or _text(meta.get("name")) or _text(meta.get("generateName"))
        namespace = namespace or _text(meta.get("namespace"))
        owners = meta.get("ownerReferences")
        if isinstance(owners, list) and owners and isinstance(owners[0], dict):
            owner_kind = _text(owners[0].get("kind"))
            owner_name = _text(owners[0].get("name"))

    return ReviewRequest(
        api_version=str(api_version),
        uid=uid,
        operation=_text(request.get("operation")),
        namespace=namespace,
        name=name,
        owner_kind=owner_kind,
        owner_name=owner_name,
        dry_run=request.get("dryRun") is True,
        pod=pod,
    )


def build_response(review: ReviewRequest, mutation: Mutation | None) -> dict[str, Any]:
    """The answer in the request's apiVersion; `mutation` None = skipped (allowed, no patch).

    `allowed` is always explicit (absent decodes to false = denial); patch and patchType
    appear together or not at all; warnings only when there are some.
    """
    response: dict[str, Any] = {"uid": review.uid, "allowed": True}
    if mutation is not None:
        if mutation.outcome == "denied":
            response["allowed"] = False
            response["status"] = {
                "code": 400,
                "message": mutation.denial or "lifecycle-webhook: denied",
            }
        elif mutation.ops:
            response["patchType"] = "JSONPatch"
            response["patch"] = base64.b64encode(orjson.dumps(mutation.ops)).decode("ascii")
        if mutation.warnings:
            response["warnings"] = [w.text for w in mutation.warnings]
    return {"apiVersion": review.api_version, "kind": KIND, "response": response}
