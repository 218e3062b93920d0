"""Owner resolution and the fix command for each kind."""

from webhook.detection.owners import Owner, OwnerResolver, fix_command, pod_owner


def pod(*refs, name="web-abc-1", namespace="shop"):
    return {"metadata": {"name": name, "namespace": namespace, "ownerReferences": list(refs)}}


def ref(kind, name, controller=True):
    return {"apiVersion": "v1", "kind": kind, "name": name, "controller": controller, "uid": "u"}


def resolver(objects):
    calls = []

    def fetch(kind, namespace, name):
        calls.append((kind, namespace, name))
        return objects.get((kind, name))

    return OwnerResolver(fetch), calls


def test_deployment_through_its_replicaset_read_once():
    resolve, calls = resolver(
        {("ReplicaSet", "web-abc"): {"ownerReferences": [ref("Deployment", "web")]}}
    )
    first = resolve(pod(ref("ReplicaSet", "web-abc")))
    second = resolve(pod(ref("ReplicaSet", "web-abc"), name="web-abc-2"))
    assert first == second == Owner("shop", "Deployment", "web")
    assert calls == [("ReplicaSet", "shop", "web-abc")]
    assert fix_command(first) == "kubectl rollout restart deployment/web -n shop"


def test_cronjob_through_its_job():
    resolve, _ = resolver({("Job", "nightly-1"): {"ownerReferences": [ref("CronJob", "nightly")]}})
    owner = resolve(pod(ref("Job", "nightly-1")))
    assert owner == Owner("shop", "CronJob", "nightly")
    assert "--from=cronjob/nightly" in fix_command(owner)


def test_a_replicaset_or_job_of_its_own_or_gone_stays_the_owner():
    resolve, _ = resolver({("ReplicaSet", "lone"): {"labels": {}}})
    assert resolve(pod(ref("ReplicaSet", "lone"))) == Owner("shop", "ReplicaSet", "lone")
    assert resolve(pod(ref("Job", "gone"))) == Owner("shop", "Job", "gone")
    assert "recreates them" in fix_command(Owner("shop", "ReplicaSet", "lone"))
    assert "cannot be restarted" in fix_command(Owner("shop", "Job", "gone"))


def test_statefulset_and_daemonset_need_no_read():
    resolve, calls = resolver({})
    assert resolve(pod(ref("StatefulSet", "db"))) == Owner("shop", "StatefulSet", "db")
    assert resolve(pod(ref("DaemonSet", "agent"))) == Owner("shop", "DaemonSet", "agent")
    assert calls == []
    assert fix_command(Owner("shop", "StatefulSet", "db")) == (
        "kubectl rollout restart statefulset/db -n shop"
    )


def test_a_bare_pod_owns_itself():
    owner = pod_owner({"metadata": {"name": "debug", "namespace": "shop"}})
    assert owner == Owner("shop", "Pod", "debug")
    assert "kubectl delete pod debug -n shop" in fix_command(owner)


def test_the_controller_reference_wins_over_the_first():
    owner = pod_owner(pod(ref("Thing", "other", controller=False), ref("StatefulSet", "db")))
    assert owner == Owner("shop", "StatefulSet", "db")
