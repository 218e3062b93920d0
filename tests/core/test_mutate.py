"""The rules of SPEC §2–4, one example each, run through the pure core and applied strictly."""

import json
from typing import Any

import jsonpatch
import pytest

from webhook.core import Settings, apply_patch, mutate, parse_config
from webhook.core.model import STATUS_KEY

P = "lifecycle-webhook.io/"


def make_pod(annotations=None, labels=None, containers=None, init=None, **spec):
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {
            "containers": containers or [{"name": "app", "image": "nginx"}],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            **spec,
        },
    }
    if annotations is not None:
        pod["metadata"]["annotations"] = annotations
    if labels is not None:
        pod["metadata"]["labels"] = labels
    if init is not None:
        pod["spec"]["initContainers"] = init
    return pod


def run(pod, settings=None, **settings_kwargs):
    """Mutate, apply with the core's applier and with jsonpatch, check both agree and re-run."""
    settings = settings or Settings(**settings_kwargs)
    mutation = mutate(pod, settings)
    result = apply_patch(pod, mutation.ops)
    assert jsonpatch.JsonPatch(mutation.ops).apply(pod) == result
    assert mutate(result, settings).ops == [], "a second run must give no patch"
    for item in mutation.warnings:
        assert len(item.text) <= 120 and item.text.isprintable() and item.text.isascii()
        assert item.text.startswith("lifecycle-webhook: ")
    return mutation, result


def prestop(result, index=0):
    return result["spec"]["containers"][index].get("lifecycle", {}).get("preStop")


def grace(result):
    return result["spec"]["terminationGracePeriodSeconds"]


def texts(mutation):
    return [w.text for w in mutation.warnings]


def status(result):
    return json.loads(result["metadata"]["annotations"][STATUS_KEY])


# --- SPEC 4.2 worked examples -------------------------------------------------------------


def test_plain_pod_gets_sleep_5_and_keeps_30():
    mutation, result = run(make_pod())
    assert prestop(result) == {"sleep": {"seconds": 5}}
    assert grace(result) == 30
    assert mutation.outcome == "mutated"
    assert mutation.features == ("prestop",)
    assert mutation.ops[0] == {
        "op": "add",
        "path": "/spec/containers/0/lifecycle",
        "value": {"preStop": {"sleep": {"seconds": 5}}},
    }


def test_listed_sidecar_outlives_the_app_and_grace_is_35():
    pod = make_pod(
        annotations={P + "sidecars": "proxy"},
        containers=[{"name": "app", "image": "a"}, {"name": "proxy", "image": "p"}],
    )
    _, result = run(pod)
    assert prestop(result, 0) == {"sleep": {"seconds": 5}}
    assert prestop(result, 1) == {"sleep": {"seconds": 30}}
    assert grace(result) == 35


def test_user_sleep_20_prestop_is_kept_and_grace_is_45():
    user_hook = {"exec": {"command": ["sh", "-c", "sleep 20"]}}
    pod = make_pod(containers=[{"name": "app", "image": "a", "lifecycle": {"preStop": user_hook}}])
    mutation, result = run(pod)
    assert prestop(result) == user_hook
    assert grace(result) == 45
    assert mutation.features == ("grace",)


def test_never_lowers_a_larger_grace_period():
    _, result = run(make_pod(terminationGracePeriodSeconds=120))
    assert grace(result) == 120


def test_native_sidecars_add_q_each():
    init = [
        {"name": "mesh", "image": "m", "restartPolicy": "Always"},
        {"name": "log", "image": "l", "restartPolicy": "Always"},
        {"name": "migrate", "image": "x"},
    ]
    mutation, result = run(make_pod(init=init))
    assert grace(result) == 40
    assert all("lifecycle" not in c for c in result["spec"]["initContainers"])
    assert status(result)["grace"] == {"from": 30, "to": 40}


# --- SPEC 4.1 preStop ---------------------------------------------------------------------


def test_existing_lifecycle_gets_only_a_prestop_member():
    lifecycle = {"postStart": {"exec": {"command": ["true"]}}, "stopSignal": "SIGQUIT"}
    pod = make_pod(containers=[{"name": "app", "image": "a", "lifecycle": lifecycle}])
    mutation, result = run(pod)
    assert mutation.ops[0]["path"] == "/spec/containers/0/lifecycle/preStop"
    assert result["spec"]["containers"][0]["lifecycle"]["postStart"] == lifecycle["postStart"]
    assert result["spec"]["containers"][0]["lifecycle"]["stopSignal"] == "SIGQUIT"


def test_null_lifecycle_is_replaced_not_added():
    pod = make_pod(containers=[{"name": "app", "image": "a", "lifecycle": None}])
    mutation, _ = run(pod)
    assert mutation.ops[0]["op"] == "replace"


def test_auto_is_exec_before_1_30():
    _, result = run(make_pod(), cluster_version=(1, 29))
    assert prestop(result) == {"exec": {"command": ["sleep", "5"]}}


def test_explicit_sleep_on_old_cluster_falls_back_to_exec_with_warning():
    mutation, result = run(make_pod(annotations={P + "prestop": "sleep"}), cluster_version=(1, 29))
    assert prestop(result) == {"exec": {"command": ["sleep", "5"]}}
    assert any("1.30" in t for t in texts(mutation))


@pytest.mark.parametrize(
    ("version", "hook"), [((1, 32), None), ((1, 33), {"sleep": {"seconds": 0}})]
)
def test_zero_delay_sleep_only_from_1_33(version, hook):
    _, result = run(make_pod(annotations={P + "prestop-seconds": "0"}), cluster_version=version)
    assert prestop(result) == hook


def test_zero_delay_exec_without_command_is_no_hook_before_1_33():
    pod = make_pod(annotations={P + "prestop-seconds": "0", P + "prestop": "exec"})
    _, result = run(pod, cluster_version=(1, 32))
    assert prestop(result) is None


def test_exec_with_shell_string_and_json_array():
    pod = make_pod(annotations={P + "prestop": "exec", P + "prestop-exec": "nginx -s quit"})
    _, result = run(pod)
    assert prestop(result) == {"exec": {"command": ["/bin/sh", "-c", "nginx -s quit"]}}
    pod = make_pod(annotations={P + "prestop": "exec", P + "prestop-exec": '["/drain","--now"]'})
    _, result = run(pod)
    assert prestop(result) == {"exec": {"command": ["/drain", "--now"]}}


def test_http_uses_first_container_port_and_skips_portless_containers():
    containers = [
        {"name": "app", "image": "a", "ports": [{"containerPort": 8080}, {"containerPort": 9090}]},
        {"name": "worker", "image": "w"},
    ]
    mutation, result = run(make_pod(annotations={P + "prestop": "http"}, containers=containers))
    assert prestop(result, 0) == {"httpGet": {"path": "/shutdown", "port": 8080}}
    assert prestop(result, 1) is None
    assert any("worker" in t and "port" in t for t in texts(mutation))


def test_http_port_and_path_annotations():
    annotations = {
        P + "prestop": "http",
        P + "prestop-http-port": "admin",
        P + "prestop-http-path": "/drain",
    }
    _, result = run(make_pod(annotations=annotations))
    assert prestop(result) == {"httpGet": {"path": "/drain", "port": "admin"}}


def test_none_adds_no_hook():
    mutation, result = run(make_pod(annotations={P + "prestop": "none"}))
    assert prestop(result) is None
    assert mutation.ops == []
    assert mutation.outcome == "unchanged"


def test_containers_selects_which_get_a_prestop():
    containers = [{"name": "app", "image": "a"}, {"name": "batch", "image": "b"}]
    _, result = run(make_pod(annotations={P + "containers": "batch"}, containers=containers))
    assert prestop(result, 0) is None
    assert prestop(result, 1) == {"sleep": {"seconds": 5}}


def test_poststart_added_to_selected_containers_without_one():
    containers = [
        {"name": "app", "image": "a"},
        {"name": "own", "image": "o", "lifecycle": {"postStart": {"exec": {"command": ["x"]}}}},
    ]
    pod = make_pod(annotations={P + "poststart-exec": "warm-up"}, containers=containers)
    mutation, result = run(pod)
    assert result["spec"]["containers"][0]["lifecycle"] == {
        "preStop": {"sleep": {"seconds": 5}},
        "postStart": {"exec": {"command": ["/bin/sh", "-c", "warm-up"]}},
    }
    assert result["spec"]["containers"][1]["lifecycle"]["postStart"] == {"exec": {"command": ["x"]}}
    assert "poststart" in mutation.features


# --- SPEC 2 scope -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pod", "settings"),
    [
        (make_pod(annotations={"kubernetes.io/config.mirror": "abc"}), Settings()),
        (make_pod(), Settings(namespace="kube-system")),
        (make_pod(labels={P + "inject": "false"}), Settings()),
        (make_pod(annotations={P + "inject": "false"}), Settings()),
        (make_pod(), Settings(namespace_annotations={P + "inject": "false"})),
    ],
    ids=["mirror", "excluded-namespace", "label-false", "annotation-false", "namespace-false"],
)
def test_out_of_scope_pods_are_skipped(pod, settings):
    mutation = mutate(pod, settings)
    assert mutation.outcome == "skipped"
    assert mutation.ops == []


def test_pod_annotation_true_overrides_namespace_false():
    mutation = mutate(
        make_pod(annotations={P + "inject": "true"}),
        Settings(namespace_annotations={P + "inject": "false"}),
    )
    assert mutation.outcome == "mutated"


def test_excluded_namespaces_come_from_config():
    config = parse_config({"excludedNamespaces": ["platform"]})
    assert mutate(make_pod(), Settings(config=config, namespace="platform")).outcome == "skipped"
    assert mutate(make_pod(), Settings(config=config, namespace="kube-system")).outcome == "mutated"


@pytest.mark.parametrize("policy", ["Never", "OnFailure"])
def test_job_pods_get_no_prestop_but_init_order(policy):
    init = [{"name": "a", "image": "a"}, {"name": "b", "image": "b"}]
    pod = make_pod(
        annotations={P + "init-order": "b"},
        init=init,
        restartPolicy=policy,
        terminationGracePeriodSeconds=5,
    )
    mutation, result = run(pod)
    assert prestop(result) is None
    assert grace(result) == 5
    assert [c["name"] for c in result["spec"]["initContainers"]] == ["b", "a"]
    assert mutation.features == ("init_order",)


def test_job_pods_injected_when_asked():
    pod = make_pod(annotations={P + "jobs": "inject"}, restartPolicy="Never")
    _, result = run(pod)
    assert prestop(result) == {"sleep": {"seconds": 5}}
    config = parse_config({"jobs": "inject"})
    _, result = run(make_pod(restartPolicy="Never"), Settings(config=config))
    assert prestop(result) == {"sleep": {"seconds": 5}}


def test_grace_zero_is_respected_with_one_warning():
    mutation, result = run(make_pod(terminationGracePeriodSeconds=0))
    assert prestop(result) is None
    assert grace(result) == 0
    assert len(mutation.warnings) == 1
    assert "0" in mutation.warnings[0].text


# --- SPEC 4.2 explicit grace period ----------------------------------------------------------


def test_explicit_grace_may_lower_and_warns_below_required():
    mutation, result = run(
        make_pod(
            annotations={P + "termination-grace-period-seconds": "10"},
            terminationGracePeriodSeconds=60,
        )
    )
    assert grace(result) == 10
    assert prestop(result) == {"sleep": {"seconds": 5}}
    assert any("below" in t for t in texts(mutation))


def test_explicit_grace_clamps_injected_sleep():
    mutation, result = run(make_pod(annotations={P + "termination-grace-period-seconds": "3"}))
    assert grace(result) == 3
    assert prestop(result) == {"sleep": {"seconds": 3}}
    assert any("cut from 5s" in t for t in texts(mutation))


def test_explicit_grace_never_below_a_user_sleep():
    containers = [
        {"name": "app", "image": "a", "lifecycle": {"postStart": {"sleep": {"seconds": 20}}}}
    ]
    pod = make_pod(
        annotations={P + "termination-grace-period-seconds": "10"}, containers=containers
    )
    mutation, result = run(pod)
    assert grace(result) == 20
    assert any("raised to 20" in t for t in texts(mutation))


def test_explicit_zero_behaves_like_spec_zero():
    mutation, result = run(make_pod(annotations={P + "termination-grace-period-seconds": "0"}))
    assert grace(result) == 0
    assert prestop(result) is None
    assert len(mutation.warnings) == 1


def test_missing_grace_is_taken_as_the_api_default():
    pod = make_pod()
    del pod["spec"]["terminationGracePeriodSeconds"]
    mutation, result = run(pod)
    assert "terminationGracePeriodSeconds" not in result["spec"]
    pod["metadata"]["annotations"] = {P + "shutdown-seconds": "60"}
    mutation, result = run(pod)
    assert mutation.ops[1] == {
        "op": "add",
        "path": "/spec/terminationGracePeriodSeconds",
        "value": 65,
    }


def test_negative_grace_is_never_kept_or_emitted():
    _, result = run(make_pod(terminationGracePeriodSeconds=-5))
    assert grace(result) == 30


# --- SPEC 4.3 init order ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("order", "expected"),
    [
        ("d,b", ["d", "b", "a", "c", "e"]),
        ("d,*", ["d", "a", "b", "c", "e"]),
        ("*,a", ["b", "c", "d", "e", "a"]),
        ("e,*,a,b", ["e", "c", "d", "a", "b"]),
        ("a,b,c,d,e", None),
        ("ghost,c", ["c", "a", "b", "d", "e"]),
    ],
)
def test_init_order_forms(order, expected):
    init = [{"name": n, "image": n, "env": [{"name": "K", "value": n}]} for n in "abcde"]
    pod = make_pod(annotations={P + "init-order": order}, init=init)
    mutation, result = run(pod)
    names = [c["name"] for c in result["spec"]["initContainers"]]
    if expected is None:
        assert "init_order" not in mutation.features
        assert names == list("abcde")
    else:
        assert names == expected
        assert (
            next(op for op in mutation.ops if op["path"] == "/spec/initContainers")["op"]
            == "replace"
        )
        by_name = {c["name"]: c for c in init}
        assert all(c == by_name[c["name"]] for c in result["spec"]["initContainers"])


def test_unmatched_names_warn():
    pod = make_pod(
        annotations={
            P + "init-order": "ghost",
            P + "sidecars": "envoy",
            P + "containers": "app,nope",
        },
        init=[{"name": "a", "image": "a"}],
    )
    mutation, _ = run(pod)
    joined = "\n".join(texts(mutation))
    assert "ghost" in joined and "envoy" in joined and "nope" in joined


# --- SPEC 3 settings, precedence, warnings ------------------------------------------------


def test_precedence_default_config_namespace_pod():
    config = parse_config({"prestopSeconds": 7, "shutdownSeconds": 40})
    settings = Settings(config=config, namespace_annotations={P + "prestop-seconds": "9"})
    _, result = run(make_pod(), settings)
    assert prestop(result) == {"sleep": {"seconds": 9}}
    assert grace(result) == 49
    assert status(result)["settings"]["prestop-seconds"] == "namespace"
    assert status(result)["settings"]["shutdown-seconds"] == "config"
    _, result = run(make_pod(annotations={P + "prestop-seconds": "11"}), settings)
    assert prestop(result) == {"sleep": {"seconds": 11}}
    assert status(result)["settings"]["prestop-seconds"] == "pod"


def test_invalid_value_falls_back_to_the_layer_below_with_one_warning():
    settings = Settings(namespace_annotations={P + "prestop-seconds": "9"})
    mutation, result = run(make_pod(annotations={P + "prestop-seconds": " 12"}), settings)
    assert prestop(result) == {"sleep": {"seconds": 9}}
    assert texts(mutation) == [
        'lifecycle-webhook: lifecycle-webhook.io/prestop-seconds=" 12" on pod ignored: want integer 0..3600'
    ]


def test_max_seconds_bounds_every_seconds_value():
    settings = Settings(config=parse_config({"maxSeconds": 60}))
    mutation, result = run(make_pod(annotations={P + "shutdown-seconds": "61"}), settings)
    assert grace(result) == 30
    assert "0..60" in texts(mutation)[0]


def test_unknown_key_suggests_the_close_one():
    mutation, _ = run(make_pod(annotations={P + "prestop-second": "5"}))
    assert texts(mutation) == [
        "lifecycle-webhook: unknown annotation lifecycle-webhook.io/prestop-second on pod; did you mean prestop-seconds?"
    ]


def test_namespace_unreadable_warns_and_uses_the_rest():
    mutation, result = run(make_pod(), Settings(namespace_annotations=None))
    assert prestop(result) == {"sleep": {"seconds": 5}}
    assert any("namespace" in t for t in texts(mutation))


def test_long_and_unprintable_values_are_escaped_and_bounded():
    mutation, _ = run(make_pod(annotations={P + "prestop": "x\n\u0663" * 80}))
    (text,) = texts(mutation)
    assert len(text) <= 120 and "\n" not in text and "\\u0663" in text


def test_strict_denies_listing_every_problem():
    settings = Settings(config=parse_config({"strict": True}))
    pod = make_pod(
        annotations={P + "prestop-seconds": "x", P + "bogus": "1", P + "sidecars": "ghost"}
    )
    mutation = mutate(pod, settings)
    assert mutation.outcome == "denied"
    assert mutation.ops == []
    assert mutation.denial is not None
    assert (
        "prestop-seconds" in mutation.denial
        and "bogus" in mutation.denial
        and "ghost" in mutation.denial
    )
    assert mutate(make_pod(), settings).outcome == "mutated"


def test_report_only_changes_only_the_status():
    mutation, result = run(make_pod(annotations={P + "report-only": "true", P + "sidecars": "app"}))
    assert prestop(result) is None and grace(result) == 30
    recorded = status(result)
    assert recorded["reportOnly"] is True
    assert recorded["containers"] == {"app": ["preStop"]}
    assert recorded["grace"] == {"from": 30, "to": 35}
    assert set(mutation.features) == {"prestop", "grace"}


def test_status_is_escaped_into_existing_annotations():
    annotations = {"example.com/a~b": "1", "team": "x"}
    mutation, result = run(make_pod(annotations=annotations))
    assert mutation.ops[-1]["path"] == "/metadata/annotations/lifecycle-webhook.io~1status"
    assert result["metadata"]["annotations"]["example.com/a~b"] == "1"


def test_reinvocation_records_both_rounds():
    _, first = run(make_pod())
    first["spec"]["containers"].append({"name": "late", "image": "l"})
    _, second = run(first)
    assert status(second)["containers"] == {"app": ["preStop"], "late": ["preStop"]}


def test_non_pod_shapes_do_not_crash():
    for odd in (
        {},
        {"spec": None},
        {"spec": {"containers": "x"}},
        {"metadata": "x", "spec": {}},
        {"spec": {"containers": [None, 1, {"name": "a"}], "terminationGracePeriodSeconds": "30"}},
    ):
        mutation = mutate(odd, Settings())
        apply_patch(odd, mutation.ops)


def test_patch_escaping_order():
    from webhook.core.patch import escape

    assert escape("a/b~c") == "a~1b~0c"
    assert escape("~1") == "~01", "~ is escaped first, or ~1 would decode to /"
