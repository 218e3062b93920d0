"""Properties of `mutate` over generated pods and annotation values (SPEC §4, issue 2).

The expected pod comes from `intended_pod`, an oracle written separately from the core,
straight from SPEC §4 and from the values the generator *meant* (each generated annotation
carries the value it should parse to, or INVALID). The patch must apply strictly to the exact
input, give that pod, add nothing over an existing key, and give no patch on a second run.
"""

import copy
import json
import os
from typing import Any

import jsonpatch
import kubernetes_validate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from webhook.core import Settings, mutate
from webhook.core.model import STATUS_KEY

P = "lifecycle-webhook.io/"
INVALID = object()
settings.register_profile(
    "ci",
    max_examples=300,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

NAMES = ["app", "proxy", "worker", "log", "db"]
INIT_NAMES = ["setup", "migrate", "mesh", "certs"]


def seconds_values():
    valid = st.integers(0, 120).map(lambda n: (str(n), n))
    invalid = st.sampled_from([" 5", "+5", "5s", "1e3", "\u0665", "-1", "9999", ""]).map(
        lambda v: (v, INVALID)
    )
    return st.one_of(valid, invalid)


def maybe(strategy):
    return st.one_of(st.none(), strategy)


@st.composite
def lifecycles(draw):
    hooks = {}
    pre = draw(st.sampled_from([None, "sleep", "exec-sleep", "sh-sleep", "http", "exec-other"]))
    seconds = draw(st.integers(0, 90))
    if pre == "sleep":
        hooks["preStop"] = {"sleep": {"seconds": seconds}}
    elif pre == "exec-sleep":
        hooks["preStop"] = {"exec": {"command": ["sleep", str(seconds)]}}
    elif pre == "sh-sleep":
        hooks["preStop"] = {"exec": {"command": ["/bin/sh", "-c", f"sleep {seconds}"]}}
    elif pre == "http":
        hooks["preStop"] = {"httpGet": {"path": "/q", "port": 8080, "scheme": "HTTP"}}
    elif pre == "exec-other":
        hooks["preStop"] = {"exec": {"command": ["/drain"]}}
    if draw(st.booleans()):
        hooks["postStart"] = draw(
            st.sampled_from([{"exec": {"command": ["/warm"]}}, {"sleep": {"seconds": seconds}}])
        )
    return hooks


@st.composite
def containers(draw, names, native=False):
    out = []
    for name in names:
        c = {"name": name, "image": f"registry.example/{name}:1"}
        if draw(st.booleans()):
            c["ports"] = [{"containerPort": draw(st.integers(1, 65535)), "name": "http"}]
        if draw(st.booleans()):
            c["env"] = [{"name": "A~/B", "value": "x"}]
        shape = draw(st.sampled_from(["absent", "empty", "hooks"]))
        if shape == "empty":
            c["lifecycle"] = {}
        elif shape == "hooks":
            c["lifecycle"] = draw(lifecycles())
        if native and draw(st.booleans()):
            c["restartPolicy"] = "Always"
        elif native:
            c.pop("lifecycle", None)
        out.append(c)
    return out


@st.composite
def scenarios(draw):
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=4, unique=True))
    init_names = draw(st.lists(st.sampled_from(INIT_NAMES), max_size=4, unique=True))
    intended = {}
    annotations = {}

    def put(key, pair):
        if pair is not None:
            annotations[P + key] = pair[0]
            intended[key] = pair[1]

    for key in ("prestop-seconds", "shutdown-seconds", "sidecar-shutdown-seconds"):
        put(key, draw(maybe(seconds_values())))
    put(
        "prestop",
        draw(
            maybe(
                st.sampled_from(["auto", "sleep", "exec", "http", "none", "Sleep"]).map(
                    lambda v: (v, v if v != "Sleep" else INVALID)
                )
            )
        ),
    )
    put(
        "prestop-exec",
        draw(
            maybe(
                st.sampled_from(
                    [
                        ("drain --now", ["/bin/sh", "-c", "drain --now"]),
                        ('["/bin/drain"]', ["/bin/drain"]),
                        ("[oops", INVALID),
                    ]
                )
            )
        ),
    )
    put(
        "sidecars",
        draw(
            maybe(
                st.lists(st.sampled_from(NAMES), min_size=1, unique=True).map(
                    lambda v: (",".join(v), tuple(v))
                )
            )
        ),
    )
    put(
        "containers",
        draw(
            maybe(
                st.lists(st.sampled_from(NAMES), min_size=1, unique=True).map(
                    lambda v: (" , ".join(v), tuple(v))
                )
            )
        ),
    )
    put(
        "init-order",
        draw(
            maybe(
                st.lists(st.sampled_from([*INIT_NAMES, "*", "ghost"]), min_size=1, unique=True).map(
                    lambda v: (",".join(v), tuple(v) if any(n != "*" for n in v) else INVALID)
                )
            )
        ),
    )
    put("termination-grace-period-seconds", draw(maybe(seconds_values())))
    put(
        "jobs",
        draw(maybe(st.sampled_from([("inject", "inject"), ("skip", "skip"), ("yes", INVALID)]))),
    )
    put("poststart-exec", draw(maybe(st.just(("warm", ["/bin/sh", "-c", "warm"])))))
    if draw(st.booleans()):
        annotations["example.com/a~b/c"] = "kept"
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "web-", "namespace": "shop"},
        "spec": {
            "containers": draw(containers(names)),
            "restartPolicy": draw(st.sampled_from(["Always", "Always", "OnFailure", "Never"])),
            "terminationGracePeriodSeconds": draw(st.sampled_from([0, 1, 5, 30, 30, 45, 200])),
        },
    }
    if init_names:
        pod["spec"]["initContainers"] = draw(containers(init_names, native=True))
    if annotations or draw(st.booleans()):
        pod["metadata"]["annotations"] = annotations
    version = (1, draw(st.integers(28, 37)))
    return pod, intended, version


def value(intended, key, default):
    got = intended.get(key, INVALID)
    return default if got is INVALID else got


def sleep_of(hook):
    """How long a preStop holds SIGTERM, per SPEC 4.2 (None when it is not a known sleep)."""
    if "sleep" in hook:
        return hook["sleep"]["seconds"]
    cmd = hook.get("exec", {}).get("command", [])
    if len(cmd) == 2 and cmd[0].endswith("sleep"):
        return int(cmd[1])
    if len(cmd) == 3 and cmd[1] == "-c" and cmd[2].startswith("sleep "):
        return int(cmd[2].split()[1])
    return None


def intended_pod(pod, intended, version):
    """SPEC §4 written out once more, independently of webhook.core."""
    out = copy.deepcopy(pod)
    spec = out["spec"]
    p = value(intended, "prestop-seconds", 5)
    s = value(intended, "shutdown-seconds", 25)
    q = value(intended, "sidecar-shutdown-seconds", 5)
    sidecars = value(intended, "sidecars", ())
    selected = value(intended, "containers", tuple(c["name"] for c in spec["containers"]))
    explicit = value(intended, "termination-grace-period-seconds", None)
    mode = value(intended, "prestop", "auto")
    command = value(intended, "prestop-exec", None)
    if mode == "auto" or (mode == "sleep" and version < (1, 30)):
        mode = "sleep" if version >= (1, 30) and mode == "auto" else "exec"
    in_scope = spec["restartPolicy"] == "Always" or value(intended, "jobs", "skip") == "inject"
    zero = explicit == 0 if explicit is not None else spec["terminationGracePeriodSeconds"] == 0
    injected = {}
    if in_scope and not zero:
        for c in spec["containers"]:
            if c["name"] not in selected or c.get("lifecycle", {}).get("preStop"):
                continue
            d = p + s if c["name"] in sidecars else p
            hook = None
            if mode == "sleep" and (d > 0 or version >= (1, 33)):
                hook = {"sleep": {"seconds": d}}
            elif mode == "exec" and command is not None:
                hook = {"exec": {"command": command}}
            elif mode == "exec" and (d > 0 or version >= (1, 33)):
                hook = {"exec": {"command": ["sleep", str(d)]}}
            elif mode == "http" and c.get("ports"):
                hook = {"httpGet": {"path": "/shutdown", "port": c["ports"][0]["containerPort"]}}
            if hook:
                c.setdefault("lifecycle", {})["preStop"] = hook
                injected[c["name"]] = hook
        required = 0
        for c in spec["containers"]:
            hook = c.get("lifecycle", {}).get("preStop")
            listed = c["name"] in sidecars
            if hook is None:
                delay = 0
            elif sleep_of(hook) is not None:
                delay = sleep_of(hook)
            else:
                delay = p + s if (listed and c["name"] in injected) else p
            required = max(required, delay + (q if listed else s))
        required += q * sum(
            1 for c in spec.get("initContainers", []) if c.get("restartPolicy") == "Always"
        )
        if explicit is None:
            spec["terminationGracePeriodSeconds"] = max(
                spec["terminationGracePeriodSeconds"], required
            )
        else:
            user_sleeps = [
                h["sleep"]["seconds"]
                for c in pod["spec"]["containers"] + pod["spec"].get("initContainers", [])
                for h in c.get("lifecycle", {}).values()
                if isinstance(h, dict) and "sleep" in h
            ]
            spec["terminationGracePeriodSeconds"] = max([explicit, *user_sleeps])
        for hook in injected.values():
            if "sleep" in hook:
                hook["sleep"]["seconds"] = min(
                    hook["sleep"]["seconds"], spec["terminationGracePeriodSeconds"]
                )
    elif in_scope and explicit == 0:
        user_sleeps = [
            h["sleep"]["seconds"]
            for c in pod["spec"]["containers"] + pod["spec"].get("initContainers", [])
            for h in c.get("lifecycle", {}).values()
            if isinstance(h, dict) and "sleep" in h
        ]
        spec["terminationGracePeriodSeconds"] = max([0, *user_sleeps])
    post = value(intended, "poststart-exec", None)
    if post:
        for c in spec["containers"]:
            if c["name"] in selected and not c.get("lifecycle", {}).get("postStart"):
                c.setdefault("lifecycle", {})["postStart"] = {"exec": {"command": post}}
    order = value(intended, "init-order", None)
    if order and spec.get("initContainers"):
        order = [*order, "*"] if "*" not in order else list(order)
        star = order.index("*")
        have = {c["name"]: c for c in spec["initContainers"]}
        head = [have[n] for n in order[:star] if n in have]
        tail = [have[n] for n in order[star + 1 :] if n in have]
        moved = {c["name"] for c in head + tail}
        spec["initContainers"] = (
            head + [c for c in spec["initContainers"] if c["name"] not in moved] + tail
        )
    return out


def strip_status(pod):
    pod = copy.deepcopy(pod)
    annotations = pod["metadata"].get("annotations")
    if annotations is not None:
        annotations.pop(STATUS_KEY, None)
        if not annotations and "annotations" not in pod["metadata"].get("_", {}):
            pass
    return pod


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


@given(
    st.dictionaries(st.text(max_size=40), st.text(max_size=40), max_size=6),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=5),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
        ),
        max_leaves=10,
    ),
)
def test_arbitrary_annotations_and_shapes_never_crash(annotations, junk):
    pod = {
        "metadata": {"annotations": {P + k: v for k, v in annotations.items()}},
        "spec": {
            "containers": [{"name": "a", "lifecycle": junk}],
            "initContainers": junk,
            "terminationGracePeriodSeconds": 30,
        },
    }
    mutation = mutate(pod, Settings())
    jsonpatch.JsonPatch(mutation.ops).apply(pod)
    for item in mutation.warnings:
        assert len(item.text) <= 120 and item.text.isascii() and item.text.isprintable()
