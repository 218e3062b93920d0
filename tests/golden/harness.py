"""Golden cases: discovery, their `# flags:` line, and the expected files, computed by the core.

A case is `cases/<name>.yaml` (real manifests; the optional first line `# flags: ...` holds
`mutate` flags, paths relative to the repository root). Its expected files are
`<name>.out.yaml` (what `mutate` prints) or, when the core denies a pod (strict mode),
`<name>.denied.txt` (`<pod>: <denial>` per line); and always `<name>.warnings.txt`.
"""

from __future__ import annotations

import copy
import difflib
import os
import shlex
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from webhook import cli
from webhook.core import apply_patch, mutate
from webhook.core.model import Mutation, Settings
from webhook.manifests import PodSite, dump_yaml, load_documents, pod_sites

ROOT = Path(__file__).resolve().parents[2]
CASES = Path(__file__).resolve().parent / "cases"
OUT, WARNINGS, DENIED = ".out.yaml", ".warnings.txt", ".denied.txt"
FLAGS_PREFIX = "# flags:"


@dataclass(frozen=True)
class Case:
    name: str
    path: Path

    def output(self, suffix: str) -> Path:
        return CASES / f"{self.name}{suffix}"

    @property
    def flags(self) -> list[str]:
        first = self.path.read_text(encoding="utf-8").split("\n", 1)[0]
        if not first.startswith(FLAGS_PREFIX):
            return []
        return _rooted(shlex.split(first[len(FLAGS_PREFIX) :]))

    @property
    def argv(self) -> list[str]:
        """The `lifecycle-webhook` arguments that reproduce this case."""
        return ["mutate", "-f", str(self.path), *self.flags]


_PATH_FLAGS = ("--config", "--services")


def _rooted(flags: list[str]) -> list[str]:
    """`--config` and `--services` paths are written relative to the repository root; make
    them absolute."""
    out = list(flags)
    for index, flag in enumerate(out):
        name, equals, value = flag.partition("=")
        if flag in _PATH_FLAGS and index + 1 < len(out):
            out[index + 1] = str(ROOT / out[index + 1])
        elif equals and name in _PATH_FLAGS:
            out[index] = f"{name}={ROOT / value}"
    return out


def is_input(path: Path) -> bool:
    return path.suffix == ".yaml" and not path.name.endswith(OUT)


def discover() -> list[Case]:
    return [Case(path.stem, path) for path in sorted(CASES.iterdir()) if is_input(path)]


def options(case: Case) -> cli.MutateOptions:
    """The case's settings, read by the CLI's own parser from its `# flags:` line."""
    args = cli.build_parser(["mutate"]).parse_args(case.argv)
    return cli.mutate_options(args)


@dataclass
class SiteRun:
    site: PodSite
    settings: Settings
    mutation: Mutation
    before: dict[str, Any]
    after: dict[str, Any]


@dataclass
class CoreRun:
    documents: list[dict[str, Any]]
    sites: list[SiteRun]

    @property
    def denials(self) -> list[str]:
        return [
            f"{run.site.label}: {run.mutation.denial}"
            for run in self.sites
            if run.mutation.outcome == "denied"
        ]

    @property
    def warnings(self) -> list[str]:
        return [warning.text for run in self.sites for warning in run.mutation.warnings]

    def expected_files(self) -> dict[str, str]:
        files = {WARNINGS: _lines(self.warnings)}
        if self.denials:
            files[DENIED] = _lines(self.denials)
        else:
            files[OUT] = dump_yaml(self.documents)
        return files


def _lines(lines: list[str]) -> str:
    return "".join(f"{line}\n" for line in lines)


def run_core(case: Case) -> CoreRun:
    """Every pod of the case through `mutate` + `apply_patch`, written back into its document."""
    documents = load_documents(case.path.read_text(encoding="utf-8"))
    case_options = options(case).with_input(documents)
    runs: list[SiteRun] = []
    for document in documents:
        for site in pod_sites(document):
            settings = case_options.settings(site.namespace, site.owner_kind)
            mutation = mutate(site.pod, settings)
            before = copy.deepcopy(site.pod)
            after = before
            if mutation.outcome != "denied" and mutation.ops:
                after = apply_patch(before, mutation.ops)
            runs.append(SiteRun(site, settings, mutation, before, after))
            site.store(after)
    return CoreRun(documents, runs)


# --- a template's pod as the API server receives it ---------------------------------------

TEMPLATE_HASH = "5d8f7c9b6"
CRONJOB_MINUTES = "29412345"
_CONTROLLERS = {
    "Deployment": ("apps/v1", "ReplicaSet", "-" + TEMPLATE_HASH),
    "ReplicaSet": ("apps/v1", "ReplicaSet", ""),
    "StatefulSet": ("apps/v1", "StatefulSet", ""),
    "DaemonSet": ("apps/v1", "DaemonSet", ""),
    "Job": ("batch/v1", "Job", ""),
    "CronJob": ("batch/v1", "Job", "-" + CRONJOB_MINUTES),
}


def as_created(site: PodSite) -> dict[str, Any]:
    """A template's pod as its controller creates it: the controller's ownerReference (a
    Deployment's ReplicaSet, a CronJob's Job) and, for a Deployment, the pod-template-hash
    label. Offline the CLI knows the workload's kind; this is how the server learns it.
    A Pod (or a PodTemplate's pod, which no controller creates) is returned as it is."""
    pod = copy.deepcopy(site.pod)
    controller = _CONTROLLERS.get(site.owner_kind or "")
    if controller is None:
        return pod
    api_version, kind, suffix = controller
    metadata = pod.setdefault("metadata", {})
    metadata["ownerReferences"] = [
        {
            "apiVersion": api_version,
            "kind": kind,
            "name": site.owner_name + suffix,
            "uid": "00000000-0000-4000-8000-000000000001",
            "controller": True,
        }
    ]
    if site.owner_kind == "Deployment":
        metadata["labels"] = {**(metadata.get("labels") or {}), "pod-template-hash": TEMPLATE_HASH}
    return pod


def as_written(pod: dict[str, Any], site: PodSite) -> dict[str, Any]:
    """`pod` without what `as_created` added, to compare with the golden template."""
    pod = copy.deepcopy(pod)
    if site.owner_kind not in _CONTROLLERS:
        return pod
    metadata = pod["metadata"]
    del metadata["ownerReferences"]
    if site.owner_kind == "Deployment":
        labels = metadata["labels"]
        del labels["pod-template-hash"]
        if not labels and "labels" not in (site.pod.get("metadata") or {}):
            del metadata["labels"]
    return pod


def write_atomically(path: Path, text: str) -> None:
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def unified_diff(old: str, new: str, name: str, limit: int = 80) -> str:
    lines = list(
        difflib.unified_diff(
            old.splitlines(keepends=True),
            new.splitlines(keepends=True),
            fromfile=f"a/{name}",
            tofile=f"b/{name}",
        )
    )
    if len(lines) > limit:
        lines = [*lines[:limit], f"... {len(lines) - limit} more diff lines\n"]
    return "".join(lines)


def output_files() -> set[Path]:
    return {
        path
        for path in CASES.iterdir()
        if path.name.endswith((OUT, WARNINGS, DENIED)) and not path.name.startswith(".")
    }
