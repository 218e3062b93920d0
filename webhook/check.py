"""`lifecycle-webhook check`: the pods in scope that missed the webhook, grouped by owner.

Read-only, with the user's own credentials (kubeconfig or in-cluster). Each pod is judged by
the pure core exactly as the server would mutate it now (`webhook.detection.judge`), with its
namespace's live annotations and labels, the Services when a setting needs them, the config
file and the cluster's version. Pods are listed page by page and dropped once judged: only
(owner, reason) counts are kept, so memory does not grow with the cluster.

Exit codes: 0 nothing unprotected; 1 some pods are unprotected; 2 an error (stderr).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import urllib.parse
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from webhook.cluster.api import ApiError, ApiServer, ClusterConfigError
from webhook.cluster.namespaces import EMPTY, NamespaceInfo, namespace_info
from webhook.cluster.services import Services, service_summary
from webhook.cluster.watch import ContinueExpired, list_pages
from webhook.cluster.workloads import middle_metadata
from webhook.core.model import NEWEST_KNOWN_VERSION, Config, Settings
from webhook.core.profiles import annotations_read_services, config_reads_services
from webhook.detection.judge import judge
from webhook.detection.owners import Owner, OwnerResolver, fix_command
from webhook.detection.scope import MODES, NAME_LABEL, Scope, ScopeError, chart_scope
from webhook.detection.scope import configuration_scope as read_configuration_scope

PROG = "lifecycle-webhook check"
DEFAULT_PAGE_SIZE = 500
"""Pods per list page: ~500 pods of a few KB each parsed at a time, a few MB at most."""
TIMEOUT = 30.0
LIST_RESTARTS = 3
FINISHED = "status.phase!=Succeeded,status.phase!=Failed"
"""Completed pods never shut down again: the API server leaves them out of the list."""
WEBHOOK_CONFIGURATIONS = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"


class CheckError(Exception):
    """Exit 2 with this message."""


class ListRestart(Exception):
    """The continue token expired (410) mid-list: judge everything again."""


@dataclass(slots=True)
class Report:
    """What is kept of a run: counts by (owner, reason), never a pod."""

    checked: int = 0
    """Pods in scope that were judged."""
    unprotected: Counter[tuple[Owner, str]] = field(default_factory=Counter)

    @property
    def unprotected_pods(self) -> int:
        return sum(self.unprotected.values())

    def rows(self) -> list[dict[str, Any]]:
        return [
            {
                "namespace": owner.namespace,
                "kind": owner.kind,
                "name": owner.name,
                "reason": reason,
                "pods": count,
                "fix": fix_command(owner),
            }
            for (owner, reason), count in sorted(self.unprotected.items())
        ]

    def document(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "unprotected": self.unprotected_pods,
            "owners": self.rows(),
        }


class Checker:
    """One run against one API server: namespaces first (few), then the pods page by page."""

    def __init__(
        self,
        api: ApiServer,
        scope: Scope,
        config: Config,
        cluster_version: tuple[int, int],
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> None:
        self.api = api
        self.scope = scope
        self.config = config
        self.cluster_version = cluster_version
        self.page_size = page_size
        self.config_reads_services = config_reads_services(config)
        self.namespaces: dict[str, NamespaceInfo] = {}
        self.services: dict[str, Services | None] = {}
        self.owners = OwnerResolver(
            lambda kind, namespace, name: middle_metadata(self.api, kind, namespace, name, TIMEOUT)
        )

    def run(self, namespace: str | None = None) -> Report:
        for _ in range(LIST_RESTARTS):
            try:
                return self._run(namespace)
            except ListRestart:
                continue
        raise CheckError(f"listing pods: the continue token expired {LIST_RESTARTS} times")

    def _run(self, namespace: str | None) -> Report:
        report = Report()
        if namespace is not None:
            self.namespaces[namespace] = self._read_namespace(namespace)
            path = f"/api/v1/namespaces/{_quote(namespace)}/pods"
        else:
            for item in self._pages("/api/v1/namespaces", {}):
                name = (item.get("metadata") or {}).get("name")
                if isinstance(name, str):
                    self.namespaces[name] = namespace_info(item)
            path = "/api/v1/pods"
        in_scope = {
            name
            for name, info in self.namespaces.items()
            if self.scope.namespace_in_scope(_labels(name, info))
        }
        for pod in self._pages(path, {"fieldSelector": FINISHED}):
            self._judge(pod, in_scope, report)
        return report

    def _judge(self, pod: dict[str, Any], in_scope: set[str], report: Report) -> None:
        metadata = pod.get("metadata") or {}
        namespace = str(metadata.get("namespace") or "")
        if namespace not in self.namespaces:  # created after the namespaces were listed
            self.namespaces[namespace] = self._read_namespace(namespace)
            if self.scope.namespace_in_scope(_labels(namespace, self.namespaces[namespace])):
                in_scope.add(namespace)
        if namespace not in in_scope:
            return
        info = self.namespaces[namespace]
        labels = _labels(namespace, info)
        if not self.scope.pod_in_scope(labels, pod):
            return
        services = None
        if self.config_reads_services or annotations_read_services(
            info.annotations, metadata.get("annotations")
        ):
            services = self._services_in(namespace)
        settings = Settings(
            config=self.config,
            namespace=namespace,
            namespace_annotations=info.annotations,
            namespace_labels=labels,
            services=services,
            cluster_version=self.cluster_version,
        )
        verdict = judge(pod, settings)
        report.checked += 1
        if verdict.unprotected and verdict.reason is not None:
            report.unprotected[(self.owners(pod), verdict.reason)] += 1

    def _pages(self, path: str, query: Mapping[str, str]) -> Iterator[dict[str, Any]]:
        """Every item of a paged list; only one page is held at a time."""
        pages = list_pages(lambda q: self.api.get(path, TIMEOUT, q), query, self.page_size)
        try:
            for page in pages:
                if not isinstance(page, dict):
                    raise CheckError(f"GET {path}: the API server sent no list")
                items = page.pop("items", None) or []
                del page
                while items:
                    item = items.pop()  # each pod is freed as soon as it is judged
                    if isinstance(item, dict):
                        yield item
        except ContinueExpired as exc:
            raise ListRestart from exc

    def _read_namespace(self, name: str) -> NamespaceInfo:
        """One namespace, by a list with a field selector: `list` is the only verb needed."""
        query = {"fieldSelector": f"metadata.name={name}"}
        for item in self._pages("/api/v1/namespaces", query):
            return namespace_info(item)
        return EMPTY

    def _services_in(self, namespace: str) -> Services | None:
        if namespace not in self.services:
            listed = self.api.get(f"/api/v1/namespaces/{_quote(namespace)}/services", TIMEOUT)
            items = listed.get("items") if isinstance(listed, dict) else None
            found = [service_summary(item) for item in items or [] if isinstance(item, dict)]
            self.services[namespace] = tuple(
                sorted((s for s in found if s is not None), key=lambda s: s["name"])
            )
        return self.services[namespace]


def _quote(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def _labels(namespace: str, info: NamespaceInfo) -> Mapping[str, str]:
    """The namespace's labels; the API server always sets its name label, a test fake may not."""
    if NAME_LABEL in info.labels:
        return info.labels
    return {**info.labels, NAME_LABEL: namespace}


# --- output ------------------------------------------------------------------------------


def render(report: Report, output: str) -> str:
    document = report.document()
    if output == "json":
        return json.dumps(document, indent=2) + "\n"
    if output == "yaml":
        import yaml

        return str(yaml.safe_dump(document, sort_keys=False))
    return render_table(report)


def render_table(report: Report) -> str:
    rows = report.rows()
    if not rows:
        return f"no unprotected pods ({report.checked} pods in scope checked)\n"
    header = ("NAMESPACE", "OWNER", "PODS", "REASON", "FIX")
    cells = [
        (row["namespace"], f"{row['kind'].lower()}/{row['name']}", str(row["pods"]), row["reason"])
        for row in rows
    ]
    widths = [max(len(line[i]) for line in [header[:4], *cells]) for i in range(4)]
    fixes = [header[4], *(row["fix"] for row in rows)]
    lines = [
        "   ".join(text.ljust(width) for text, width in zip(line, widths, strict=True))
        + "   "
        + fix
        for line, fix in zip([header[:4], *cells], fixes, strict=True)
    ]
    lines.append(
        f"{report.unprotected_pods} of {report.checked} pods in scope are unprotected "
        f"({len(rows)} owners)"
    )
    return "\n".join(lines) + "\n"


# --- command line ------------------------------------------------------------------------


def add_check_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kubeconfig",
        metavar="FILE",
        help="kubeconfig to use (default: in-cluster, else $KUBECONFIG, else ~/.kube/config)",
    )
    parser.add_argument(
        "--webhook-configuration",
        metavar="NAME",
        help="read the scope (namespaceSelector, objectSelector) from this live "
        "MutatingWebhookConfiguration instead of --mode and --excluded-namespace",
    )
    parser.add_argument(
        "--mode",
        choices=MODES,
        help="the chart's mode, when --webhook-configuration is not given (default: namespace)",
    )
    parser.add_argument(
        "--excluded-namespace",
        action="append",
        default=[],
        metavar="NS",
        help="a namespace the chart excludes (its excludedNamespaces; repeatable)",
    )
    parser.add_argument(
        "--webhook-namespace",
        metavar="NS",
        help="the namespace the webhook runs in (the chart's release namespace), always "
        "excluded; read from the configuration's Service with --webhook-configuration",
    )
    parser.add_argument(
        "--config", metavar="FILE", help="the webhook's configuration file (YAML or JSON)"
    )
    parser.add_argument(
        "-n", "--namespace", metavar="NS", help="check only this namespace (default: all)"
    )
    parser.add_argument(
        "-o",
        "--output",
        choices=("table", "json", "yaml"),
        default="table",
        help="table (default), json or yaml",
    )
    parser.add_argument(
        "--page-size",
        type=_page_size,
        default=DEFAULT_PAGE_SIZE,
        metavar="N",
        help=f"pods per list page (default {DEFAULT_PAGE_SIZE})",
    )


def _page_size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 10_000:
        raise argparse.ArgumentTypeError(f"want a number from 1 to 10000; got {text!r}")
    return value


def run_check(args: argparse.Namespace) -> int:
    try:
        report = check(args)
    except CheckError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    except ApiError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    sys.stdout.write(render(report, args.output))
    sys.stdout.flush()
    return 1 if report.unprotected_pods else 0


def check(args: argparse.Namespace) -> Report:
    """The whole run for parsed arguments; CheckError or ApiError when it cannot finish."""
    from webhook.cluster.api import connect, detect_cluster_version
    from webhook.config_file import with_namespace_excluded

    config = _load_config(args.config) if args.config else Config()
    if args.webhook_configuration and (args.mode or args.excluded_namespace):
        raise CheckError(
            "--webhook-configuration reads the scope: drop --mode and --excluded-namespace"
        )
    try:
        api = connect(args.kubeconfig)
    except ClusterConfigError as error:
        raise CheckError(str(error)) from None
    if api is None:
        raise CheckError(
            "no cluster configured: pass --kubeconfig, set $KUBECONFIG or run in a pod"
        )
    if args.webhook_configuration:
        scope = _configuration_scope(api, args.webhook_configuration)
    else:
        scope = chart_scope(
            args.mode or "namespace",
            [*args.excluded_namespace, *config.excluded_namespaces],
            args.webhook_namespace,
        )
    namespace = args.webhook_namespace or scope.webhook_namespace
    config = with_namespace_excluded(config, namespace)
    if args.excluded_namespace:
        config = dataclasses.replace(
            config,
            excluded_namespaces=config.excluded_namespaces | frozenset(args.excluded_namespace),
        )
    version = config.cluster_version or detect_cluster_version(api) or NEWEST_KNOWN_VERSION
    return Checker(api, scope, config, version, args.page_size).run(args.namespace)


def _configuration_scope(api: ApiServer, name: str) -> Scope:
    try:
        configuration = api.get(f"{WEBHOOK_CONFIGURATIONS}/{_quote(name)}", TIMEOUT)
    except ApiError as error:
        if error.status == 404:
            raise CheckError(f"MutatingWebhookConfiguration {name!r} not found") from None
        raise
    try:
        return read_configuration_scope(configuration)
    except ScopeError as error:
        raise CheckError(f"MutatingWebhookConfiguration {name!r}: {error}") from None


def _load_config(path: str) -> Config:
    from webhook.config_file import ConfigFileError, parse_config_bytes

    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise CheckError(f"cannot read --config {path}: {error.strerror or error}") from None
    try:
        return parse_config_bytes(path, data)
    except ConfigFileError as error:
        raise CheckError(f"--config {path}: " + "; ".join(error.problems)) from None
