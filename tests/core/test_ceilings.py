"""Grace-period ceilings (issue 9): `maxGracePeriodSeconds`, and a grace period that a mutating
webhook called after us lowered, which the reinvocation round must fit instead of undo."""

import copy
import json

from webhook.core import Settings, apply_patch, mutate, parse_config
from webhook.core.model import STATUS_KEY

from .test_mutate import P, grace, make_pod, prestop, run, texts


def ceiling(seconds, **more):
    return Settings(config=parse_config({"maxGracePeriodSeconds": seconds, **more}))


def status(result):
    return json.loads(result["metadata"]["annotations"][STATUS_KEY])


def test_a_budget_that_fits_is_untouched():
    mutation, result = run(make_pod(), ceiling(50))
    assert prestop(result) == {"sleep": {"seconds": 5}} and grace(result) == 30
    assert mutation.warnings == ()
    assert "ceiling" not in status(result)
    assert status(result)["settings"]["max-grace-period-seconds"] == "config"


def test_injected_sleeps_are_shortened_first_with_one_warning():
    containers = [{"name": "app", "image": "a"}, {"name": "envoy", "image": "e"}]
    pod = make_pod(containers=containers, annotations={P + "sidecars": "envoy"})
    settings = ceiling(40, prestopSeconds=20, shutdownSeconds=25)
    mutation, result = run(pod, settings)
    # app: 20 + 25 = 45 > 40 -> 15; envoy (listed sidecar): 20 + 25 + Q 5 = 50 -> 35
    assert prestop(result, 0) == {"sleep": {"seconds": 15}}
    assert prestop(result, 1) == {"sleep": {"seconds": 35}}
    assert grace(result) == 40
    assert texts(mutation) == [
        "lifecycle-webhook: grace period capped at 40s (maxGracePeriodSeconds), 50s needed; "
        "sleeps cut: app 20->15, envoy 45->35"
    ]
    assert status(result)["ceiling"] == {"seconds": 40, "source": "config"}


def test_sleeps_never_go_below_zero_and_the_drain_gets_what_is_left():
    mutation, result = run(make_pod(), ceiling(10))
    assert prestop(result) == {"sleep": {"seconds": 0}}
    assert grace(result) == 10
    assert "app 5->0" in texts(mutation)[0]


def test_before_1_33_a_zero_sleep_means_no_hook():
    settings = Settings(config=parse_config({"maxGracePeriodSeconds": 10}), cluster_version=(1, 32))
    mutation, result = run(make_pod(), settings)
    assert prestop(result) is None and grace(result) == 10


def test_a_larger_grace_period_the_user_wrote_is_lowered_to_the_ceiling():
    mutation, result = run(make_pod(terminationGracePeriodSeconds=600), ceiling(120))
    assert grace(result) == 120 and prestop(result) == {"sleep": {"seconds": 5}}
    assert texts(mutation) == [
        "lifecycle-webhook: grace period 600s lowered to the 120s ceiling (maxGracePeriodSeconds)"
    ]


def test_the_explicit_annotation_is_capped_too():
    pod = make_pod(annotations={P + "termination-grace-period-seconds": "90"})
    _, result = run(pod, ceiling(60))
    assert grace(result) == 60


def test_a_user_sleep_above_the_ceiling_is_kept_and_so_is_a_valid_pod():
    containers = [
        {"name": "app", "image": "a", "lifecycle": {"preStop": {"sleep": {"seconds": 90}}}},
        {"name": "side", "image": "s"},
    ]
    mutation, result = run(make_pod(containers=containers), ceiling(60))
    assert prestop(result, 0) == {"sleep": {"seconds": 90}}, "the user's own hook is never changed"
    assert grace(result) == 90, "the API server rejects a sleep above the grace period"
    assert prestop(result, 1) == {"sleep": {"seconds": 5}}
    assert (
        "lifecycle-webhook: container app sleeps 90s in its own hook, above the 60s ceiling: "
        "grace period kept at its sleep"
    ) in texts(mutation)


def test_a_profile_can_set_its_own_ceiling_and_annotations_cannot():
    config = parse_config(
        {
            "maxGracePeriodSeconds": 100,
            "profiles": [
                {
                    "name": "daemons",
                    "match": {"ownerKind": "DaemonSet"},
                    "settings": {"maxGracePeriodSeconds": 20},
                }
            ],
        }
    )
    pod = make_pod(annotations={P + "max-grace-period-seconds": "3000"})
    mutation, result = run(pod, Settings(config=config, owner_kind="DaemonSet"))
    assert grace(result) == 20
    assert status(result)["ceiling"] == {"seconds": 20, "source": "profile:daemons"}
    assert texts(mutation)[0] == (
        "lifecycle-webhook: lifecycle-webhook.io/max-grace-period-seconds on pod ignored: "
        "maxGracePeriodSeconds is config-only"
    )


# --- a later webhook lowers the grace period ---------------------------------------------------


def capped(pod, cap):
    """What a Kyverno-style policy does after us: lower a grace period above `cap`."""
    out = copy.deepcopy(pod)
    if out["spec"]["terminationGracePeriodSeconds"] > cap:
        out["spec"]["terminationGracePeriodSeconds"] = cap
    return out


def reinvoked(pod, settings, cap):
    first = apply_patch(pod, mutate(pod, settings).ops)
    lowered = capped(first, cap)
    second = mutate(lowered, settings)
    return second, apply_patch(lowered, second.ops)


def valid(pod):
    tgps = pod["spec"]["terminationGracePeriodSeconds"]
    for container in pod["spec"]["containers"]:
        for hook in container.get("lifecycle", {}).values():
            if isinstance(hook, dict) and "sleep" in hook:
                assert hook["sleep"]["seconds"] <= tgps, (container["name"], tgps)
    return True


def test_cap_below_our_sleep_the_reinvocation_shortens_our_sleep():
    mutation, result = reinvoked(make_pod(), Settings(), 3)
    assert grace(result) == 3, "never raised back: the capping webhook is not called again"
    assert prestop(result) == {"sleep": {"seconds": 0}}
    assert valid(result)
    assert status(result)["ceiling"] == {"seconds": 3, "source": "webhook"}
    assert texts(mutation) == [
        "lifecycle-webhook: grace period capped at 3s (set by a later webhook), 30s needed; "
        "sleeps cut: app 5->0"
    ]
    assert mutate(result, Settings()).ops == [], "and a third run changes nothing"


def test_cap_at_50_kyverno_style_with_a_long_drain():
    containers = [{"name": "app", "image": "a"}, {"name": "envoy", "image": "e"}]
    pod = make_pod(containers=containers, annotations={P + "sidecars": "envoy"})
    settings = Settings(config=parse_config({"prestopSeconds": 20, "shutdownSeconds": 30}))
    first = apply_patch(pod, mutate(pod, settings).ops)
    assert grace(first) == 55 and prestop(first, 1) == {"sleep": {"seconds": 50}}
    _, result = reinvoked(pod, settings, 50)
    assert grace(result) == 50
    assert prestop(result, 0) == {"sleep": {"seconds": 20}}
    assert prestop(result, 1) == {"sleep": {"seconds": 45}}
    assert valid(result) and mutate(result, settings).ops == []


def test_cap_below_the_computed_grace_is_respected_even_when_our_sleep_fits():
    _, result = reinvoked(make_pod(), Settings(), 20)
    assert grace(result) == 20, "30 -> 20 by a later webhook stays 20"
    assert valid(result) and mutate(result, Settings()).ops == []


def test_cap_to_zero_before_1_33_removes_our_hook():
    settings = Settings(cluster_version=(1, 31))
    mutation, result = reinvoked(make_pod(), settings, 0)
    assert grace(result) == 0
    assert prestop(result) is None
    assert {"op": "remove", "path": "/spec/containers/0/lifecycle/preStop"} in mutation.ops
    assert "containers" not in status(result)
    assert mutate(result, settings).ops == []


def test_a_grace_period_raised_after_us_is_kept():
    first = apply_patch(make_pod(), mutate(make_pod(), Settings()).ops)
    first["spec"]["terminationGracePeriodSeconds"] = 90
    assert mutate(first, Settings()).ops == []


def test_report_only_status_is_not_mistaken_for_a_lowered_grace_period():
    pod = make_pod(annotations={P + "report-only": "true", P + "sidecars": "app"})
    mutation, result = run(pod)
    assert status(result)["grace"] == {"from": 30, "to": 35} and grace(result) == 30
    assert "ceiling" not in status(result)
