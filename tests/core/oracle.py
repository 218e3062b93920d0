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


def intended_pod(pod, intended, version, base=None, ceiling=None):
    """SPEC §4 written out once more, independently of webhook.core.

    `base` holds the values of the config file and profile layers (prestop-seconds already
    resolved to a number); `ceiling` is maxGracePeriodSeconds (issue 9).
    """
    base = base or {}
    out = copy.deepcopy(pod)
    spec = out["spec"]
    p = value(intended, "prestop-seconds", base.get("prestop-seconds", 5))
    s = value(intended, "shutdown-seconds", base.get("shutdown-seconds", 25))
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
        natives = sum(
            1 for c in spec.get("initContainers", []) if c.get("restartPolicy") == "Always"
        )

        def required_now():
            longest = 0
            for c in spec["containers"]:
                hook = c.get("lifecycle", {}).get("preStop")
                listed = c["name"] in sidecars
                if hook is None:
                    delay = 0
                elif sleep_of(hook) is not None:
                    delay = sleep_of(hook)
                else:
                    delay = p + s if (listed and c["name"] in injected) else p
                longest = max(longest, delay + (q if listed else s))
            return longest + q * natives

        required = required_now()
        if ceiling is not None and required > ceiling and (explicit is None or explicit > ceiling):
            for c in spec["containers"]:
                hook = injected.get(c["name"])
                if hook is None or sleep_of(hook) is None:
                    continue
                room = max(ceiling - (q if c["name"] in sidecars else s) - q * natives, 0)
                if sleep_of(hook) <= room:
                    continue
                if room == 0 and version < (1, 33):
                    del c["lifecycle"]["preStop"]
                    if not c["lifecycle"] and "lifecycle" not in next(
                        o for o in pod["spec"]["containers"] if o["name"] == c["name"]
                    ):
                        del c["lifecycle"]
                    del injected[c["name"]]
                elif "sleep" in hook:
                    hook["sleep"]["seconds"] = room
                elif len(hook["exec"]["command"]) == 2:
                    hook["exec"]["command"][1] = str(room)
                else:
                    hook["exec"]["command"][2] = f"sleep {room}"
            required = required_now()
        if explicit is None:
            target = max(spec["terminationGracePeriodSeconds"], required)
        else:
            target = explicit
        if ceiling is not None:
            target = min(target, ceiling)
        # Never below a sleep the user wrote: the API server rejects such a pod.
        spec["terminationGracePeriodSeconds"] = max([target, *user_sleeps(pod)])
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


# --- issue 9: profiles, exposure, ceilings ----------------------------------------------------

APPS = ["web", "api"]
LB_ATTRIBUTES = "service.beta.kubernetes.io/aws-load-balancer-target-group-attributes"


@st.composite
def services_of_namespace(draw):
    """None (unknown) or the Services of the pod's namespace, as the core reads them."""
    if draw(st.booleans()) and draw(st.booleans()):
        return None
    out = []
    for index in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"]))
        selector = draw(st.sampled_from([{}, {"app": "web"}, {"app": "api"}, {"tier": "front"}]))
        annotations = {}
        if draw(st.booleans()):
            annotations[LB_ATTRIBUTES] = draw(
                st.sampled_from(
                    [
                        "deregistration_delay.timeout_seconds=45",
                        "stickiness.enabled=true,deregistration_delay.timeout_seconds=120",
                        "deregistration_delay.timeout_seconds=7200",
                        "deregistration_delay.timeout_seconds=soon",
                    ]
                )
            )
        out.append(
            {"name": f"s{index}", "type": kind, "selector": selector, "annotations": annotations}
        )
    return out


@st.composite
def profile_configs(draw):
    """A config file (as YAML would give it) with profiles and maybe a ceiling."""
    config: dict[str, Any] = {
        "maxSeconds": 3600
    }  # the annotations of `scenarios` are valid up to 120
    if draw(st.booleans()):
        config["maxGracePeriodSeconds"] = draw(st.integers(1, 90))
    if draw(st.booleans()):
        config["prestopSeconds"] = draw(st.integers(0, 30))
    profiles = []
    for index in range(draw(st.integers(0, 3))):
        match = {}
        if draw(st.booleans()):
            match["exposure"] = draw(
                st.sampled_from(["none", "cluster", "loadBalancer", ["none", "cluster"]])
            )
        if draw(st.booleans()):
            match["ownerKind"] = draw(st.sampled_from(["Deployment", "none", ["Job", "CronJob"]]))
        if draw(st.booleans()):
            match["podSelector"] = {"matchLabels": {"app": draw(st.sampled_from(APPS))}}
        if draw(st.booleans()):
            match["namespaceSelector"] = {"matchLabels": {"team": draw(st.sampled_from("ab"))}}
        settings = {}
        if draw(st.booleans()):
            settings["prestopSeconds"] = draw(
                st.one_of(
                    st.integers(0, 60), st.integers(0, 40).map(lambda n: f"fromLoadBalancer or {n}")
                )
            )
        if draw(st.booleans()):
            settings["shutdownSeconds"] = draw(st.integers(0, 60))
        if draw(st.booleans()):
            settings["maxGracePeriodSeconds"] = draw(st.integers(1, 90))
        profiles.append({"name": f"p{index}", "match": match, "settings": settings})
    config["profiles"] = profiles
    return config


@st.composite
def worlds(draw):
    """Everything outside the pod a profile may test: config, Services, namespace labels,
    owner kind, the pod's labels."""
    return {
        "config": draw(profile_configs()),
        "services": draw(services_of_namespace()),
        "namespace_labels": draw(st.sampled_from([None, {}, {"team": "a"}, {"team": "b"}])),
        "owner_kind": draw(st.sampled_from(["Deployment", "Job", "CronJob", "none"])),
        "labels": draw(st.sampled_from([{}, {"app": "web"}, {"app": "api", "tier": "front"}])),
    }


def as_list(value):
    return value if isinstance(value, list) else [value]


def selecting(world):
    services = world["services"] or []
    return [
        s
        for s in services
        if s["selector"]
        and s["type"] != "ExternalName"
        and all(world["labels"].get(k) == v for k, v in s["selector"].items())
    ]


def exposure_of(world):
    if world["services"] is None:
        return "unknown"
    chosen = selecting(world)
    if not chosen:
        return "none"
    return (
        "loadBalancer"
        if any(s["type"] in ("NodePort", "LoadBalancer") for s in chosen)
        else "cluster"
    )


def chosen_profile(world):
    for profile in world["config"]["profiles"]:
        match = profile["match"]
        if "ownerKind" in match and world["owner_kind"] not in as_list(match["ownerKind"]):
            continue
        pod_labels = match.get("podSelector", {}).get("matchLabels", {})
        if any(world["labels"].get(k) != v for k, v in pod_labels.items()):
            continue
        if "namespaceSelector" in match:
            wanted = match["namespaceSelector"]["matchLabels"]
            have = world["namespace_labels"]
            if have is None or any(have.get(k) != v for k, v in wanted.items()):
                continue
        if "exposure" in match and exposure_of(world) not in as_list(match["exposure"]):
            continue  # "unknown" is in no list
        return profile
    return None


def base_layers(world):
    """The config-file and profile layers by annotation key, P resolved to a number, and
    the ceiling."""
    config = world["config"]
    profile = chosen_profile(world)
    merged = {k: v for k, v in config.items() if k not in ("profiles", "maxSeconds")}
    merged.update(profile["settings"] if profile else {})
    base = {}
    prestop = merged.get("prestopSeconds")
    if isinstance(prestop, str):
        fallback = int(prestop.rsplit(" ", 1)[1])
        delays = [
            int(item.split("=")[1])
            for s in selecting(world)
            if s["type"] in ("NodePort", "LoadBalancer")
            for item in s["annotations"].get(LB_ATTRIBUTES, "").split(",")
            if item.startswith("deregistration_delay.") and item.split("=")[1].isdigit()
        ]
        prestop = (
            min(max(delays), config["maxSeconds"])
            if delays and world["services"] is not None
            else fallback
        )
    if prestop is not None:
        base["prestop-seconds"] = prestop
    if "shutdownSeconds" in merged:
        base["shutdown-seconds"] = merged["shutdownSeconds"]
    return base, merged.get("maxGracePeriodSeconds"), profile
