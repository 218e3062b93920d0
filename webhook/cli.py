"""`lifecycle-webhook`: serve, mutate offline, check a cluster, make certificates, version.

Only the chosen command's module is imported: `mutate` and `version` never load fastapi,
uvicorn or the kubernetes client, so they start fast enough for a Helm post-renderer.

Exit codes: 0 success; 1 `mutate` refused a manifest (strict mode: the webhook would deny
it), or `check` found unprotected pods; 2 usage or input error (one line per problem on
stderr, nothing on stdout).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NoReturn

from webhook import __version__

if TYPE_CHECKING:
    from webhook.core.model import Config, Mutation, Settings

PROG = "lifecycle-webhook"

Runner = Callable[[argparse.Namespace], int]


class UsageError(Exception):
    """Bad command line or unusable input: exit 2, the message on stderr, nothing on stdout."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line instead of usage text plus exit."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: error: {message} (see '{self.prog} --help')")


# --- parser ------------------------------------------------------------------------------


def build_parser(command: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The whole command line; only `command`'s adapter module is imported to fill it in.

    `command` is the leading positional words of argv (`["certs", "generate"]`); the other
    subcommands get their help line but no arguments, which they never need here.
    """
    parser = _Parser(
        prog=PROG,
        description="Kubernetes mutating admission webhook for safe Pod shutdown.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    first = command[0] if command else None

    serve = commands.add_parser("serve", help="run the HTTPS admission server")
    if first == "serve":
        from webhook import server

        server.add_serve_arguments(serve)
        serve.set_defaults(run=server.run_serve)

    mutate = commands.add_parser(
        "mutate",
        help="mutate manifests offline, as the webhook would",
        description=(
            "Apply the webhook's mutation to Pods and pod templates in YAML or JSON "
            "manifests, without contacting a cluster. Other documents pass through."
        ),
    )
    if first == "mutate":
        add_mutate_arguments(mutate)
        mutate.set_defaults(run=run_mutate)

    certs = commands.add_parser("certs", help="create or maintain TLS certificates")
    certs_commands = certs.add_subparsers(
        dest="certs_command", metavar="COMMAND", parser_class=_Parser
    )
    generate = certs_commands.add_parser("generate", help="write a CA and a serving pair")
    bootstrap = certs_commands.add_parser(
        "bootstrap", help="keep the in-cluster Secret and caBundle up to date"
    )
    second = command[1] if first == "certs" and len(command) > 1 else None
    if second == "generate":
        from webhook import certs as certs_module

        certs_module.add_certs_generate_arguments(generate)
        generate.set_defaults(run=certs_module.run_certs_generate)
    elif second == "bootstrap":
        from webhook import bootstrap as bootstrap_module

        bootstrap_module.add_certs_bootstrap_arguments(bootstrap)
        bootstrap.set_defaults(run=bootstrap_module.run_certs_bootstrap)
    certs.set_defaults(run=_missing_command(certs))

    check = commands.add_parser(
        "check",
        help="list the pods in scope that missed the webhook (read-only)",
        description=(
            "Judge every pod in the webhook's scope with the pure core, as the server would "
            "mutate it now, and list by owner those still missing what it adds, with the "
            "command that fixes them. Exit 0: none; 1: some; 2: an error."
        ),
    )
    if first == "check":
        from webhook import check as check_module

        check_module.add_check_arguments(check)
        check.set_defaults(run=check_module.run_check)

    version = commands.add_parser("version", help="print the version")
    version.set_defaults(run=_print_version)
    parser.set_defaults(run=_missing_command(parser))
    return parser


def _missing_command(parser: argparse.ArgumentParser) -> Runner:
    def run(args: argparse.Namespace) -> int:
        parser.error("a command is required")

    return run


def _leading_words(argv: Sequence[str]) -> list[str]:
    """The subcommand words: argv up to the first option (no top-level option takes a value)."""
    words = []
    for item in argv:
        if item.startswith("-"):
            break
        words.append(item)
    return words


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit code (the console script exits with it)."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser(_leading_words(arguments))
        try:
            args = parser.parse_args(arguments)
        except SystemExit as exit_request:  # --help and --version
            return exit_request.code if isinstance(exit_request.code, int) else 0
        if args.command == "serve":
            args.serve_argv = arguments  # --workers starts its workers with the same flags
        runner: Runner = args.run
        return runner(args)
    except UsageError as error:
        _print_err(str(error))
        return 2


def _print_version(args: argparse.Namespace) -> int:
    print(f"{PROG} {__version__}")
    return 0


def _print_err(text: str) -> None:
    print(text, file=sys.stderr)


# --- mutate: options -------------------------------------------------------------------


def cluster_version(text: str) -> tuple[int, int]:
    """`1.NN`, read as the config file's clusterVersion is (`auto` is the config's business)."""
    from webhook.core.values import InvalidValue, parse_cluster_version

    try:
        version = parse_cluster_version(text)
    except InvalidValue:
        version = None
    if version is None:
        raise argparse.ArgumentTypeError(f"want 1.NN, such as 1.30; got {text!r}")
    return version


def namespace_annotation(text: str) -> tuple[str, str]:
    """`KEY=VALUE`, KEY a full annotation key (`lifecycle-webhook.io/prestop-seconds`)."""
    from webhook.core.values import is_qualified_name

    key, equals, value = text.partition("=")
    if not equals:
        raise argparse.ArgumentTypeError(f"want KEY=VALUE; got {text!r}")
    if not is_qualified_name(key):
        raise argparse.ArgumentTypeError(
            f"{key!r} is not an annotation key (such as lifecycle-webhook.io/prestop-seconds)"
        )
    return key, value


def namespace_label(text: str) -> tuple[str, str]:
    """`KEY=VALUE`, a label of the pods' Namespace (`istio.io/dataplane-mode=ambient`)."""
    from webhook.core.values import is_label_value, is_qualified_name

    key, equals, value = text.partition("=")
    if not equals:
        raise argparse.ArgumentTypeError(f"want KEY=VALUE; got {text!r}")
    if not is_qualified_name(key):
        raise argparse.ArgumentTypeError(
            f"{key!r} is not a label key (such as istio.io/dataplane-mode)"
        )
    if not is_label_value(value):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a label value (at most 63 of A-Z a-z 0-9 - _ ., "
            "starting and ending with a letter or digit)"
        )
    return key, value


def add_mutate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-f",
        "--filename",
        required=True,
        metavar="FILE",
        help="manifests to mutate: YAML (multi-document) or JSON; '-' reads stdin",
    )
    parser.add_argument(
        "--config", metavar="FILE", help="the webhook's configuration file (YAML or JSON)"
    )
    parser.add_argument(
        "--namespace-annotation",
        action="append",
        type=namespace_annotation,
        default=[],
        metavar="KEY=VALUE",
        help="an annotation of the pods' Namespace (repeatable; the full key, "
        "e.g. lifecycle-webhook.io/prestop-seconds=12)",
    )
    parser.add_argument(
        "--namespace-label",
        action="append",
        type=namespace_label,
        default=[],
        metavar="KEY=VALUE",
        help="a label of the pods' Namespace, for profiles' namespaceSelector (repeatable; "
        "kubernetes.io/metadata.name is always the namespace's name)",
    )
    parser.add_argument(
        "--services",
        action="append",
        default=[],
        metavar="FILE",
        help="Services that exist besides those in the input (YAML or JSON, `List`s too; "
        "other objects are ignored), for profiles' exposure and fromLoadBalancer "
        "(repeatable; an empty file says there are none)",
    )
    parser.add_argument(
        "--cluster-version",
        type=cluster_version,
        metavar="1.NN",
        help="the API server version to assume (default: the config's clusterVersion, "
        "else the newest this tool knows)",
    )
    parser.add_argument(
        "-o",
        "--output",
        choices=("yaml", "json", "patch"),
        default="yaml",
        help="yaml (default), json (one object, or a v1 List for several documents), "
        "or patch (the JSON patch the server would return; a single Pod only)",
    )
    parser.add_argument(
        "--explain",
        action="store_true",
        help="print each decision and where each setting came from: as # comments before "
        "each YAML document, or on stderr with -o json/patch",
    )


SERVICES_HINT = (
    f"{PROG} mutate: no Services in the input: pass --services FILE (an empty file if "
    "there are none)"
)
"""After a warning that exposure is unknown: offline, that means nobody said which exist."""

NamespacedService = tuple[str, dict[str, Any]]
"""A Service's namespace ("" when its manifest names none) and the core's view of it."""


@dataclass(frozen=True, slots=True)
class MutateOptions:
    """What `mutate` needs besides the manifests: the layers above the pod, and the version."""

    config: Config
    namespace_annotations: Mapping[str, str] = field(default_factory=dict)
    namespace_labels: Mapping[str, str] = field(default_factory=dict)
    services: tuple[NamespacedService, ...] | None = None
    """The Services known besides the pods: None when neither --services nor the input
    gave any, which leaves exposure unknown rather than "none"."""
    cluster_version: tuple[int, int] = (1, 0)
    cluster_version_source: str = ""
    """Where the version came from, for --explain."""

    def with_input(self, documents: list[dict[str, Any]]) -> MutateOptions:
        """The Services of the manifests themselves join those of --services."""
        from webhook.manifests import services

        found = [service for document in documents for service in services(document)]
        if not found:
            return self
        return dataclasses.replace(self, services=(*(self.services or ()), *found))

    def settings(self, namespace: str, owner_kind: str | None = None) -> Settings:
        from webhook.core.model import Settings

        labels = dict(self.namespace_labels)
        if namespace:
            labels.setdefault("kubernetes.io/metadata.name", namespace)
        services = None
        if self.services is not None:
            services = [view for where, view in self.services if where == namespace]
        return Settings(
            config=self.config,
            namespace=namespace,
            namespace_annotations=dict(self.namespace_annotations),
            namespace_labels=labels,
            services=services,
            owner_kind=owner_kind,
            cluster_version=self.cluster_version,
        )


def mutate_options(args: argparse.Namespace) -> MutateOptions:
    """Config file, `--namespace-annotation`s and the cluster version; UsageError if unusable."""
    from webhook.core.model import NEWEST_KNOWN_VERSION, Config

    config = Config()
    if args.config is not None:
        config = _load_config(args.config)
    if args.cluster_version:
        version, source = args.cluster_version, "--cluster-version"
    elif config.cluster_version:
        version, source = config.cluster_version, "clusterVersion in --config"
    else:
        version, source = NEWEST_KNOWN_VERSION, "clusterVersion auto: the newest this tool knows"
    if "-" in args.services and args.filename == "-":
        raise UsageError(f"{PROG} mutate: error: -f - and --services - cannot both read stdin")
    services: tuple[NamespacedService, ...] | None = None
    if args.services:
        services = tuple(service for path in args.services for service in _load_services(path))
    return MutateOptions(
        config=config,
        namespace_annotations=dict(args.namespace_annotation),
        namespace_labels=dict(args.namespace_label),
        services=services,
        cluster_version=version,
        cluster_version_source=source,
    )


def _load_services(path: str) -> list[NamespacedService]:
    from webhook.manifests import ManifestError, load_documents, services

    text = _read_input(path, sys.stdin, what="--services ")
    try:
        documents = load_documents(text)
    except ManifestError as error:
        raise UsageError(f"{PROG} mutate: error: --services {_source(path)}: {error}") from None
    return [service for document in documents for service in services(document)]


def _load_config(path: str) -> Config:
    """Read the file exactly as the server reads its mounted config (webhook.config_file)."""
    from webhook.config_file import ConfigFileError, parse_config_bytes

    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise UsageError(
            f"{PROG} mutate: error: cannot read --config {path}: {error.strerror or error}"
        ) from None
    try:
        return parse_config_bytes(path, data)
    except ConfigFileError as error:
        lines = [f"{PROG} mutate: error: --config {path}: {problem}" for problem in error.problems]
        raise UsageError("\n".join(lines)) from None


# --- mutate: documents -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PodReport:
    """One pod the core looked at, for stderr."""

    label: str
    mutation: Mutation


@dataclass(slots=True)
class MutatedManifests:
    documents: list[dict[str, Any]]
    reports: list[PodReport]
    explanations: list[list[str]]
    """Per document, what --explain says about it: each pod's decisions, or that it had none."""
    warnings: list[list[str]]
    """Per document, its pods' warnings."""

    @property
    def denials(self) -> list[PodReport]:
        return [report for report in self.reports if report.mutation.outcome == "denied"]


def mutate_documents(
    documents: list[dict[str, Any]], options: MutateOptions, explain: bool = False
) -> MutatedManifests:
    """Run the core on every pod in `documents`, writing the results back in place."""
    from webhook.core import apply_patch, mutate
    from webhook.manifests import describe, pod_sites

    reports: list[PodReport] = []
    explanations: list[list[str]] = []
    warnings: list[list[str]] = []
    options = options.with_input(documents)
    for document in documents:
        sites = pod_sites(document)
        lines = [] if sites else [f"{describe(document)}: no pod, passed through"]
        texts: list[str] = []
        for site in sites:
            settings = options.settings(site.namespace, site.owner_kind)
            mutation = mutate(site.pod, settings, explain=explain)
            reports.append(PodReport(site.label, mutation))
            lines.append(f"{site.label}: {mutation.outcome}")
            lines.extend(f"  {line}" for line in mutation.explanation)
            texts.extend(warning.text for warning in mutation.warnings)
            if mutation.outcome != "denied" and mutation.ops:
                site.store(apply_patch(site.pod, mutation.ops))
        explanations.append(lines)
        warnings.append(texts)
    return MutatedManifests(documents, reports, explanations, warnings)


def _read_input(filename: str, stdin: IO[str], what: str = "") -> str:
    """The manifest text; UTF-8 (a BOM is dropped), as kubectl reads it."""
    try:
        if filename == "-":
            buffer = getattr(stdin, "buffer", None)
            data = buffer.read() if buffer is not None else stdin.read().encode("utf-8")
        else:
            data = Path(filename).read_bytes()
    except OSError as error:
        raise UsageError(
            f"{PROG} mutate: error: cannot read {what}{filename}: {error.strerror or error}"
        ) from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise UsageError(
            f"{PROG} mutate: error: {what}{_source(filename)} is not UTF-8 text "
            f"(byte {error.start}: {error.reason})"
        ) from None


def _source(filename: str) -> str:
    return "stdin" if filename == "-" else filename


def run_mutate(args: argparse.Namespace) -> int:
    from webhook.manifests import ManifestError, dump_json, dump_yaml, load_documents

    options = mutate_options(args)
    text = _read_input(args.filename, sys.stdin)
    try:
        documents = load_documents(text)
    except ManifestError as error:
        raise UsageError(f"{PROG} mutate: error: {_source(args.filename)}: {error}") from None
    if args.output == "patch":
        _check_single_pod(documents, args.filename)

    result = mutate_documents(documents, options, explain=args.explain)
    explanations = result.explanations
    if args.explain and explanations:
        major, minor = options.cluster_version
        source = f"cluster version {major}.{minor} ({options.cluster_version_source})"
        explanations[0].insert(0, source)
    # The explanation travels with YAML output as comments, so stdout stays a manifest;
    # JSON and patches cannot carry comments, and a denial writes no manifest: stderr then.
    explain_in_output = args.explain and args.output == "yaml" and not result.denials
    stderr = []
    for block, document_warnings in zip(explanations, result.warnings, strict=True):
        if args.explain and not explain_in_output:
            stderr.extend(block)
        stderr.extend(document_warnings)
    if any(w.reason == "services_unavailable" for r in result.reports for w in r.mutation.warnings):
        stderr.append(SERVICES_HINT)
    if result.denials:
        stderr.extend(
            f"{PROG} mutate: denied: {report.label}: {report.mutation.denial}"
            for report in result.denials
        )
    for line in stderr:
        _print_err(line)
    if result.denials:
        return 1

    if args.output == "patch":
        output = json.dumps(result.reports[0].mutation.ops, indent=2, ensure_ascii=False) + "\n"
    elif args.output == "json":
        output = dump_json(result.documents)
    else:
        output = dump_yaml(result.documents, comments=explanations if explain_in_output else None)
    return _write_stdout(output)


def _check_single_pod(documents: list[dict[str, Any]], filename: str) -> None:
    from webhook.manifests import describe

    if len(documents) != 1:
        found = f"{len(documents)} documents"
    elif documents[0].get("kind") != "Pod" or documents[0].get("apiVersion") != "v1":
        found = describe(documents[0])
    else:
        return
    raise UsageError(
        f"{PROG} mutate: error: -o patch needs exactly one v1 Pod; {_source(filename)} has {found}"
    )


def _write_stdout(output: str) -> int:
    try:
        sys.stdout.write(output)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`| head`): exit 1, and point stdout at /dev/null so the
        # interpreter's final flush does not print a traceback (Python docs, signal module).
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return 0
