"""The verdict on live pods: mutated ones are protected, the others say why not."""

from typing import Any

import pytest

from webhook.core import Settings, apply_patch, mutate, parse_config
from webhook.core.model import STATUS_KEY
from webhook.detection.judge import NEVER_SEEN, SETTINGS_CHANGED, _only_status, judge

P = "lifecycle-webhook.io/"


def make_pod(annotations=None, labels=None, phase="Running", **spec) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": "web-1", "namespace": "shop"}
    if annotations is not None:
        metadata["annotations"] = annotations
    if labels is not None:
        metadata["labels"] = labels
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {
            "containers": [{"name": "app", "image": "nginx"}],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            **spec,
        },
        "status": {"phase": phase},
    }


def admitted(pod, settings):
    """The pod as the API server stores it after the webhook answered."""
    return apply_patch(pod, mutate(pod, settings).ops)


def test_a_pod_the_webhook_never_saw_is_unprotected():
    verdict = judge(make_pod(), Settings(namespace="shop"))
    assert verdict.unprotected and verdict.reason == NEVER_SEEN


def test_a_mutated_pod_is_protected():
    settings = Settings(namespace="shop")
    verdict = judge(admitted(make_pod(), settings), settings)
    assert not verdict.unprotected and verdict.reason is None


def test_a_namespace_annotation_changed_since_makes_the_pod_stale():
    before = Settings(namespace="shop")
    pod = admitted(make_pod(), before)
    after = Settings(namespace="shop", namespace_annotations={P + "shutdown-seconds": "60"})
    verdict = judge(pod, after)
    assert verdict.unprotected and verdict.reason == SETTINGS_CHANGED


@pytest.mark.parametrize(
    ("op", "only_status"),
    [
        ({"op": "replace", "path": "/metadata/annotations/lifecycle-webhook.io~1status"}, True),
        ({"op": "add", "path": "/metadata/annotations", "value": {STATUS_KEY: "{}"}}, True),
        ({"op": "add", "path": "/metadata", "value": {"annotations": {STATUS_KEY: "{}"}}}, True),
        ({"op": "add", "path": "/metadata/annotations", "value": {STATUS_KEY: "", "x": ""}}, False),
        ({"op": "add", "path": "/metadata", "value": {"annotations": {}, "labels": {}}}, False),
        ({"op": "replace", "path": "/spec/terminationGracePeriodSeconds", "value": 65}, False),
    ],
)
def test_only_a_status_rewrite_leaves_a_pod_protected(op, only_status):
    assert _only_status(op) is only_status


def test_an_unannotated_pod_with_nothing_to_add_is_protected():
    pod = make_pod(restartPolicy="Never")  # jobs=skip: nothing to add, no status either
    assert not judge(pod, Settings(namespace="shop")).unprotected


@pytest.mark.parametrize(
    ("pod", "settings"),
    [
        (make_pod(labels={P + "inject": "false"}), Settings(namespace="shop")),
        (make_pod(annotations={P + "inject": "false"}), Settings(namespace="shop")),
        (make_pod(annotations={"kubernetes.io/config.mirror": "x"}), Settings(namespace="shop")),
        (make_pod(), Settings(config=parse_config({"excludedNamespaces": ["shop"]}))),
        (make_pod(phase="Succeeded"), Settings(namespace="shop")),
        (make_pod(phase="Failed"), Settings(namespace="shop")),
    ],
    ids=["label-opt-out", "annotation-opt-out", "mirror", "excluded", "succeeded", "failed"],
)
def test_pods_out_of_scope_are_not_judged_unprotected(pod, settings):
    assert judge(pod, settings).reason is None


def test_a_terminating_pod_is_not_judged():
    pod = make_pod()
    pod["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert not judge(pod, Settings(namespace="shop")).unprotected


def test_a_pod_without_annotations_at_all_and_one_with_other_annotations_agree():
    settings = Settings(namespace="shop")
    assert judge(make_pod(annotations={"team": "a"}), settings).reason == NEVER_SEEN
    mutated = admitted(make_pod(annotations={"team": "a"}), settings)
    assert STATUS_KEY in mutated["metadata"]["annotations"]
    assert not judge(mutated, settings).unprotected


def test_strict_mode_refusal_counts_as_missed():
    settings = Settings(namespace="shop", config=parse_config({"strict": True}))
    pod = make_pod(annotations={P + "prestop-secnds": "3"})
    assert judge(pod, settings).reason == NEVER_SEEN


def test_judge_does_not_modify_the_pod():
    pod = make_pod()
    copy = repr(pod)
    judge(pod, Settings(namespace="shop"))
    assert repr(pod) == copy
