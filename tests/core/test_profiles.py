"""Profiles (issue 9): selectors, exposure, owner kind, first match wins, the layer they form,
`fromLoadBalancer`, and that a bad profile rejects the whole file with every problem listed."""

import json

import pytest

from webhook.core import ConfigError, Settings, mutate, parse_config
from webhook.core.model import STATUS_KEY
from webhook.core.selectors import parse_selector
from webhook.core.traffic import TARGET_GROUP_ATTRIBUTES, owner_kind, service_summary, traffic

from .test_mutate import P, grace, make_pod, prestop, run, texts

EXAMPLE = {
    "profiles": [
        {"name": "not-exposed", "match": {"exposure": "none"}, "settings": {"prestopSeconds": 0}},
        {
            "name": "nlb",
            "match": {"exposure": "loadBalancer"},
            "settings": {"prestopSeconds": 20, "shutdownSeconds": 30},
        },
    ]
}
WEB = {"app": "web"}


def service(name, kind="ClusterIP", selector=None, annotations=None):
    spec = {"type": kind}
    if selector is not None:
        spec["selector"] = selector
    return service_summary(
        {"metadata": {"name": name, "annotations": annotations or {}}, "spec": spec}
    )


def status(result):
    return json.loads(result["metadata"]["annotations"][STATUS_KEY])


# --- label selectors ------------------------------------------------------------------------


def selector(raw):
    problems: list[str] = []
    parsed = parse_selector(raw, "s", problems)
    assert problems == []
    return parsed


@pytest.mark.parametrize(
    ("raw", "labels", "expected"),
    [
        ({}, {}, True),
        ({"matchLabels": {"app": "web"}}, WEB, True),
        ({"matchLabels": {"app": "web"}}, {"app": "api"}, False),
        ({"matchLabels": {"app": "web"}}, {}, False),
        (
            {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]},
            {"tier": "b"},
            True,
        ),
        ({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["a"]}]}, {}, False),
        ({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["a"]}]}, {}, True),
        (
            {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["a"]}]},
            {"tier": "a"},
            False,
        ),
        ({"matchExpressions": [{"key": "tier", "operator": "Exists"}]}, {"tier": ""}, True),
        ({"matchExpressions": [{"key": "tier", "operator": "Exists", "values": []}]}, {}, False),
        ({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}, {}, True),
        ({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}, {"tier": "x"}, False),
        (
            {
                "matchLabels": {"app": "web"},
                "matchExpressions": [{"key": "example.com/legacy", "operator": "DoesNotExist"}],
            },
            {"app": "web", "example.com/legacy": "1"},
            False,
        ),
    ],
)
def test_selector_semantics_are_kubernetes_label_selectors(raw, labels, expected):
    assert selector(raw).matches(labels) is expected


def test_selector_problems_are_all_listed():
    problems: list[str] = []
    raw = {
        "matchLabels": {"bad key!": "x", "ok": "not a value"},
        "matchExpressions": [
            {"key": "a", "operator": "In"},
            {"key": "b", "operator": "Exists", "values": ["x"]},
            {"key": "c", "operator": "Equals", "values": ["x"]},
            {"key": "-d", "operator": "NotIn", "values": ["x"]},
            {"key": "e", "operator": "In", "values": ["ok", "no way"]},
            {"key": "f", "operator": "In", "values": ["x"], "extra": 1},
        ],
        "matchFields": {},
    }
    assert parse_selector(raw, "where", problems) is None
    assert problems == [
        "where.matchFields: unknown key (want matchLabels, matchExpressions)",
        "where.matchLabels: 'bad key!' is not a label key",
        "where.matchLabels.ok: 'not a value' is not a label value",
        "where.matchExpressions[0].values: In needs at least one value",
        "where.matchExpressions[1].values: Exists takes no values",
        "where.matchExpressions[2].operator: want In|NotIn|Exists|DoesNotExist, got 'Equals'",
        "where.matchExpressions[3].key: want a label key, got '-d'",
        "where.matchExpressions[4].values: want a list of label values, got ['ok', 'no way']",
        "where.matchExpressions[5].extra: unknown key (want key, operator, values)",
    ]


def test_selector_prints_as_kubectl_writes_it():
    raw = {
        "matchLabels": {"b": "2", "a": "1"},
        "matchExpressions": [
            {"key": "t", "operator": "In", "values": ["y", "x"]},
            {"key": "u", "operator": "DoesNotExist"},
        ],
    }
    assert str(selector(raw)) == "a=1,b=2,t in (x,y),!u"


# --- exposure and owner kind --------------------------------------------------------------------


def test_exposure_from_the_services_that_select_the_pod():
    assert traffic(None, WEB).exposure == "unknown"
    assert traffic([], WEB).exposure == "none"
    assert traffic([service("a", selector={"app": "api"})], WEB).exposure == "none"
    assert traffic([service("manual")], WEB).exposure == "none", "no selector selects nothing"
    assert traffic([service("x", "ExternalName", WEB)], WEB).exposure == "none"
    assert traffic([service("web", selector=WEB)], WEB).exposure == "cluster"
    both = [service("web", selector=WEB), service("np", "NodePort", WEB)]
    assert traffic(both, WEB).exposure == "loadBalancer"
    partial = service("lb", "LoadBalancer", {"app": "web", "tier": "front"})
    assert traffic([partial], WEB).exposure == "none", "every selector label must match"
    assert traffic([partial], {**WEB, "tier": "front"}).exposure == "loadBalancer"


def test_service_summary_defaults_the_type_to_cluster_ip():
    assert service_summary({"metadata": {"name": "s"}, "spec": {"selector": WEB}}) == {
        "name": "s",
        "type": "ClusterIP",
        "selector": WEB,
        "annotations": {},
    }


def controller(kind, name, api_version="apps/v1", is_controller=True):
    return {"apiVersion": api_version, "kind": kind, "name": name, "controller": is_controller}


@pytest.mark.parametrize(
    ("references", "labels", "expected"),
    [
        (None, {}, "none"),
        ([controller("ReplicaSet", "web-7d9c", is_controller=False)], {}, "none"),
        ([controller("ReplicaSet", "web-7d9c")], {"pod-template-hash": "7d9c"}, "Deployment"),
        ([controller("ReplicaSet", "web-7d9c")], {"pod-template-hash": "abcd"}, "ReplicaSet"),
        ([controller("ReplicaSet", "web")], {}, "ReplicaSet"),
        ([controller("StatefulSet", "db")], {}, "StatefulSet"),
        ([controller("DaemonSet", "agent")], {}, "DaemonSet"),
        ([controller("Job", "report-29412345", "batch/v1")], {}, "CronJob"),
        ([controller("Job", "backup-20260101", "batch/v1")], {}, "Job"),
        ([controller("Job", "migrate", "batch/v1")], {}, "Job"),
        ([controller("Job", "migrate", "example.com/v1")], {}, "Job.example.com"),
        ([controller("Rollout", "web", "argoproj.io/v1alpha1")], {}, "Rollout"),
    ],
)
def test_owner_kind_is_the_kind_of_workload_the_user_wrote(references, labels, expected):
    metadata = {"labels": labels}
    if references is not None:
        metadata["ownerReferences"] = references
    assert owner_kind(metadata)[0] == expected


# --- choosing a profile -------------------------------------------------------------------------


def test_first_matching_profile_applies_as_the_layer_above_the_config_file():
    config = parse_config(
        {
            "prestopSeconds": 7,
            "shutdownSeconds": 11,
            "profiles": [
                {
                    "name": "db",
                    "match": {"ownerKind": "StatefulSet"},
                    "settings": {"prestopSeconds": 1},
                },
                {
                    "name": "web",
                    "match": {"podSelector": {"matchLabels": WEB}},
                    "settings": {"prestopSeconds": 9},
                },
                {
                    "name": "also-web",
                    "match": {"podSelector": {"matchLabels": WEB}},
                    "settings": {"shutdownSeconds": 99},
                },
            ],
        }
    )
    mutation, result = run(make_pod(labels=WEB), Settings(config=config))
    assert mutation.profile == "web"
    assert prestop(result) == {"sleep": {"seconds": 9}}
    assert grace(result) == 30, "9 + the config's 11: the second matching profile is not used"
    recorded = status(result)
    assert recorded["profile"] == "web"
    assert recorded["settings"]["prestop-seconds"] == "profile:web"
    assert recorded["settings"]["shutdown-seconds"] == "config"


def test_namespace_and_pod_annotations_still_win_over_a_profile():
    config = parse_config(EXAMPLE)
    settings = Settings(
        config=config,
        services=[service("web", "LoadBalancer", WEB)],
        namespace_annotations={P + "shutdown-seconds": "40"},
    )
    pod = make_pod(labels=WEB, annotations={P + "prestop-seconds": "3"})
    mutation, result = run(pod, settings)
    assert mutation.profile == "nlb"
    assert prestop(result) == {"sleep": {"seconds": 3}}
    assert grace(result) == 43
    layers = status(result)["settings"]
    assert (layers["prestop-seconds"], layers["shutdown-seconds"]) == ("pod", "namespace")


def test_the_example_profiles_of_the_issue():
    config = parse_config(EXAMPLE)
    lb = [service("web-nlb", "LoadBalancer", WEB), service("web", selector=WEB)]
    _, exposed = run(make_pod(labels=WEB), Settings(config=config, services=lb))
    assert prestop(exposed) == {"sleep": {"seconds": 20}} and grace(exposed) == 50

    mutation, hidden = run(make_pod(labels={"app": "worker"}), Settings(config=config, services=lb))
    assert mutation.profile == "not-exposed" and mutation.exposure == "none"
    assert prestop(hidden) == {"sleep": {"seconds": 0}}, "sleep 0 is valid from 1.33"
    assert grace(hidden) == 30

    _, cluster = run(
        make_pod(labels=WEB), Settings(config=config, services=[service("web", selector=WEB)])
    )
    assert prestop(cluster) == {"sleep": {"seconds": 5}}, "cluster exposure: no profile, defaults"


def test_unknown_exposure_matches_no_exposure_test_and_warns():
    mutation, result = run(
        make_pod(labels=WEB), Settings(config=parse_config(EXAMPLE), services=None)
    )
    assert mutation.profile is None and mutation.exposure == "unknown"
    assert prestop(result) == {"sleep": {"seconds": 5}}
    assert texts(mutation) == [
        'lifecycle-webhook: could not read the Services of namespace "shop"; '
        "profiles testing exposure do not apply"
    ]


def test_exposure_is_not_computed_when_no_profile_gets_that_far():
    config = parse_config(
        {"profiles": [{"name": "db", "match": {"ownerKind": "StatefulSet", "exposure": "none"}}]}
    )
    mutation = mutate(make_pod(), Settings(config=config, services=None))
    assert mutation.exposure is None and mutation.warnings == ()


def test_namespace_selector_reads_namespace_labels():
    config = parse_config(
        {
            "profiles": [
                {
                    "name": "ambient",
                    "match": {
                        "namespaceSelector": {"matchLabels": {"istio.io/dataplane-mode": "ambient"}}
                    },
                    "settings": {"prestopSeconds": 15, "shutdownSeconds": 30},
                }
            ]
        }
    )
    labels = {"istio.io/dataplane-mode": "ambient"}
    _, result = run(make_pod(), Settings(config=config, namespace_labels=labels))
    assert prestop(result) == {"sleep": {"seconds": 15}} and grace(result) == 45
    mutation, result = run(make_pod(), Settings(config=config, namespace_labels=None))
    assert mutation.profile is None, "labels that could not be read match no namespaceSelector"


def test_owner_kind_from_the_adapter_wins_over_owner_references():
    config = parse_config(
        {"profiles": [{"name": "deploy", "match": {"ownerKind": ["Deployment", "StatefulSet"]}}]}
    )
    assert mutate(make_pod(), Settings(config=config)).profile is None
    assert mutate(make_pod(), Settings(config=config, owner_kind="Deployment")).profile == "deploy"


def test_explain_says_why_each_profile_did_not_match():
    mutation = mutate(
        make_pod(labels=WEB),
        Settings(config=parse_config(EXAMPLE), services=[service("web", selector=WEB)]),
        explain=True,
    )
    lines = mutation.explanation
    assert lines[:5] == (
        "owner kind none (no controller ownerReference)",
        "exposure cluster: web (ClusterIP)",
        "profile not-exposed: not matched (exposure cluster, want none)",
        "profile nlb: not matched (exposure cluster, want loadBalancer)",
        "no profile matched",
    )


# --- prestopSeconds: fromLoadBalancer or N ---------------------------------------------------


def nlb(name, delay=None, kind="LoadBalancer", extra=""):
    annotations = {}
    if delay is not None:
        annotations[TARGET_GROUP_ATTRIBUTES] = (
            f"stickiness.enabled=true, deregistration_delay.timeout_seconds={delay}{extra}"
        )
    return service(name, kind, WEB, annotations)


def from_lb(services, max_seconds=3600, **config):
    return Settings(
        config=parse_config(
            {"maxSeconds": max_seconds, "prestopSeconds": "fromLoadBalancer or 20", **config}
        ),
        services=services,
    )


def test_from_load_balancer_takes_the_largest_stated_delay():
    mutation, result = run(make_pod(labels=WEB), from_lb([nlb("a", 45), nlb("b", 120, "NodePort")]))
    assert prestop(result) == {"sleep": {"seconds": 120}} and grace(result) == 145


def test_from_load_balancer_is_bounded_by_max_seconds():
    _, result = run(
        make_pod(labels=WEB), from_lb([nlb("a", 300)], max_seconds=100, shutdownSeconds=25)
    )
    assert prestop(result) == {"sleep": {"seconds": 100}}


def test_from_load_balancer_falls_back_when_nothing_states_a_delay():
    cluster_ip_with_annotation = nlb("internal", 300, kind="ClusterIP")
    for services in ([], [nlb("quiet")], [cluster_ip_with_annotation], [nlb("typo", "x")]):
        mutation, result = run(make_pod(labels=WEB), from_lb(services))
        assert prestop(result) == {"sleep": {"seconds": 20}}, services
        assert mutation.warnings == ()


def test_from_load_balancer_with_unknown_services_warns_and_falls_back():
    mutation, result = run(make_pod(labels=WEB), from_lb(None))
    assert prestop(result) == {"sleep": {"seconds": 20}}
    assert texts(mutation) == [
        'lifecycle-webhook: could not read the Services of namespace "shop"; '
        "prestop-seconds is its fallback, 20"
    ]


def test_from_load_balancer_as_an_annotation():
    pod = make_pod(labels=WEB, annotations={P + "prestop-seconds": "fromLoadBalancer or 8"})
    _, result = run(pod, Settings(services=[nlb("a", 60)]))
    assert prestop(result) == {"sleep": {"seconds": 60}}


# --- the config file ------------------------------------------------------------------------


def test_a_bad_profile_rejects_the_file_listing_every_problem():
    with pytest.raises(ConfigError) as caught:
        parse_config(
            {
                "prestopSeconds": "fromLoadBalancer",
                "profiles": [
                    {"name": "Bad_Name", "match": {"exposure": "public"}, "settings": {}},
                    {
                        "name": "ok",
                        "match": {"ownerKind": "Pod", "colour": "red"},
                        "settings": {"maxSeconds": 5},
                    },
                    {"name": "ok", "settings": {"prestopSeconds": 99999}},
                    {
                        "name": "x",
                        "match": {"podSelector": {"matchLabels": {"a": 1}}},
                        "settings": [],
                    },
                    "not-a-profile",
                ],
            }
        )
    assert caught.value.problems == [
        "prestopSeconds: want \"fromLoadBalancer or N\", N 0..3600, got 'fromLoadBalancer'",
        "profiles[0] (Bad_Name).name: want a lower-case DNS label, got 'Bad_Name'",
        "profiles[0] (Bad_Name).match.exposure: want none|cluster|loadBalancer or a list of "
        "them, got 'public'",
        "profiles[1] (ok).match.colour: unknown key (want exposure, ownerKind, podSelector, "
        "namespaceSelector)",
        "profiles[1] (ok).match.ownerKind: want Deployment|StatefulSet|DaemonSet|ReplicaSet|"
        "Job|CronJob|none or a list of them, got 'Pod'",
        "profiles[1] (ok).settings.maxSeconds: only at the top level",
        "profiles[2] (ok).settings.prestopSeconds: want integer 0..3600, got 99999",
        "profiles[3] (x).match.podSelector.matchLabels.a: 1 is not a label value",
        "profiles[3] (x).settings: want a mapping of settings",
        "profiles[4]: want {name, match, settings}",
    ]


def test_profile_names_are_unique():
    with pytest.raises(ConfigError, match=r"'a' is used by an earlier profile"):
        parse_config({"profiles": [{"name": "a"}, {"name": "a"}]})


def test_a_profile_without_match_matches_every_pod():
    config = parse_config({"profiles": [{"name": "all", "settings": {"prestopSeconds": 2}}]})
    _, result = run(make_pod(), Settings(config=config))
    assert prestop(result) == {"sleep": {"seconds": 2}}
