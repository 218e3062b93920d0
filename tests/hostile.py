"""Hostile AdmissionReview bodies (Hypothesis strategies) and the checks every answer must pass.

Used by tests/test_hostile_input.py in-process (the ASGI app, the bulk) and over a real TLS
server (a share). A body the server can classify — anything but its own bug — must get 200,
400, 413 or 415; a 200 must be a well-formed review for the request's uid whose patch applies
strictly (RFC 6902, two independent appliers), whose every added value passes strict schema
validation, whose injected sleeps fit the final grace period, and that gives no patch a second
time.
"""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import jsonpatch
import kubernetes_validate
import orjson
from hypothesis import strategies as st

from webhook.core import apply_patch
from webhook.core.model import PREFIX, STATUS_KEY
from webhook.core.settings import ANNOTATION_KEYS

CLASSIFIED = frozenset({200, 400, 413, 415})
KUBERNETES = "1.34.0"
INT64 = 2**63 - 1

# --- building blocks -----------------------------------------------------------------------

NASTY_TEXT = st.one_of(
    st.text(max_size=30),  # any unicode, control characters included
    st.text(st.characters(codec="utf-8", categories=["Cc", "Cf", "Zs", "Zl", "Mn"]), max_size=8),
    st.sampled_from(["", " ", "~", "/", "~1", "a/b~c", "\u0000", "\ud7ff", "٣٠", "１２", "𝟘"]),
)
NUMBERS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, -1, 30, 3600, 3601, 2**31, 2**63 - 1, 2**63, -(2**63), 10**30]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
)
SCALAR = st.one_of(st.none(), st.booleans(), NUMBERS, NASTY_TEXT)
JUNK = st.recursive(
    SCALAR,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(NASTY_TEXT, inner, max_size=4),
    max_leaves=12,
)
ANY_VALUE = st.one_of(JUNK, SCALAR)
"""Wrong types anywhere: strings where objects go, lists where strings go, nothing at all."""

OWN_VALUES = st.one_of(
    NASTY_TEXT,
    st.integers(-(10**6), 10**6).map(str),
    st.sampled_from(["true", "false", "sleep", "exec", "http", "none", "auto", "inject", "*"]),
    st.sampled_from(["5", "0", "3600", "3601", "99999999999999999999", " 30", "+30", "3_0"]),
    st.sampled_from(['["sleep","1"]', "[]", '["a",1]', "{}", "app,app,*", "*,*", "a,,b"]),
    st.text(max_size=2000),
)
CONTAINER_NAMES = st.one_of(
    st.sampled_from(["app", "app", "envoy", "istio-proxy", "init", "", "a" * 300]), NASTY_TEXT
)


@st.composite
def annotation_maps(draw: st.DrawFn) -> Any:
    """Our own keys with hostile values, unknown ones of ours, foreign and malformed keys."""
    pairs = draw(
        st.lists(
            st.tuples(
                st.one_of(
                    st.sampled_from(ANNOTATION_KEYS),
                    st.just(STATUS_KEY),
                    NASTY_TEXT.map(lambda key: PREFIX + key),
                    NASTY_TEXT,
                ),
                st.one_of(OWN_VALUES, ANY_VALUE) if draw(st.booleans()) else OWN_VALUES,
            ),
            max_size=8,
        )
    )
    return dict(pairs)


@st.composite
def hooks(draw: st.DrawFn) -> Any:
    return draw(
        st.one_of(
            st.fixed_dictionaries({"sleep": st.fixed_dictionaries({"seconds": NUMBERS})}),
            st.fixed_dictionaries(
                {"exec": st.fixed_dictionaries({"command": st.lists(NASTY_TEXT, max_size=3)})}
            ),
            st.fixed_dictionaries({"httpGet": st.fixed_dictionaries({"port": ANY_VALUE})}),
            ANY_VALUE,
        )
    )


@st.composite
def containers(draw: st.DrawFn) -> Any:
    container: dict[str, Any] = {"name": draw(CONTAINER_NAMES), "image": "img"}
    if draw(st.booleans()):
        lifecycle = draw(
            st.one_of(
                st.fixed_dictionaries({}, optional={"preStop": hooks(), "postStart": hooks()}),
                ANY_VALUE,
            )
        )
        container["lifecycle"] = lifecycle
    if draw(st.booleans()):
        container["ports"] = draw(
            st.one_of(
                st.lists(
                    st.fixed_dictionaries(
                        {"containerPort": NUMBERS}, optional={"name": NASTY_TEXT}
                    ),
                    max_size=3,
                ),
                ANY_VALUE,
            )
        )
    if draw(st.integers(0, 9)) == 0:
        container["restartPolicy"] = draw(st.one_of(st.just("Always"), ANY_VALUE))
    if draw(st.integers(0, 9)) == 0:
        container[draw(NASTY_TEXT)] = draw(ANY_VALUE)
    return container


@st.composite
def pods(draw: st.DrawFn) -> Any:
    """A Pod whose every part may be hostile: names, numbers, shapes, keys, nesting."""
    metadata: dict[str, Any] = {"name": draw(NASTY_TEXT), "namespace": "shop"}
    choice = draw(st.integers(0, 9))
    metadata["annotations"] = draw(ANY_VALUE) if choice == 0 else draw(annotation_maps())
    if draw(st.booleans()):
        metadata["labels"] = draw(st.one_of(annotation_maps(), ANY_VALUE))
    spec: dict[str, Any] = {
        "containers": draw(
            st.one_of(st.lists(containers(), min_size=1, max_size=5), ANY_VALUE)
            if draw(st.integers(0, 4)) == 0
            else st.lists(containers(), min_size=1, max_size=5)
        )
    }
    if draw(st.booleans()):
        spec["initContainers"] = draw(st.one_of(st.lists(containers(), max_size=4), ANY_VALUE))
    if draw(st.booleans()):
        spec["terminationGracePeriodSeconds"] = draw(st.one_of(NUMBERS, ANY_VALUE))
    if draw(st.booleans()):
        spec["restartPolicy"] = draw(st.one_of(st.sampled_from(["Always", "Never"]), ANY_VALUE))
    if draw(st.integers(0, 4)) == 0:
        spec[draw(NASTY_TEXT)] = draw(JUNK)
    pod: dict[str, Any] = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}
    if draw(st.integers(0, 9)) == 0:
        pod[draw(st.sampled_from(["metadata", "spec"]))] = draw(ANY_VALUE)
    return pod


def envelope(obj: Any, uid: str = "uid", **request: Any) -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "operation": "CREATE",
            "namespace": "shop",
            "object": obj,
            **request,
        },
    }


@st.composite
def broken_envelopes(draw: st.DrawFn) -> Any:
    """A review with one envelope field replaced or removed: types, versions, kinds, uids."""
    document = envelope(draw(pods()), uid=draw(NASTY_TEXT) or "u")
    request = document["request"]
    target = draw(
        st.sampled_from(
            ["apiVersion", "kind", "request", "uid", "kind.", "resource", "operation",
             "namespace", "object", "dryRun", "subResource", "name", "oldObject"]
        )
    )  # fmt: skip
    value = draw(st.one_of(ANY_VALUE, st.just(_MISSING)))
    if target in ("apiVersion", "kind", "request"):
        place, key = document, target
    else:
        place, key = request, target.rstrip(".")
    if value is _MISSING:
        place.pop(key, None)
    else:
        place[key] = value
    return document


_MISSING = object()


def dumps(document: Any) -> bytes:
    """JSON as a client might send it: integers past 64 bits and lone surrogates included
    (escaped), which orjson would refuse to write."""
    return json.dumps(document).encode()


# --- the checks ----------------------------------------------------------------------------


class Stats:
    """Counts across one test: inputs tried and answers by status."""

    def __init__(self) -> None:
        self.tried = 0
        self.statuses: dict[int, int] = {}
        self.patches = 0

    def add(self, status: int) -> None:
        self.tried += 1
        self.statuses[status] = self.statuses.get(status, 0) + 1


def check_answer(body: bytes, status: int, answer: bytes, stats: Stats | None = None) -> None:
    """Raise AssertionError when the answer breaks a promise (see the module docstring)."""
    if stats is not None:
        stats.add(status)
    assert status in CLASSIFIED, (status, answer[:300], body[:300])
    decoded = orjson.loads(answer)
    if status != 200:
        assert isinstance(decoded.get("error"), str) and decoded["error"], decoded
        return
    sent = orjson.loads(body)
    request = sent["request"]
    assert decoded["apiVersion"] == sent["apiVersion"] and decoded["kind"] == "AdmissionReview"
    response = decoded["response"]
    assert response["uid"] == request["uid"]
    assert isinstance(response["allowed"], bool)
    assert ("patch" in response) == ("patchType" in response)
    for warning in response.get("warnings", []):
        assert isinstance(warning, str) and len(warning) <= 120 and warning.isprintable()
    if "patch" not in response:
        return
    if stats is not None:
        stats.patches += 1
    assert response["patchType"] == "JSONPatch" and response["allowed"] is True
    ops = orjson.loads(base64.b64decode(response["patch"], validate=True))
    pod = request["object"]
    result = apply_patch(pod, ops)  # raises PatchError on any op that does not apply
    assert jsonpatch.JsonPatch(ops).apply(copy.deepcopy(pod)) == result
    for op in ops:
        check_added_value(pod, op)
    check_grace(pod, result)


def check_grace(before: dict[str, Any], after: dict[str, Any]) -> None:
    grace = after["spec"].get("terminationGracePeriodSeconds", 30)
    if grace != before["spec"].get("terminationGracePeriodSeconds", 30):  # ours, not the user's
        assert type(grace) is int and 0 <= grace <= INT64, grace
    containers_before = before["spec"].get("containers")
    containers_after = after["spec"].get("containers")
    if not isinstance(containers_before, list) or not isinstance(containers_after, list):
        return
    for old_container, container in zip(containers_before, containers_after, strict=True):
        if not isinstance(container, dict) or not isinstance(old_container, dict):
            continue
        lifecycle = container.get("lifecycle")
        hook = lifecycle.get("preStop") if isinstance(lifecycle, dict) else None
        old = old_container.get("lifecycle")
        old_hook = old.get("preStop") if isinstance(old, dict) else None
        if hook != old_hook and isinstance(hook, dict) and "sleep" in hook:
            final = 30 if grace is None else grace  # null is absent: the API default
            if type(final) is int:  # any other type: the API server rejects the pod anyway
                assert hook["sleep"]["seconds"] <= final, (hook, grace)


_VALID_SHAPES: set[bytes] = set()


def check_added_value(pod: dict[str, Any], op: dict[str, Any]) -> None:
    """Every value the webhook writes passes strict schema validation where it lands."""
    path: str = op["path"]
    value: Any = op.get("value")
    parts = path.split("/")[1:]
    if path == "/spec/initContainers":
        assert op["op"] == "replace"
        before = [orjson.dumps(c, option=orjson.OPT_SORT_KEYS) for c in pod["spec"][parts[1]]]
        after = [orjson.dumps(c, option=orjson.OPT_SORT_KEYS) for c in value]
        assert sorted(before) == sorted(after), "init-order may only reorder"
        return
    if path == "/spec/terminationGracePeriodSeconds":
        assert type(value) is int and 0 <= value <= INT64
        return
    if path == "/metadata":
        assert set(value) == {"annotations"}
        value, parts = value["annotations"], ["metadata", "annotations"]
    if parts[:2] == ["metadata", "annotations"]:
        if len(parts) == 2:
            assert isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
        else:
            assert parts[2] == STATUS_KEY.replace("/", "~1") and isinstance(value, str)
        return
    assert parts[0] == "spec" and parts[1] in ("containers", "initContainers"), path
    assert parts[3] == "lifecycle" and len(parts) in (4, 5), path
    lifecycle = value if len(parts) == 4 else {parts[4]: value}
    shape = orjson.dumps(_shape(lifecycle), option=orjson.OPT_SORT_KEYS)
    if shape in _VALID_SHAPES:
        return
    probe = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "probe"},
        "spec": {"containers": [{"name": "c", "image": "i", "lifecycle": lifecycle}]},
    }
    kubernetes_validate.validate(probe, KUBERNETES, strict=True)
    _VALID_SHAPES.add(shape)


def _shape(value: Any) -> Any:
    """What strict schema validation depends on: fields and types, not string contents or
    small numbers (it checks no ranges), so one validation covers every value of a shape."""
    if isinstance(value, dict):
        return {key: _shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_shape(item) for item in value]
    if isinstance(value, str):
        return ""
    if type(value) is int and 0 <= value < 2**31:
        return 0
    return value


@st.composite
def plausible_pods(draw: st.DrawFn) -> Any:
    """Pods the API server may well accept on their own, with hostile tuning: every own
    annotation with any value (unicode, control characters, huge numbers as text), hooks and
    grace periods at the edges, up to 40 containers. For tests/e2e/test_generated_pods.py."""
    count = draw(st.sampled_from([1, 1, 2, 3, 40]))
    containers = []
    for index in range(count):
        container: dict[str, Any] = {"name": f"c{index}", "image": "registry.example/app:1"}
        if draw(st.integers(0, 3)) == 0:
            hook = draw(
                st.one_of(
                    st.fixed_dictionaries(
                        {"sleep": st.fixed_dictionaries({"seconds": st.integers(1, 120)})}
                    ),
                    st.fixed_dictionaries(
                        {
                            "exec": st.fixed_dictionaries(
                                {"command": st.lists(NASTY_TEXT, min_size=1, max_size=3)}
                            )
                        }
                    ),
                )
            )
            container["lifecycle"] = {draw(st.sampled_from(["preStop", "postStart"])): hook}
        if draw(st.booleans()):
            container["ports"] = [{"containerPort": draw(st.integers(1, 65535)), "name": "http"}]
        containers.append(container)
    keys = st.sampled_from([*ANNOTATION_KEYS, STATUS_KEY])
    annotations = draw(st.dictionaries(keys, OWN_VALUES, max_size=6))
    spec: dict[str, Any] = {"containers": containers}
    if draw(st.booleans()):
        spec["terminationGracePeriodSeconds"] = draw(
            st.sampled_from([0, 1, 5, 30, 3600, 2**31, 2**62])
        )
    if draw(st.integers(0, 4)) == 0:
        spec["restartPolicy"] = draw(st.sampled_from(["Never", "OnFailure"]))
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "placeholder", "annotations": annotations},
        "spec": spec,
    }
