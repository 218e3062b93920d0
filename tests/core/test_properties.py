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

from webhook.core import Settings, mutate, parse_config
from webhook.core.model import STATUS_KEY

from .oracle import P, base_layers, intended_pod, scenarios, user_sleeps, worlds

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


# --- issue 9: profiles, exposure, ceilings, and a webhook that caps the grace period after us


def world_settings(world, version):
    return Settings(
        config=parse_config(world["config"]),
        services=world["services"],
        namespace_labels=world["namespace_labels"],
        owner_kind=world["owner_kind"],
        cluster_version=version,
    )


def labelled(pod, world):
    pod = copy.deepcopy(pod)
    pod["metadata"]["labels"] = dict(world["labels"])
    return pod


def without_status(pod, original):
    got = copy.deepcopy(pod)
    status = (got["metadata"].get("annotations") or {}).pop(STATUS_KEY, None)
    if (
        status is not None
        and not got["metadata"]["annotations"]
        and "annotations" not in original["metadata"]
    ):
        del got["metadata"]["annotations"]
    return got, status


def assert_valid(pod):
    """What the API server checks (E3): every `sleep` action at most the grace period."""
    grace = pod["spec"]["terminationGracePeriodSeconds"]
    for container in pod["spec"]["containers"] + pod["spec"].get("initContainers", []):
        for hook in (container.get("lifecycle") or {}).values():
            if isinstance(hook, dict) and "sleep" in hook:
                assert hook["sleep"]["seconds"] <= grace, (container["name"], hook, grace)


@given(scenarios(), worlds())
def test_profiles_and_ceilings_give_the_intended_pod(scenario, world):
    pod, intended, version = scenario
    pod = labelled(pod, world)
    settings = world_settings(world, version)
    mutation = mutate(pod, settings)
    assert_no_add_over_existing(pod, mutation.ops)
    result = jsonpatch.JsonPatch(mutation.ops).apply(pod)

    base, ceiling, profile = base_layers(world)
    assert mutation.profile == (profile["name"] if profile else None)
    got, status = without_status(result, pod)
    assert got == intended_pod(pod, intended, version, base, ceiling)
    if status is not None and profile is not None:
        assert json.loads(status)["profile"] == profile["name"]
    if max(user_sleeps(pod), default=0) <= pod["spec"]["terminationGracePeriodSeconds"]:
        assert_valid(result)  # a pod the API server accepts stays one it accepts
    assert mutate(result, settings).ops == []


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), worlds(), st.integers(0, 120))
def test_a_later_cap_leaves_a_valid_pod_and_a_fixed_point(scenario, world, cap):
    """Round 1, a Kyverno-style webhook lowers the grace period to `cap`, the reinvocation
    round: the pod validates, keeps the cap (but for a sleep the user wrote), the user's own
    hooks are untouched, and a further run changes nothing."""
    pod, _, version = scenario
    pod = labelled(pod, world)
    settings = world_settings(world, version)
    first = jsonpatch.JsonPatch(mutate(pod, settings).ops).apply(pod)
    lowered = copy.deepcopy(first)
    if lowered["spec"]["terminationGracePeriodSeconds"] > cap:
        lowered["spec"]["terminationGracePeriodSeconds"] = cap
    second = mutate(lowered, settings)
    assert_no_add_over_existing(lowered, second.ops)
    final = jsonpatch.JsonPatch(second.ops).apply(lowered)

    if max(user_sleeps(pod), default=0) <= min(cap, pod["spec"]["terminationGracePeriodSeconds"]):
        assert_valid(final)  # unless the user's pod, or the cap alone, breaks it
    if STATUS_KEY in (first["metadata"].get("annotations") or {}):
        user = user_sleeps(pod)
        assert final["spec"]["terminationGracePeriodSeconds"] <= max([cap, *user]) or (
            lowered["spec"]["terminationGracePeriodSeconds"]
            == first["spec"]["terminationGracePeriodSeconds"]
        ), "a grace period a later webhook lowered is not raised back"
    for before, after in zip(pod["spec"]["containers"], final["spec"]["containers"], strict=True):
        own = (before.get("lifecycle") or {}).get("preStop")
        if own is not None:
            assert after["lifecycle"]["preStop"] == own, "a user's own hook is never changed"
    assert mutate(final, settings).ops == []
