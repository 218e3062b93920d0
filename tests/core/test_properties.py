"""Properties of `mutate` over generated pods and annotation values (SPEC §4, issue 2).

The expected pod comes from `intended_pod`, an oracle written separately from the core,
straight from SPEC §4 and from the values the generator *meant* (each generated annotation
carries the value it should parse to, or INVALID). The patch must apply strictly to the exact
input, give that pod, add nothing over an existing key, and give no patch on a second run.
"""

import copy
import json
import os

import jsonpatch
import kubernetes_validate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from webhook.core import Settings, mutate
from webhook.core.model import STATUS_KEY

from .oracle import P, intended_pod, scenarios

settings.register_profile(
    "ci",
    max_examples=300,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


def assert_no_add_over_existing(doc, ops):
    for op in ops:
        if op["op"] != "add":
            continue
        *parents, last = [
            seg.replace("~1", "/").replace("~0", "~") for seg in op["path"][1:].split("/")
        ]
        target = doc
        for seg in parents:
            target = target[int(seg)] if isinstance(target, list) else target[seg]
        if isinstance(target, dict):
            assert last not in target, f"add over existing key: {op['path']}"


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_patch_applies_strictly_and_gives_the_intended_pod(scenario):
    pod, intended, version = scenario
    original = copy.deepcopy(pod)
    mutation = mutate(pod, Settings(cluster_version=version))
    assert pod == original, "the core must not modify its input"
    assert_no_add_over_existing(pod, mutation.ops)
    result = jsonpatch.JsonPatch(mutation.ops).apply(pod)  # raises on any op that does not apply

    expected = intended_pod(pod, intended, version)
    got = copy.deepcopy(result)
    status = (got["metadata"].get("annotations") or {}).pop(STATUS_KEY, None)
    if (
        status is not None
        and not got["metadata"]["annotations"]
        and "annotations" not in pod["metadata"]
    ):
        del got["metadata"]["annotations"]
    assert got == expected
    assert (status is not None) == bool(mutation.features)
    if status is not None:
        assert json.loads(status)  # compact JSON object

    assert mutate(result, Settings(cluster_version=version)).ops == []

    final = result["spec"]["terminationGracePeriodSeconds"]
    for before, after in zip(pod["spec"]["containers"], result["spec"]["containers"], strict=True):
        hook = after.get("lifecycle", {}).get("preStop")
        if hook != before.get("lifecycle", {}).get("preStop") and "sleep" in hook:
            assert hook["sleep"]["seconds"] <= final
    for before in pod["spec"].get("initContainers", []):
        after = next(c for c in result["spec"]["initContainers"] if c["name"] == before["name"])
        assert after == before, "init containers are moved, never changed"
    for item in mutation.warnings:
        assert len(item.text) <= 120 and item.text.isascii() and item.text.isprintable()


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_every_output_validates_strictly(scenario):
    pod, _, version = scenario
    pod["metadata"]["name"] = "web-1"
    result = jsonpatch.JsonPatch(mutate(pod, Settings(cluster_version=version)).ops).apply(pod)
    kubernetes_validate.validate(result, "1.34.0", strict=True)


JUNK = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)


@given(
    st.dictionaries(st.text(max_size=40), st.text(max_size=40), max_size=6),
    JUNK,
    st.one_of(st.just("a"), JUNK),
    st.one_of(st.just(30), JUNK),
)
def test_arbitrary_annotations_and_shapes_never_crash(annotations, junk, name, grace):
    pod = {
        "metadata": {"annotations": {P + k: v for k, v in annotations.items()}},
        "spec": {
            "containers": [{"name": name, "lifecycle": junk}, {"name": "b"}],
            "initContainers": junk,
            "terminationGracePeriodSeconds": grace,
        },
    }
    mutation = mutate(pod, Settings(), explain=True)
    assert all(line.isascii() and line.isprintable() for line in mutation.explanation)
    jsonpatch.JsonPatch(mutation.ops).apply(pod)
    for item in mutation.warnings:
        assert len(item.text) <= 120 and item.text.isascii() and item.text.isprintable()
