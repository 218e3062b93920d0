"""The benchmark corpus: three Pod CREATE AdmissionReviews (v1), built here, never downloaded.

Shapes follow what the API server really sends a mutating webhook once defaulting and the
ServiceAccount admission plugin have run (research anchors-performance section 5):

- S (~3 KB): `kubectl apply` of a one-container nginx Pod, with the last-applied annotation
  and the client-side-apply managedFields entry.
- M (~9 KB): a Pod as the ReplicaSet controller creates it (generateName, ownerReferences,
  pod-template-hash) after an Istio-style injection: proxy sidecar, two init containers,
  probes, 21 app env vars, projected SA token volume.
- L (~84 KB): Istio's "many env vars" stress shape, one container with 2,000 variables.

Everything is deterministic (fixed uids and timestamps) so two runs post identical bytes.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Any

import orjson

NAMES = ("S", "M", "L")
CREATED = "2026-01-15T09:30:00Z"
SA_TOKEN_VOLUME = "kube-api-access-7xk2p"  # noqa: S105 - a volume name, not a secret
SA_MOUNT = {
    "name": SA_TOKEN_VOLUME,
    "readOnly": True,
    "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
}

Json = dict[str, Any]


def _gvk(kind: str) -> Json:
    return {"group": "", "version": "v1", "kind": kind}


def review(pod: Json, uid: str, user: Json, field_manager: str | None = None) -> Json:
    """Wrap a Pod the way kube-apiserver does for a CREATE (request.name is "" for generateName)."""
    options: Json = {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"}
    if field_manager:
        options["fieldManager"] = field_manager
    request: Json = {
        "uid": uid,
        "kind": _gvk("Pod"),
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "requestKind": _gvk("Pod"),
        "requestResource": {"group": "", "version": "v1", "resource": "pods"},
        "name": pod["metadata"].get("name", ""),
        "namespace": pod["metadata"]["namespace"],
        "operation": "CREATE",
        "userInfo": user,
        "object": pod,
        "oldObject": None,
        "dryRun": False,
        "options": options,
    }
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def _sa_token_volume() -> Json:
    """The projected volume the ServiceAccount admission plugin adds to every Pod."""
    return {
        "name": SA_TOKEN_VOLUME,
        "projected": {
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {
                    "configMap": {
                        "name": "kube-root-ca.crt",
                        "items": [{"key": "ca.crt", "path": "ca.crt"}],
                    }
                },
                {
                    "downwardAPI": {
                        "items": [
                            {
                                "path": "namespace",
                                "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"},
                            }
                        ]
                    }
                },
            ],
            "defaultMode": 420,
        },
    }


def _container_defaults(container: Json) -> Json:
    """Fields API-server defaulting fills in on every container."""
    container.setdefault("resources", {})
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    container.setdefault("imagePullPolicy", "IfNotPresent")
    return container


def _pod_spec_defaults(spec: Json) -> Json:
    spec.update(
        {
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "default",
            "serviceAccount": "default",
            "schedulerName": "default-scheduler",
            "tolerations": [
                {
                    "key": "node.kubernetes.io/not-ready",
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": 300,
                },
                {
                    "key": "node.kubernetes.io/unreachable",
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": 300,
                },
            ],
            "priority": 0,
            "enableServiceLinks": True,
            "preemptionPolicy": "PreemptLowerPriority",
        }
    )
    spec.setdefault("securityContext", {})
    return spec


def _http_probe(path: str, port: int | str, period: int, threshold: int = 3) -> Json:
    return {
        "httpGet": {"path": path, "port": port, "scheme": "HTTP"},
        "timeoutSeconds": 1,
        "periodSeconds": period,
        "successThreshold": 1,
        "failureThreshold": threshold,
    }


def small() -> Json:
    """`kubectl apply -f nginx.yaml`: one nginx container, client-side apply metadata."""
    applied = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "annotations": {},
            "labels": {"app": "nginx", "env": "test"},
            "name": "nginx",
            "namespace": "default",
        },
        "spec": {
            "containers": [
                {
                    "image": "nginx:1.27.3",
                    "imagePullPolicy": "IfNotPresent",
                    "name": "nginx",
                }
            ],
            "tolerations": [{"effect": "NoSchedule", "key": "example-key", "operator": "Exists"}],
        },
    }
    pod: Json = {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "name": "nginx",
            "namespace": "default",
            "uid": "6f1d2c3b-4a5e-4f60-8b7c-9d0e1f2a3b4c",
            "creationTimestamp": CREATED,
            "labels": {"app": "nginx", "env": "test"},
            "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": orjson.dumps(applied).decode()
                + "\n"
            },
            "managedFields": [
                {
                    "manager": "kubectl-client-side-apply",
                    "operation": "Update",
                    "apiVersion": "v1",
                    "time": CREATED,
                    "fieldsType": "FieldsV1",
                    "fieldsV1": {
                        "f:metadata": {
                            "f:annotations": {
                                ".": {},
                                "f:kubectl.kubernetes.io/last-applied-configuration": {},
                            },
                            "f:labels": {".": {}, "f:app": {}, "f:env": {}},
                        },
                        "f:spec": {
                            "f:containers": {
                                'k:{"name":"nginx"}': {
                                    ".": {},
                                    "f:image": {},
                                    "f:imagePullPolicy": {},
                                    "f:name": {},
                                    "f:resources": {},
                                    "f:terminationMessagePath": {},
                                    "f:terminationMessagePolicy": {},
                                }
                            },
                            "f:dnsPolicy": {},
                            "f:enableServiceLinks": {},
                            "f:restartPolicy": {},
                            "f:schedulerName": {},
                            "f:securityContext": {},
                            "f:terminationGracePeriodSeconds": {},
                            "f:tolerations": {},
                        },
                    },
                }
            ],
        },
        "spec": {
            "volumes": [_sa_token_volume()],
            "containers": [
                _container_defaults(
                    {
                        "name": "nginx",
                        "image": "nginx:1.27.3",
                        "volumeMounts": [dict(SA_MOUNT)],
                    }
                )
            ],
        },
        "status": {"phase": "Pending", "qosClass": "BestEffort"},
    }
    _pod_spec_defaults(pod["spec"])
    pod["spec"]["tolerations"].insert(
        0, {"key": "example-key", "operator": "Exists", "effect": "NoSchedule"}
    )
    user = {
        "username": "kubernetes-admin",
        "groups": ["kubeadm:cluster-admins", "system:authenticated"],
    }
    return review(pod, "705ab4f5-6393-11e8-b7cc-42010a800001", user, "kubectl-client-side-apply")


def _istio_proxy() -> Json:
    field_env = {
        "POD_NAME": "metadata.name",
        "POD_NAMESPACE": "metadata.namespace",
        "INSTANCE_IP": "status.podIP",
        "SERVICE_ACCOUNT": "spec.serviceAccountName",
        "HOST_IP": "status.hostIP",
    }
    env: list[Json] = [
        {"name": "PILOT_CERT_PROVIDER", "value": "istiod"},
        {"name": "CA_ADDR", "value": "istiod.istio-system.svc:15012"},
    ]
    env += [
        {"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}}
        for name, path in field_env.items()
    ]
    env += [
        {"name": "PROXY_CONFIG", "value": '{"proxyMetadata":{"DNS_AGENT":""}}\n'},
        {
            "name": "ISTIO_META_POD_PORTS",
            "value": '[\n    {"name":"http","containerPort":8080,"protocol":"TCP"}\n]',
        },
        {"name": "ISTIO_META_APP_CONTAINERS", "value": "frontend"},
        {"name": "ISTIO_META_CLUSTER_ID", "value": "Kubernetes"},
        {"name": "ISTIO_META_INTERCEPTION_MODE", "value": "REDIRECT"},
        {"name": "ISTIO_META_WORKLOAD_NAME", "value": "frontend"},
        {
            "name": "ISTIO_META_OWNER",
            "value": "kubernetes://apis/apps/v1/namespaces/shop/deployments/frontend",
        },
        {"name": "ISTIO_META_MESH_ID", "value": "cluster.local"},
    ]
    return _container_defaults(
        {
            "name": "istio-proxy",
            "image": "docker.io/istio/proxyv2:1.24.2",
            "args": [
                "proxy",
                "sidecar",
                "--domain",
                "$(POD_NAMESPACE).svc.cluster.local",
                "--proxyLogLevel=warning",
                "--proxyComponentLogLevel=misc:error",
                "--log_output_level=default:info",
            ],
            "ports": [
                {"name": "http-envoy-prom", "containerPort": 15090, "protocol": "TCP"},
            ],
            "env": env,
            "resources": {
                "limits": {"cpu": "2", "memory": "1Gi"},
                "requests": {"cpu": "100m", "memory": "128Mi"},
            },
            "volumeMounts": [
                {"name": "istiod-ca-cert", "mountPath": "/var/run/secrets/istio"},
                {"name": "istio-data", "mountPath": "/var/lib/istio/data"},
                {"name": "istio-envoy", "mountPath": "/etc/istio/proxy"},
                {"name": "istio-token", "mountPath": "/var/run/secrets/tokens"},
                {"name": "istio-podinfo", "mountPath": "/etc/istio/pod"},
                dict(SA_MOUNT),
            ],
            "readinessProbe": _http_probe("/healthz/ready", 15021, period=15, threshold=4),
            "securityContext": {
                "capabilities": {"drop": ["ALL"]},
                "privileged": False,
                "runAsUser": 1337,
                "runAsGroup": 1337,
                "runAsNonRoot": True,
                "readOnlyRootFilesystem": True,
                "allowPrivilegeEscalation": False,
            },
        }
    )


def _istio_init() -> Json:
    return _container_defaults(
        {
            "name": "istio-init",
            "image": "docker.io/istio/proxyv2:1.24.2",
            "args": [
                "istio-iptables",
                "-p",
                "15001",
                "-z",
                "15006",
                "-u",
                "1337",
                "-m",
                "REDIRECT",
                "-i",
                "*",
                "-x",
                "",
                "-b",
                "*",
                "-d",
                "15090,15021,15020",
            ],
            "resources": {
                "limits": {"cpu": "2", "memory": "1Gi"},
                "requests": {"cpu": "100m", "memory": "128Mi"},
            },
            "volumeMounts": [dict(SA_MOUNT)],
            "securityContext": {
                "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
                "privileged": False,
                "runAsUser": 0,
                "runAsGroup": 0,
                "runAsNonRoot": False,
                "readOnlyRootFilesystem": False,
                "allowPrivilegeEscalation": False,
            },
        }
    )


def medium() -> Json:
    """A ReplicaSet-created, Istio-injected frontend Pod."""
    app_env: list[Json] = [
        {"name": f"APP_SETTING_{i:02d}", "value": f"setting-{i:02d}"} for i in range(20)
    ]
    app_env.append(
        {
            "name": "DB_PASSWORD",
            "valueFrom": {"secretKeyRef": {"name": "frontend-db", "key": "password"}},
        }
    )
    app = _container_defaults(
        {
            "name": "frontend",
            "image": "registry.example.com/shop/frontend:2.14.1",
            "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
            "env": app_env,
            "resources": {
                "limits": {"memory": "512Mi"},
                "requests": {"cpu": "250m", "memory": "256Mi"},
            },
            "volumeMounts": [{"name": "cache", "mountPath": "/var/cache/frontend"}, dict(SA_MOUNT)],
            "livenessProbe": _http_probe("/app-health/frontend/livez", 15020, period=10),
            "readinessProbe": _http_probe("/app-health/frontend/readyz", 15020, period=5),
        }
    )
    migrate = _container_defaults(
        {
            "name": "migrate-db",
            "image": "registry.example.com/shop/frontend:2.14.1",
            "command": ["/app/bin/migrate", "--wait-for-db=60s"],
            "volumeMounts": [dict(SA_MOUNT)],
        }
    )
    template_hash = "7d9c8b6f5"
    status_annotation = orjson.dumps(
        {
            "initContainers": ["istio-init"],
            "containers": ["istio-proxy"],
            "volumes": [
                "istio-envoy",
                "istio-data",
                "istio-podinfo",
                "istio-token",
                "istiod-ca-cert",
            ],
            "imagePullSecrets": None,
            "revision": "default",
        }
    ).decode()
    pod: Json = {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "generateName": f"frontend-{template_hash}-",
            "namespace": "shop",
            "creationTimestamp": None,
            "labels": {
                "app": "frontend",
                "pod-template-hash": template_hash,
                "security.istio.io/tlsMode": "istio",
                "service.istio.io/canonical-name": "frontend",
                "service.istio.io/canonical-revision": "2.14.1",
                "version": "2.14.1",
            },
            "annotations": {
                "kubectl.kubernetes.io/default-container": "frontend",
                "prometheus.io/path": "/stats/prometheus",
                "prometheus.io/port": "15020",
                "prometheus.io/scrape": "true",
                "sidecar.istio.io/status": status_annotation,
                "istio.io/rev": "default",
            },
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": f"frontend-{template_hash}",
                    "uid": "9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
            "managedFields": [
                {
                    "manager": "kube-controller-manager",
                    "operation": "Update",
                    "apiVersion": "v1",
                    "time": CREATED,
                    "fieldsType": "FieldsV1",
                    "fieldsV1": {
                        "f:metadata": {
                            "f:generateName": {},
                            "f:labels": {
                                ".": {},
                                "f:app": {},
                                "f:pod-template-hash": {},
                                "f:version": {},
                            },
                            "f:ownerReferences": {
                                ".": {},
                                'k:{"uid":"9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d"}': {},
                            },
                        },
                        "f:spec": {
                            "f:containers": {'k:{"name":"frontend"}': {".": {}}},
                            "f:dnsPolicy": {},
                            "f:enableServiceLinks": {},
                            "f:initContainers": {'k:{"name":"migrate-db"}': {".": {}}},
                            "f:restartPolicy": {},
                            "f:schedulerName": {},
                            "f:securityContext": {},
                            "f:terminationGracePeriodSeconds": {},
                            "f:volumes": {'k:{"name":"cache"}': {".": {}}},
                        },
                    },
                }
            ],
        },
        "spec": {
            "volumes": [
                {"name": "istio-envoy", "emptyDir": {"medium": "Memory"}},
                {"name": "istio-data", "emptyDir": {}},
                {
                    "name": "istio-podinfo",
                    "downwardAPI": {
                        "items": [
                            {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                            {
                                "path": "annotations",
                                "fieldRef": {"fieldPath": "metadata.annotations"},
                            },
                        ],
                        "defaultMode": 420,
                    },
                },
                {
                    "name": "istio-token",
                    "projected": {
                        "sources": [
                            {
                                "serviceAccountToken": {
                                    "audience": "istio-ca",
                                    "expirationSeconds": 43200,
                                    "path": "istio-token",
                                }
                            }
                        ],
                        "defaultMode": 420,
                    },
                },
                {
                    "name": "istiod-ca-cert",
                    "configMap": {"name": "istio-ca-root-cert", "defaultMode": 420},
                },
                {"name": "cache", "emptyDir": {"sizeLimit": "256Mi"}},
                _sa_token_volume(),
            ],
            "initContainers": [_istio_init(), migrate],
            "containers": [app, _istio_proxy()],
            "securityContext": {"fsGroup": 1337},
        },
        "status": {"phase": "Pending", "qosClass": "Burstable"},
    }
    _pod_spec_defaults(pod["spec"])
    return review(pod, "705ab4f5-6393-11e8-b7cc-42010a800002", _replicaset_controller())


def _replicaset_controller() -> Json:
    return {
        "username": "system:serviceaccount:kube-system:replicaset-controller",
        "uid": "b1f3c3a4-2d5e-4f60-8a7b-9c0d1e2f3a4b",
        "groups": [
            "system:serviceaccounts",
            "system:serviceaccounts:kube-system",
            "system:authenticated",
        ],
    }


def large(env_vars: int = 2000) -> Json:
    """Istio's BenchmarkInjection "many env vars" Pod, as a ReplicaSet would create it."""
    template_hash = "5f6d7c8b9"
    pod: Json = {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "generateName": f"foo-{template_hash}-",
            "namespace": "bar",
            "creationTimestamp": None,
            "labels": {"app": "foo", "pod-template-hash": template_hash},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": f"foo-{template_hash}",
                    "uid": "4b3a2918-0706-4f5e-8d4c-3b2a19080706",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
            "managedFields": [
                {
                    "manager": "kube-controller-manager",
                    "operation": "Update",
                    "apiVersion": "v1",
                    "time": CREATED,
                    "fieldsType": "FieldsV1",
                    "fieldsV1": {
                        "f:metadata": {
                            "f:generateName": {},
                            "f:labels": {".": {}, "f:app": {}, "f:pod-template-hash": {}},
                            "f:ownerReferences": {".": {}},
                        },
                        "f:spec": {
                            "f:containers": {'k:{"name":"app"}': {".": {}}},
                            "f:dnsPolicy": {},
                            "f:enableServiceLinks": {},
                            "f:restartPolicy": {},
                            "f:schedulerName": {},
                            "f:securityContext": {},
                            "f:terminationGracePeriodSeconds": {},
                        },
                    },
                }
            ],
        },
        "spec": {
            "volumes": [_sa_token_volume()],
            "containers": [
                _container_defaults(
                    {
                        "name": "app",
                        "image": "fake",
                        "env": [
                            {"name": f"something-{i}", "value": "blah"} for i in range(env_vars)
                        ],
                        "volumeMounts": [dict(SA_MOUNT)],
                    }
                )
            ],
        },
        "status": {"phase": "Pending", "qosClass": "BestEffort"},
    }
    _pod_spec_defaults(pod["spec"])
    return review(pod, "705ab4f5-6393-11e8-b7cc-42010a800003", _replicaset_controller())


def build() -> dict[str, Json]:
    """The three reviews by name; fresh objects on every call (callers may mutate them)."""
    return copy.deepcopy({"S": small(), "M": medium(), "L": large()})


def encode(review_: Json) -> bytes:
    """Minified, as the API server sends it."""
    return orjson.dumps(review_)


def write(directory: Path) -> dict[str, Path]:
    """Write `ar_S.json`, `ar_M.json`, `ar_L.json`; return their paths by name."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, body in build().items():
        path = directory / f"ar_{name}.json"
        path.write_bytes(encode(body))
        paths[name] = path
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.corpus", description="write the corpus")
    parser.add_argument("directory", type=Path)
    args = parser.parse_args()
    for name, path in write(args.directory).items():
        print(f"{name} {path} {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
