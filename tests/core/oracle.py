"""Generated pods with the values their annotations are meant to parse to, and SPEC §4 as an oracle.

`scenarios()` draws a pod, the annotations on it, and for each annotation the value it
*should* parse to (or INVALID); `intended_pod` is SPEC §4 written out once more, separately
from webhook.core, from those intended values. The core's property tests and the end-to-end
test against the real API server both use them.
"""

import copy
from typing import Any

from hypothesis import strategies as st

P = "lifecycle-webhook.io/"
INVALID = object()

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


def user_sleeps(pod):
    """Every `sleep` action the user wrote, in any preStop or postStart."""
    return [
        hook["sleep"]["seconds"]
        for c in pod["spec"]["containers"] + pod["spec"].get("initContainers", [])
        for hook in c.get("lifecycle", {}).values()
        if isinstance(hook, dict) and "sleep" in hook
    ]


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
            spec["terminationGracePeriodSeconds"] = max([explicit, *user_sleeps(pod)])
        for hook in injected.values():
            if "sleep" in hook:
                hook["sleep"]["seconds"] = min(
                    hook["sleep"]["seconds"], spec["terminationGracePeriodSeconds"]
                )
    elif in_scope and explicit == 0:
        spec["terminationGracePeriodSeconds"] = max([0, *user_sleeps(pod)])
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
