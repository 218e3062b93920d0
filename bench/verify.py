"""Correctness while benchmarking: a fast wrong answer must not count as a result.

Before any load, one review of each size is sent to each server and its answer checked in
full here; during the load, post.lua checks status, `allowed` and `patch` of every answer;
afterwards the product's own metrics must show only successful outcomes.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

import orjson

from bench import BenchError

_METRIC_LINE = re.compile(
    r"^lifecycle_webhook_admission_requests_total\{(?P<labels>[^}]*)\}\s+(?P<value>[0-9.eE+]+)$"
)
_OUTCOME = re.compile(r'outcome="([^"]*)"')
GOOD_OUTCOMES = frozenset({"mutated", "unchanged", "skipped"})


def _fail(label: str, size: str, problem: str) -> BenchError:
    return BenchError(f"{label} answered the {size} review wrongly: {problem}")


def check_answer(
    label: str, size: str, review: dict[str, Any], status: int, body: bytes, *, full: bool
) -> list[dict[str, Any]]:
    """Check one answer; with `full`, also that the patch applies and adds the preStop hooks.

    Returns the decoded patch operations.
    """
    if status != 200:
        raise _fail(label, size, f"HTTP {status}: {body[:300]!r}")
    try:
        answer = orjson.loads(body)
        response = answer["response"]
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise _fail(label, size, f"not an AdmissionReview ({exc}): {body[:300]!r}") from exc
    request = review["request"]
    if answer.get("apiVersion") != review["apiVersion"] or answer.get("kind") != "AdmissionReview":
        raise _fail(label, size, f"wrong apiVersion/kind {answer.get('apiVersion')!r}")
    if response.get("uid") != request["uid"]:
        raise _fail(label, size, f"uid {response.get('uid')!r} is not {request['uid']!r}")
    if response.get("allowed") is not True:
        raise _fail(label, size, f"allowed is {response.get('allowed')!r}")
    if response.get("patchType") != "JSONPatch" or not isinstance(response.get("patch"), str):
        raise _fail(label, size, "no JSONPatch in the answer")
    try:
        ops = orjson.loads(base64.b64decode(response["patch"], validate=True))
    except (binascii.Error, orjson.JSONDecodeError) as exc:
        raise _fail(label, size, f"patch is not base64 JSON: {exc}") from exc
    if not isinstance(ops, list) or not ops:
        raise _fail(label, size, f"patch is not a non-empty list: {ops!r}")
    if full:
        _check_patch_effect(label, size, request["object"], ops)
    return ops


def _check_patch_effect(label: str, size: str, pod: dict[str, Any], ops: list[Any]) -> None:
    from webhook.core import apply_patch

    try:
        patched = apply_patch(pod, ops)
    except Exception as exc:
        raise _fail(label, size, f"the patch does not apply: {exc!r}") from exc
    for container in patched["spec"]["containers"]:
        if not (container.get("lifecycle") or {}).get("preStop"):
            raise _fail(label, size, f"container {container['name']!r} has no preStop after patch")


def outcome_counts(metrics_text: str) -> dict[str, float]:
    """Reviews by outcome from the product's Prometheus text."""
    counts: dict[str, float] = {}
    for line in metrics_text.splitlines():
        match = _METRIC_LINE.match(line)
        if not match:
            continue
        outcome = _OUTCOME.search(match.group("labels"))
        key = outcome.group(1) if outcome else "?"
        counts[key] = counts.get(key, 0.0) + float(match.group("value"))
    return counts
