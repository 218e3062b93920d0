"""`lifecycle-webhook` as a user runs it: exit codes, stdout/stderr discipline, `mutate` options.

Every usage or input error must exit 2 with its reason on stderr and nothing on stdout, so
a Helm post-renderer or a pipe never receives half a manifest.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import tomllib
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
import yaml

from webhook import __version__, cli
from webhook.manifests import load_documents

ROOT = Path(__file__).resolve().parents[1]

POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: shop
spec:
  containers:
  - name: app
    image: nginx:1.27
"""

SERVICE = """\
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  ports:
  - port: 80
"""

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
spec:
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: app
        image: nginx:1.27
"""


class Run:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    @property
    def documents(self) -> list[dict[str, Any]]:
        return load_documents(self.out)


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Any:
    def invoke(*argv: str) -> Run:
        code = cli.main(list(argv))
        out, err = capsys.readouterr()
        return Run(code, out, err)

    return invoke


def write(tmp_path: Path, text: str, name: str = "in.yaml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def prestop(pod: dict[str, Any], index: int = 0) -> Any:
    return pod["spec"]["containers"][index].get("lifecycle", {}).get("preStop")


# --- usage and input errors: exit 2, one line per problem, nothing on stdout -----------


def assert_usage_error(result: Run, *fragments: str) -> None:
    assert result.code == 2
    assert result.out == ""
    lines = result.err.splitlines()
    assert lines, "an error must say why"
    assert all(line.startswith("lifecycle-webhook") for line in lines), result.err
    for fragment in fragments:
        assert fragment in result.err


def test_no_command(run: Any) -> None:
    assert_usage_error(run(), "a command is required")


def test_unknown_command(run: Any) -> None:
    assert_usage_error(run("mutilate"), "invalid choice", "mutilate")


def test_certs_without_subcommand(run: Any) -> None:
    assert_usage_error(run("certs"), "lifecycle-webhook certs: error", "a command is required")


def test_mutate_requires_a_file(run: Any) -> None:
    assert_usage_error(run("mutate"), "-f/--filename")


def test_usage_errors_are_one_line(run: Any) -> None:
    result = run("mutate", "-f", "in.yaml", "--bogus")
    assert_usage_error(result, "unrecognized arguments: --bogus")
    assert len(result.err.splitlines()) == 1


@pytest.mark.parametrize("output", ["xml", "YAML", ""])
def test_unknown_output_format(run: Any, tmp_path: Path, output: str) -> None:
    assert_usage_error(run("mutate", "-f", write(tmp_path, POD), "-o", output), "invalid choice")


@pytest.mark.parametrize(
    "version", ["v1.30", "1.", "2.30", "1.30.1", "1.x", "auto", " 1.30", "1.٣٠"]
)
def test_bad_cluster_version(run: Any, tmp_path: Path, version: str) -> None:
    result = run("mutate", "-f", write(tmp_path, POD), "--cluster-version", version)
    assert_usage_error(result, "--cluster-version", "1.NN")


@pytest.mark.parametrize(
    "flag",
    [
        "lifecycle-webhook.io/prestop-seconds",  # no '='
        "=12",  # no key
        "lifecycle-webhook.io/=12",  # empty name
        "bad key=1",
        "Lifecycle_Webhook.io/prestop-seconds=1",  # prefix must be a DNS subdomain
        "lifecycle-webhook.io/-leading-dash=1",
    ],
)
def test_bad_namespace_annotation(run: Any, tmp_path: Path, flag: str) -> None:
    result = run("mutate", "-f", write(tmp_path, POD), "--namespace-annotation", flag)
    assert_usage_error(result, "--namespace-annotation")


@pytest.mark.parametrize(
    "flag",
    [
        "istio.io/dataplane-mode",  # no '='
        "=ambient",
        "bad key=1",
        "team=has space",
        "team=-leading",
        "team=" + "x" * 64,
    ],
)
def test_bad_namespace_label(run: Any, tmp_path: Path, flag: str) -> None:
    result = run("mutate", "-f", write(tmp_path, POD), "--namespace-label", flag)
    assert_usage_error(result, "--namespace-label")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [(None, "cannot read --services"), ("kind: [", "--services"), (b"\xff", "not UTF-8")],
)
def test_bad_services_file(run: Any, tmp_path: Path, text: Any, fragment: str) -> None:
    services = tmp_path / "services.yaml"
    if isinstance(text, bytes):
        services.write_bytes(text)
    elif text is not None:
        services.write_text(text)
    result = run("mutate", "-f", write(tmp_path, POD), "--services", str(services))
    assert_usage_error(result, fragment)


def test_stdin_cannot_be_read_twice(run: Any) -> None:
    assert_usage_error(run("mutate", "-f", "-", "--services", "-"), "cannot both read stdin")


PROFILES = """profiles:
  - name: not-exposed
    match: {exposure: none}
    settings: {prestopSeconds: 0}
  - name: ambient
    match:
      namespaceSelector: {matchLabels: {istio.io/dataplane-mode: ambient}}
    settings: {prestopSeconds: 15}
"""


def test_services_and_namespace_labels_decide_profiles(run: Any, tmp_path: Path) -> None:
    config = write(tmp_path, PROFILES, "config.yaml")
    pod = write(
        tmp_path, POD.replace("  namespace: shop\n", "  namespace: shop\n  labels: {app: web}\n")
    )
    selecting = SERVICE.replace("spec:\n", "spec:\n  selector: {app: web}\n")
    elsewhere = SERVICE.replace("namespace: shop", "namespace: other").replace(
        "spec:\n", "spec:\n  selector: {app: web}\n"
    )
    empty = write(tmp_path, "", "none.yaml")

    def sleep(*flags: str) -> Any:
        result = run("mutate", "-f", pod, "--config", config, *flags)
        assert result.code == 0, result.err
        return prestop(load_documents(result.out)[0])["sleep"]["seconds"]

    assert sleep("--services", empty) == 0, "known: no Service selects it"
    assert sleep("--services", write(tmp_path, selecting, "s.yaml")) == 5
    assert sleep("--services", write(tmp_path, elsewhere, "o.yaml")) == 0, "other namespace"
    assert sleep("--services", empty, "--namespace-label", "istio.io/dataplane-mode=ambient") == 0
    assert sleep("--namespace-label", "istio.io/dataplane-mode=ambient") == 15
    unknown = run("mutate", "-f", pod, "--config", config)
    assert unknown.code == 0
    assert unknown.err.splitlines()[-1] == cli.SERVICES_HINT


def test_the_namespace_name_label_is_always_there(run: Any, tmp_path: Path) -> None:
    config = write(
        tmp_path,
        "profiles:\n- name: shop\n  match:\n    namespaceSelector:\n      matchLabels:\n"
        "        kubernetes.io/metadata.name: shop\n  settings: {prestopSeconds: 9}\n",
        "config.yaml",
    )
    result = run("mutate", "-f", write(tmp_path, POD), "--config", config)
    assert prestop(load_documents(result.out)[0]) == {"sleep": {"seconds": 9}}


def test_missing_file(run: Any, tmp_path: Path) -> None:
    assert_usage_error(run("mutate", "-f", str(tmp_path / "nope.yaml")), "cannot read", "nope.yaml")


def test_directory_instead_of_file(run: Any, tmp_path: Path) -> None:
    assert_usage_error(run("mutate", "-f", str(tmp_path)), "cannot read")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("apiVersion: v1\nkind: Pod\nmetadata: [\n", "invalid YAML: line"),
        ("apiVersion: v1\n  kind: Pod\n", "invalid YAML"),
        ('{"apiVersion": "v1", "kind": ', "invalid JSON: line 1"),
        ('{"kind": "Pod", "spec": NaN}', "NaN is not a JSON number"),
        ("- apiVersion: v1\n  kind: Pod\n", "document 1 is a list"),
        (POD + "---\njust a string\n", "document 2 is a string"),
        ("apiVersion: v1\nkind: ConfigMap\ndata:\n  x: .inf\n", "not JSON"),
        ("apiVersion: v1\nkind: Pod\nmetadata: !custom {}\n", "invalid YAML"),
    ],
)
def test_unreadable_manifests(run: Any, tmp_path: Path, text: str, fragment: str) -> None:
    assert_usage_error(run("mutate", "-f", write(tmp_path, text)), fragment)


def test_not_utf8(run: Any, tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(POD.replace("nginx", "ng\xefnx").encode("latin-1"))
    assert_usage_error(run("mutate", "-f", str(path)), "not UTF-8")


@pytest.mark.parametrize(
    ("text", "found"),
    [
        (DEPLOYMENT, "Deployment/web"),
        (POD + "---\n" + POD, "2 documents"),
        ("", "0 documents"),
        ('{"apiVersion": "v1", "kind": "List", "items": []}', "List/"),
    ],
)
def test_patch_output_needs_exactly_one_pod(
    run: Any, tmp_path: Path, text: str, found: str
) -> None:
    result = run("mutate", "-f", write(tmp_path, text), "-o", "patch")
    assert_usage_error(result, "-o patch needs exactly one v1 Pod", found)


def test_config_file_problems_are_listed(run: Any, tmp_path: Path) -> None:
    config = write(tmp_path, "prestopSeconds: -1\nstrict: maybe\ncolour: blue\n", "config.yaml")
    result = run("mutate", "-f", write(tmp_path, POD), "--config", config)
    assert_usage_error(result, "prestopSeconds", "strict", "colour")
    assert len(result.err.splitlines()) == 3  # one line per problem


def test_config_file_missing(run: Any, tmp_path: Path) -> None:
    result = run("mutate", "-f", write(tmp_path, POD), "--config", str(tmp_path / "none.yaml"))
    assert_usage_error(result, "cannot read --config")


def test_config_file_not_a_mapping(run: Any, tmp_path: Path) -> None:
    config = write(tmp_path, "- prestopSeconds\n", "config.yaml")
    assert_usage_error(run("mutate", "-f", write(tmp_path, POD), "--config", config), "mapping")


# --- output formats ------------------------------------------------------------------------


def test_yaml_is_the_default_and_keeps_key_order(run: Any, tmp_path: Path) -> None:
    result = run("mutate", "-f", write(tmp_path, POD))
    assert result.code == 0
    assert result.err == ""
    assert result.out.startswith("apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n")
    assert prestop(result.documents[0]) == {"sleep": {"seconds": 5}}


def test_json_single_document_is_the_object(run: Any, tmp_path: Path) -> None:
    result = run("mutate", "-f", write(tmp_path, POD), "-o", "json")
    assert result.code == 0
    obj = json.loads(result.out)
    assert obj["kind"] == "Pod"
    assert prestop(obj) == {"sleep": {"seconds": 5}}


def test_json_several_documents_are_a_v1_list(run: Any, tmp_path: Path) -> None:
    result = run("mutate", "-f", write(tmp_path, SERVICE + "---\n" + POD), "-o", "json")
    obj = json.loads(result.out)
    assert (obj["apiVersion"], obj["kind"]) == ("v1", "List")
    assert [item["kind"] for item in obj["items"]] == ["Service", "Pod"]
    assert prestop(obj["items"][1]) == {"sleep": {"seconds": 5}}


def test_json_without_documents_is_an_empty_list(run: Any, tmp_path: Path) -> None:
    result = run("mutate", "-f", write(tmp_path, "---\n# nothing\n---\n"), "-o", "json")
    assert (result.code, json.loads(result.out)) == (
        0,
        {"apiVersion": "v1", "kind": "List", "items": []},
    )


def test_yaml_without_documents_is_empty(run: Any, tmp_path: Path) -> None:
    assert (run("mutate", "-f", write(tmp_path, "")).out) == ""


def test_patch_output_is_what_the_server_returns(run: Any, tmp_path: Path) -> None:
    path = write(tmp_path, POD)
    ops = json.loads(run("mutate", "-f", path, "-o", "patch").out)
    assert isinstance(ops, list)
    assert {op["op"] for op in ops} == {"add"}
    mutated = run("mutate", "-f", path).documents[0]
    assert jsonpatch.apply_patch(yaml.safe_load(POD), ops) == mutated


def test_patch_output_is_empty_for_an_untouched_pod(run: Any, tmp_path: Path) -> None:
    text = POD.replace("  namespace: shop", "  namespace: kube-system")
    result = run("mutate", "-f", write(tmp_path, text), "-o", "patch")
    assert (result.code, json.loads(result.out)) == (0, [])


def test_json_input_stream(run: Any, tmp_path: Path) -> None:
    pod = yaml.safe_load(POD)
    service = yaml.safe_load(SERVICE)
    text = json.dumps(service) + "\n" + json.dumps(pod, indent=2)
    result = run("mutate", "-f", write(tmp_path, text, "in.json"))
    assert [d["kind"] for d in result.documents] == ["Service", "Pod"]
    assert prestop(result.documents[1]) == {"sleep": {"seconds": 5}}


# --- documents: workloads, pass-through, lists -------------------------------------------


def test_deployment_template_is_mutated_without_leaking_the_namespace(
    run: Any, tmp_path: Path
) -> None:
    deployment = run("mutate", "-f", write(tmp_path, DEPLOYMENT)).documents[0]
    template = deployment["spec"]["template"]
    assert prestop(template) == {"sleep": {"seconds": 5}}
    assert "namespace" not in template["metadata"]
    assert "lifecycle-webhook.io/status" in template["metadata"]["annotations"]
    assert template["metadata"]["labels"] == {"app": "web"}


def test_template_without_metadata_gets_it_above_spec(run: Any, tmp_path: Path) -> None:
    text = DEPLOYMENT.replace("    metadata:\n      labels:\n        app: web\n", "")
    template = run("mutate", "-f", write(tmp_path, text)).documents[0]["spec"]["template"]
    assert list(template) == ["metadata", "spec"]
    assert list(template["metadata"]) == ["annotations"]


def test_template_namespace_is_the_owners(run: Any, tmp_path: Path) -> None:
    """Pods of a workload live in its namespace; an excluded one means no mutation."""
    text = DEPLOYMENT.replace("  namespace: shop", "  namespace: kube-system")
    result = run("mutate", "-f", write(tmp_path, text))
    assert result.documents == load_documents(text)


@pytest.mark.parametrize("kind", ["StatefulSet", "DaemonSet", "ReplicaSet"])
def test_other_apps_workloads(run: Any, tmp_path: Path, kind: str) -> None:
    obj = run("mutate", "-f", write(tmp_path, DEPLOYMENT.replace("Deployment", kind))).documents[0]
    assert prestop(obj["spec"]["template"]) == {"sleep": {"seconds": 5}}


def test_job_template_follows_the_jobs_setting(run: Any, tmp_path: Path) -> None:
    job = (
        DEPLOYMENT.replace("apps/v1", "batch/v1")
        .replace("Deployment", "Job")
        .replace(
            "    spec:\n      containers", "    spec:\n      restartPolicy: Never\n      containers"
        )
    )
    path = write(tmp_path, job)
    assert run("mutate", "-f", path).documents == load_documents(job)  # jobs: skip
    injected = run(
        "mutate", "-f", path, "--namespace-annotation", "lifecycle-webhook.io/jobs=inject"
    ).documents[0]
    assert prestop(injected["spec"]["template"]) == {"sleep": {"seconds": 5}}


def test_cronjob_and_pod_template(run: Any, tmp_path: Path) -> None:
    cronjob = textwrap.dedent(
        """\
        apiVersion: batch/v1
        kind: CronJob
        metadata: {name: nightly, namespace: shop}
        spec:
          schedule: "0 1 * * *"
          jobTemplate:
            spec:
              template:
                metadata:
                  annotations: {lifecycle-webhook.io/jobs: inject}
                spec:
                  restartPolicy: OnFailure
                  containers: [{name: job, image: busybox}]
        ---
        apiVersion: v1
        kind: PodTemplate
        metadata: {name: runner, namespace: shop}
        template:
          spec:
            containers: [{name: runner, image: busybox}]
        """
    )
    cron, template = run("mutate", "-f", write(tmp_path, cronjob)).documents
    assert prestop(cron["spec"]["jobTemplate"]["spec"]["template"]) == {"sleep": {"seconds": 5}}
    assert prestop(template["template"]) == {"sleep": {"seconds": 5}}


def test_other_kinds_pass_through_in_order(run: Any, tmp_path: Path) -> None:
    crd_job = DEPLOYMENT.replace("apps/v1", "batch.volcano.sh/v1alpha1").replace(
        "Deployment", "Job"
    )
    configmap = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {on: 'on'}\n"
    text = "---\n".join([SERVICE, crd_job, POD, configmap])
    before = load_documents(text)
    after = run("mutate", "-f", write(tmp_path, text)).documents
    assert [d["kind"] for d in after] == ["Service", "Job", "Pod", "ConfigMap"]
    assert (after[0], after[1], after[3]) == (before[0], before[1], before[3])
    assert after[2] != before[2]


def test_list_items_are_mutated_in_place(run: Any, tmp_path: Path) -> None:
    items = [yaml.safe_load(SERVICE), yaml.safe_load(POD), yaml.safe_load(DEPLOYMENT)]
    text = json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
    result = run("mutate", "-f", write(tmp_path, text), "-o", "json")
    obj = json.loads(result.out)
    assert obj["kind"] == "List"
    assert obj["items"][0] == items[0]
    assert prestop(obj["items"][1]) == {"sleep": {"seconds": 5}}
    assert prestop(obj["items"][2]["spec"]["template"]) == {"sleep": {"seconds": 5}}


def test_values_keep_the_meaning_kubectl_gives_them(run: Any, tmp_path: Path) -> None:
    """Strings stay strings (dates, 12:30, on) and come back quoted so no reader retypes them."""
    configmap = textwrap.dedent(
        """\
        apiVersion: v1
        kind: ConfigMap
        metadata: {name: c}
        data:
          date: 2024-05-01
          clock: 12:30
          quoted: "yes"
          sci: "1e3"
        """
    )
    out = run("mutate", "-f", write(tmp_path, configmap)).out
    assert "date: '2024-05-01'" in out
    assert "clock: '12:30'" in out
    assert "quoted: 'yes'" in out
    assert "sci: '1e3'" in out
    assert yaml.safe_load(out)["data"] == {
        "date": "2024-05-01",
        "clock": "12:30",
        "quoted": "yes",
        "sci": "1e3",
    }


# --- settings from the command line ------------------------------------------------------


def test_namespace_annotation_layering(run: Any, tmp_path: Path) -> None:
    ns = "--namespace-annotation"
    path = write(tmp_path, POD)
    from_namespace = run(
        "mutate",
        "-f",
        path,
        ns,
        "lifecycle-webhook.io/prestop-seconds=9",
        ns,
        "lifecycle-webhook.io/prestop-seconds=12",
    ).documents[0]
    assert prestop(from_namespace) == {"sleep": {"seconds": 12}}  # the last flag wins
    assert from_namespace["spec"]["terminationGracePeriodSeconds"] == 37

    overridden = POD.replace(
        "  namespace: shop\n",
        "  namespace: shop\n  annotations:\n    lifecycle-webhook.io/prestop-seconds: '3'\n",
    )
    pod_wins = run(
        "mutate",
        "-f",
        write(tmp_path, overridden, "pod.yaml"),
        ns,
        "lifecycle-webhook.io/prestop-seconds=12",
    ).documents[0]
    assert prestop(pod_wins) == {"sleep": {"seconds": 3}}  # pod annotation beats namespace


def test_namespace_annotation_value_may_contain_equals(run: Any, tmp_path: Path) -> None:
    result = run(
        "mutate",
        "-f",
        write(tmp_path, POD),
        "--namespace-annotation",
        'lifecycle-webhook.io/prestop-exec=["/drain","--mode=fast"]',
        "--namespace-annotation",
        "lifecycle-webhook.io/prestop=exec",
    )
    assert prestop(result.documents[0]) == {"exec": {"command": ["/drain", "--mode=fast"]}}


@pytest.mark.parametrize(
    ("version", "handler"),
    [
        ("1.29", {"exec": {"command": ["sleep", "5"]}}),
        ("1.30", {"sleep": {"seconds": 5}}),
        ("1.34", {"sleep": {"seconds": 5}}),
    ],
)
def test_cluster_version_chooses_sleep_or_exec(
    run: Any, tmp_path: Path, version: str, handler: dict[str, Any]
) -> None:
    result = run("mutate", "-f", write(tmp_path, POD), "--cluster-version", version)
    assert prestop(result.documents[0]) == handler


def test_cluster_version_from_config_and_flag_precedence(run: Any, tmp_path: Path) -> None:
    config = write(tmp_path, 'clusterVersion: "1.29"\n', "config.yaml")
    path = write(tmp_path, POD)
    from_config = run("mutate", "-f", path, "--config", config).documents[0]
    assert prestop(from_config) == {"exec": {"command": ["sleep", "5"]}}
    flag_wins = run("mutate", "-f", path, "--config", config, "--cluster-version", "1.31")
    assert prestop(flag_wins.documents[0]) == {"sleep": {"seconds": 5}}


def test_config_file_layer(run: Any, tmp_path: Path) -> None:
    config = write(tmp_path, "prestopSeconds: 10\nshutdownSeconds: 50\n", "config.yaml")
    pod = run("mutate", "-f", write(tmp_path, POD), "--config", config).documents[0]
    assert prestop(pod) == {"sleep": {"seconds": 10}}
    assert pod["spec"]["terminationGracePeriodSeconds"] == 60


# --- stderr: warnings, --explain, denials ------------------------------------------------


def test_warnings_go_to_stderr_one_per_line(run: Any, tmp_path: Path) -> None:
    text = POD.replace(
        "  namespace: shop\n",
        "  namespace: shop\n  annotations:\n"
        "    lifecycle-webhook.io/prestop-seconds: soon\n"
        "    lifecycle-webhook.io/sidecar: proxy\n",
    )
    result = run("mutate", "-f", write(tmp_path, text))
    assert result.code == 0
    lines = result.err.splitlines()
    assert len(lines) == 2
    assert all(line.startswith("lifecycle-webhook: ") for line in lines)
    assert "did you mean sidecars?" in lines[1]
    assert prestop(result.documents[0]) == {"sleep": {"seconds": 5}}


def test_explain_comments_the_yaml_and_leaves_the_manifest_alone(run: Any, tmp_path: Path) -> None:
    text = POD.replace(
        "  namespace: shop\n",
        "  namespace: shop\n  annotations:\n    lifecycle-webhook.io/sidecar: proxy\n",
    )
    path = write(tmp_path, SERVICE + "---\n" + text)
    plain = run("mutate", "-f", path)
    explained = run("mutate", "-f", path, "--explain")
    assert explained.code == 0
    assert list(yaml.safe_load_all(explained.out)) == list(yaml.safe_load_all(plain.out))
    assert explained.err == plain.err, "stderr keeps only the warnings"
    assert explained.err.startswith("lifecycle-webhook: unknown annotation")
    service, pod = explained.out.split("---\n")
    comments = [line for line in pod.splitlines() if line.startswith("#")]
    assert service.splitlines()[:2] == [
        "# cluster version 1.37 (clusterVersion auto: the newest this tool knows)",
        "# Service/web in namespace shop: no pod, passed through",
    ]
    assert comments[0] == "# Pod/web in namespace shop: mutated"
    assert any(
        line.startswith("#   setting prestop-seconds = ") and line.endswith(" (default)")
        for line in comments
    )
    assert any(line.startswith("#   grace period: required 30") for line in comments)


def test_explain_goes_to_stderr_with_json_and_patch_output(run: Any, tmp_path: Path) -> None:
    path = write(tmp_path, POD)
    for output in ("json", "patch"):
        plain = run("mutate", "-f", path, "-o", output)
        explained = run("mutate", "-f", path, "-o", output, "--explain")
        assert explained.code == 0
        assert explained.out == plain.out
        lines = explained.err.splitlines()
        assert lines[0].startswith("cluster version 1.")
        assert lines[1] == "Pod/web in namespace shop: mutated"


def test_explain_names_each_template(run: Any, tmp_path: Path) -> None:
    out = run("mutate", "-f", write(tmp_path, DEPLOYMENT), "--explain", "--cluster-version", "1.31")
    assert out.out.splitlines()[:2] == [
        "# cluster version 1.31 (--cluster-version)",
        "# Deployment/web in namespace shop (pod template): mutated",
    ]


def test_strict_denial_exits_1_with_nothing_on_stdout(run: Any, tmp_path: Path) -> None:
    config = write(tmp_path, "strict: true\n", "config.yaml")
    text = (
        POD
        + "---\n"
        + POD.replace(
            "  name: web\n",
            "  name: typo\n  annotations:\n    lifecycle-webhook.io/prestop-secs: '1'\n",
        )
    )
    result = run("mutate", "-f", write(tmp_path, text), "--config", config)
    assert (result.code, result.out) == (1, "")
    denial = result.err.splitlines()[-1]
    assert denial.startswith("lifecycle-webhook mutate: denied: Pod/typo in namespace shop: ")
    assert "prestop-secs" in denial
    explained = run("mutate", "-f", write(tmp_path, text), "--config", config, "--explain")
    assert (explained.code, explained.out) == (1, "")
    assert "Pod/typo in namespace shop: denied" in explained.err.splitlines()


# --- input from stdin, entry points, version ------------------------------------------


def test_stdin(run: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(POD.encode()), "utf-8"))
    result = run("mutate", "-f", "-")
    assert result.code == 0
    assert prestop(result.documents[0]) == {"sleep": {"seconds": 5}}


def test_stdin_error_names_stdin(run: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"a: ["), "utf-8"))
    assert_usage_error(run("mutate", "-f", "-"), "stdin: invalid YAML")


def test_version(run: Any) -> None:
    assert (run("version").code, run("version").out) == (0, f"lifecycle-webhook {__version__}\n")
    flag = run("--version")
    assert (flag.code, flag.out) == (0, f"lifecycle-webhook {__version__}\n")


def test_help_exits_0(run: Any) -> None:
    result = run("mutate", "--help")
    assert result.code == 0
    assert "--namespace-annotation KEY=VALUE" in result.out


def _process(*argv: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        list(argv), input=stdin, capture_output=True, cwd=ROOT, timeout=60, check=False
    )


def test_python_dash_m_webhook() -> None:
    done = _process(sys.executable, "-m", "webhook", "mutate", "-f", "-", stdin=POD.encode())
    assert done.returncode == 0, done.stderr
    assert b"preStop" in done.stdout
    usage = _process(sys.executable, "-m", "webhook", "mutate")
    assert (usage.returncode, usage.stdout) == (2, b"")


def test_console_script() -> None:
    """The installed `lifecycle-webhook` (pyproject [project.scripts]) is this CLI."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["lifecycle-webhook"] == "webhook.cli:main"
    script = Path(sys.executable).with_name("lifecycle-webhook")
    found = str(script) if script.exists() else shutil.which("lifecycle-webhook")
    assert found, "lifecycle-webhook is not installed: run `make venv` (pip install -e .)"
    done = _process(found, "version")
    assert (done.returncode, done.stdout) == (0, f"lifecycle-webhook {__version__}\n".encode())
    assert _process(found, "mutate", "-o", "patch").returncode == 2


def test_mutate_and_version_do_not_import_the_server_stack(tmp_path: Path) -> None:
    """They must start fast: no fastapi, uvicorn or kubernetes client behind them."""
    path = write(tmp_path, POD)
    probe = (
        "import sys\nfrom webhook.cli import main\n"
        f"main(['version']); main(['mutate', '-f', {path!r}, '-o', 'json'])\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & "
        "{'fastapi', 'uvicorn', 'kubernetes', 'starlette', 'cryptography'})\n"
        "print('HEAVY', heavy)\n"
    )
    done = _process(sys.executable, "-c", probe)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().splitlines()[-1] == "HEAVY []"


# --- as a Helm post-renderer -------------------------------------------------------------

CHART_TEMPLATE = """\
apiVersion: v1
kind: Service
metadata:
  name: {{ .Release.Name }}-web
spec:
  ports:
  - port: 80
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}-web
spec:
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
      annotations:
        lifecycle-webhook.io/prestop-seconds: "7"
        {{- if .Values.typo }}
        lifecycle-webhook.io/prestop-secs: "7"
        {{- end }}
    spec:
      containers:
      - name: web
        image: nginx:1.27
"""


@pytest.fixture(scope="module")
def helm() -> Path:
    """The pinned helm from hack/build-test-tools.sh (cached)."""
    from .tools import build_tools

    return build_tools("helm").helm


def _helm_template(
    helm: Path, tmp_path: Path, *post_render_flags: str, values: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`helm template` of a small chart, `lifecycle-webhook mutate -f -` as post-renderer."""
    chart = tmp_path / "demo"
    (chart / "templates").mkdir(parents=True, exist_ok=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: demo\nversion: 0.1.0\n")
    (chart / "templates" / "all.yaml").write_text(CHART_TEMPLATE)
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    for name in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
        env[name] = str(tmp_path / name.lower())
    post_render = ["mutate", "-f", "-", *post_render_flags]
    argv = [str(helm), "template", "demo", str(chart), "--namespace", "shop"]
    if values:
        argv += ["--values", values]
    argv += ["--post-renderer", "lifecycle-webhook"]
    for value in post_render:
        argv += ["--post-renderer-args", value]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120, check=False)


@pytest.mark.chart
def test_helm_post_renderer(helm: Path, tmp_path: Path) -> None:
    done = _helm_template(helm, tmp_path)
    assert done.returncode == 0, done.stderr
    service, deployment = load_documents(done.stdout)
    assert service["kind"] == "Service"
    template = deployment["spec"]["template"]
    assert prestop(template) == {"sleep": {"seconds": 7}}
    assert template["spec"]["terminationGracePeriodSeconds"] == 32


@pytest.mark.chart
def test_helm_post_renderer_denial_fails_the_render(helm: Path, tmp_path: Path) -> None:
    config = write(tmp_path, "strict: true\n", "config.yaml")
    clean = _helm_template(helm, tmp_path, "--config", config)
    assert clean.returncode == 0, clean.stderr
    typo = write(tmp_path, "typo: true\n", "values.yaml")
    denied = _helm_template(helm, tmp_path, "--config", config, values=typo)
    assert denied.returncode != 0
    assert "denied: Deployment/demo-web (pod template)" in denied.stderr
    assert "did you mean prestop-seconds?" in denied.stderr


def test_closed_stdout_exits_1_without_a_traceback() -> None:
    """`mutate ... | head -1`: the reader leaves early; no traceback, a failing exit code."""
    big = ROOT / "tests" / "golden" / "cases" / "big-env.yaml"  # ~200 KB out, > a pipe buffer
    child = subprocess.Popen(
        [sys.executable, "-m", "webhook", "mutate", "-f", str(big), "-o", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    assert child.stdout is not None and child.stderr is not None
    child.stdout.close()
    err = child.stderr.read()
    assert child.wait(timeout=60) == 1
    assert err == b""


# --- hostile input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "|\n      envoy,\n      istio-proxy\n",
        '"app\\n---\\napiVersion: v1\\nkind: ConfigMap\\nmetadata:\\n  name: injected\\n---\\n#"\n',
    ],
    ids=["block-scalar", "document-injection"],
)
def test_explain_comments_cannot_break_or_extend_the_output(
    run: Any, tmp_path: Path, value: str
) -> None:
    from webhook.manifests import load_documents

    text = POD.replace(
        "  namespace: shop\n",
        f"  namespace: shop\n  annotations:\n    lifecycle-webhook.io/sidecars: {value}",
    )
    result = run("mutate", "-f", write(tmp_path, text), "--explain")
    assert result.code == 0
    documents = load_documents(result.out)
    assert [d["kind"] for d in documents] == ["Pod"]


def test_a_container_without_a_string_name_is_left_alone(run: Any, tmp_path: Path) -> None:
    text = POD.replace("  - name: app\n", "  - name: [1]\n", 1)
    result = run("mutate", "-f", write(tmp_path, text), "-o", "json")
    assert result.code == 0, result.err
    assert "lifecycle" not in json.loads(result.out)["spec"]["containers"][0]


def test_a_lone_surrogate_is_read_as_go_reads_it(run: Any, tmp_path: Path) -> None:
    document = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}
    text = json.dumps(document)[:-1] + ', "data": {"k": "a\\ud800b"}}'
    result = run("mutate", "-f", write(tmp_path, text, "in.json"), "-o", "json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["data"]["k"] == "a\ufffdb"


def test_a_yaml_alias_bomb_is_an_input_error(run: Any, tmp_path: Path) -> None:
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x","x"]']
    for level in "bcdefghi":
        previous = chr(ord(level) - 1)
        lines.append(f"{level}: &{level} [{', '.join(['*' + previous] * 10)}]")
    text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata:\n" + "\n".join(
        "  " + line for line in lines
    )
    started = time.monotonic()
    result = run("mutate", "-f", write(tmp_path, text))
    assert (result.code, result.out) == (2, "")
    assert "aliases" in result.err
    assert time.monotonic() - started < 10
