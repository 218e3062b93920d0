"""Manifests for `lifecycle-webhook mutate`: read them, find their pods, write them back.

Pure: text in, objects out, objects in, text out; the CLI does the I/O.

Reading follows what `kubectl` sends to the API server, so a value means here what it
will mean there. kubectl turns YAML into JSON with sigs.k8s.io/yaml, whose scalars are
resolved by go-yaml v2, not by YAML 1.1 (PyYAML's default) nor YAML 1.2:

- `yes`/`no`/`on`/`off`/`y`/`n` (and their capitalised forms) are booleans; so an unquoted
  `inject: yes` annotation is a boolean here too, as the API server would see it;
- dates and times (`2024-01-01`), base-60 numbers (`12:30`) and `=` stay strings;
- integers follow Go's `ParseInt(s, 0, 64)` after dropping `_`: `0x1F`, `0o17`, `017`, `+5`;
  floats follow go-yaml's float pattern, so `1e3` is a number (PyYAML reads a string);
- integral floats become ints (Go's JSON encoder writes 1000.0 as `1000`); `.inf`/`.nan`
  cannot be written as JSON and are rejected, as kubectl rejects them;
- non-string mapping keys become strings (`true`, `1`); a null key is rejected;
- a duplicate key keeps its last value, as go-yaml v2 and Helm do.

A stream whose first non-blank character is `{` is read as a sequence of JSON values, as
kubectl's YAMLOrJSONDecoder does. Comments are not kept.

Writing quotes every string that either go-yaml v2 or a YAML 1.1 reader would read as
something else, so the output means the same to kubectl, Helm and PyYAML.
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import yaml

from webhook.core.messages import printable

try:  # libyaml, when PyYAML was built with it: several times faster on big manifests
    from yaml import CSafeDumper as _DumperBase
    from yaml import CSafeLoader as _LoaderBase
except ImportError:  # pragma: no cover - PyYAML without libyaml
    from yaml import SafeDumper as _DumperBase  # type: ignore[assignment]
    from yaml import SafeLoader as _LoaderBase  # type: ignore[assignment]

Document = dict[str, Any]

WORKLOAD_GROUPS: dict[str, frozenset[str]] = {
    "Deployment": frozenset({"apps", "extensions"}),
    "StatefulSet": frozenset({"apps"}),
    "DaemonSet": frozenset({"apps", "extensions"}),
    "ReplicaSet": frozenset({"apps", "extensions"}),
    "Job": frozenset({"batch"}),
}
"""Kinds whose pod template is `spec.template`, and the API groups they live in (any version)."""

_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
_MERGE = "tag:yaml.org,2002:merge"

_GO_YAML_WORDS: dict[str, str] = {
    **dict.fromkeys(["y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE"], _BOOL),
    **dict.fromkeys(["on", "On", "ON", "n", "N", "no", "No", "NO"], _BOOL),
    **dict.fromkeys(["false", "False", "FALSE", "off", "Off", "OFF"], _BOOL),
    **dict.fromkeys(["", "~", "null", "Null", "NULL"], _NULL),
    **dict.fromkeys([".nan", ".NaN", ".NAN", ".inf", ".Inf", ".INF"], _FLOAT),
    **dict.fromkeys(["+.inf", "+.Inf", "+.INF", "-.inf", "-.Inf", "-.INF"], _FLOAT),
    "<<": _MERGE,
}
_GO_YAML_TRUE = frozenset(["y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON"])
_GO_INT = re.compile(r"[-+]?(?:0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+|0[0-7]*|[1-9][0-9]*)\Z")
_GO_FLOAT = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?\Z")
_GO_DOT_FLOAT = re.compile(r"\.[0-9]+(?:[eE][-+]?[0-9]+)?\Z")
_TIMESTAMP_START = re.compile(r"[0-9]{4}-")
_INT64 = 1 << 63
_UINT64 = 1 << 64


class ManifestError(ValueError):
    """Input that kubectl would refuse too: not YAML or JSON, or not a Kubernetes object."""


def go_yaml_tag(plain: str) -> str:
    """The tag go-yaml v2 gives an unquoted scalar (its `resolve`), timestamps being strings."""
    word = _GO_YAML_WORDS.get(plain)
    if word is not None:
        return word
    first = plain[0]
    if first == ".":
        return _FLOAT if _GO_DOT_FLOAT.match(plain) else _STR
    if not (first.isascii() and (first.isdigit() or first in "+-")):
        return _STR
    if _TIMESTAMP_START.match(plain):
        return _STR  # go-yaml v2 keeps timestamps as strings when decoding into interface{}
    digits = plain.replace("_", "")
    if _go_int(digits) is not None:
        return _INT
    if _GO_FLOAT.match(digits) and math.isfinite(float(digits)):
        return _FLOAT
    return _STR


def _go_int(digits: str) -> int | None:
    """Go's `ParseInt(s, 0, 64)`, then `ParseUint(s, 0, 64)`: None when both fail."""
    if not _GO_INT.match(digits):
        return None
    sign = -1 if digits[0] == "-" else 1
    body = digits.lstrip("+-")
    if len(body) > 1 and body[0] == "0" and body[1] in "0123456789":
        magnitude = int(body, 8)
    else:
        magnitude = int(body, 0)
    value = sign * magnitude
    if -_INT64 <= value < _INT64:
        return value
    if digits[0] not in "+-" and value < _UINT64:
        return value
    return None


_default_resolve = cast(Callable[[Any, Any, Any, Any], str], yaml.resolver.BaseResolver.resolve)
"""PyYAML's own (YAML 1.1) resolution, typed: the stubs leave it untyped."""


class _KubeLoader(_LoaderBase):
    """PyYAML's safe loader with go-yaml v2's scalar resolution (see the module docstring)."""

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        if kind is yaml.ScalarNode and implicit[0]:
            return go_yaml_tag(value)
        return _default_resolve(self, kind, value, implicit)

    def construct_go_int(self, node: yaml.ScalarNode) -> Any:
        value = self.construct_scalar(node)
        number = _go_int(value.replace("_", ""))
        if number is not None:
            return number
        if _GO_FLOAT.match(value.replace("_", "")):
            return float(value.replace("_", ""))
        raise yaml.constructor.ConstructorError(
            None, None, f"cannot read {value!r} as an integer", node.start_mark
        )

    def construct_go_float(self, node: yaml.ScalarNode) -> Any:
        value = self.construct_scalar(node)
        word = value.lower().lstrip("+")
        if word in (".inf", "-.inf", ".nan"):
            return float(word.replace(".", ""))
        try:
            return float(value.replace("_", ""))
        except ValueError:
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read {value!r} as a number", node.start_mark
            ) from None

    def construct_go_bool(self, node: yaml.ScalarNode) -> Any:
        return self.construct_scalar(node) in _GO_YAML_TRUE

    def construct_string(self, node: yaml.ScalarNode) -> Any:
        return self.construct_scalar(node)


_KubeLoader.add_constructor(_INT, _KubeLoader.construct_go_int)
_KubeLoader.add_constructor(_FLOAT, _KubeLoader.construct_go_float)
_KubeLoader.add_constructor(_BOOL, _KubeLoader.construct_go_bool)
_KubeLoader.add_constructor("tag:yaml.org,2002:timestamp", _KubeLoader.construct_string)


def load_documents(text: str) -> list[Document]:
    """Every non-empty document of a YAML stream or a JSON stream, in order.

    Raises ManifestError naming the document for syntax errors and for a document that is
    not a mapping.
    """
    raw = _json_stream(text) if text.lstrip().startswith("{") else _yaml_stream(text)
    documents: list[Document] = []
    for number, item in enumerate(raw, start=1):
        if item is None:
            continue
        try:
            value = _json_value(item, f"document {number}", _Budget())
        except RecursionError:
            raise ManifestError(f"document {number} is nested too deeply") from None
        if not isinstance(value, dict):
            raise ManifestError(
                f"document {number} is a {_type_name(value)}, not a Kubernetes object"
            )
        documents.append(value)
    return documents


def _yaml_stream(text: str) -> Iterator[Any]:
    try:
        yield from yaml.load_all(text, Loader=_KubeLoader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = error.problem or error.context or "invalid YAML"
        raise ManifestError(f"invalid YAML: {where}{problem}") from None
    except yaml.YAMLError as error:
        raise ManifestError(f"invalid YAML: {error}") from None


def _json_stream(text: str) -> Iterator[Any]:
    decoder = json.JSONDecoder(parse_constant=_reject_constant)
    position = 0
    while True:
        while position < len(text) and text[position] in " \t\r\n":
            position += 1
        if position == len(text):
            return
        try:
            value, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError as error:
            raise ManifestError(
                f"invalid JSON: line {error.lineno}, column {error.colno}: {error.msg}"
            ) from None
        yield value


def _reject_constant(name: str) -> Any:
    raise ManifestError(f"invalid JSON: {name} is not a JSON number")


class _Budget:
    """How many values one document may expand to: YAML aliases can make a few lines mean
    billions of values ("billion laughs"), which go-yaml refuses too."""

    LIMIT = 1_000_000

    def __init__(self) -> None:
        self.left = self.LIMIT

    def spend(self, where: str) -> None:
        self.left -= 1
        if self.left < 0:
            raise ManifestError(f"{where} expands to more than {self.LIMIT} values (YAML aliases?)")


_SURROGATE = re.compile("[\ud800-\udfff]")


def _json_value(value: Any, where: str, budget: _Budget) -> Any:
    """The value kubectl would send: JSON types only, string keys, Go's number conversion."""
    budget.spend(where)
    if isinstance(value, dict):
        result: dict[str, Any] = {}
        for key, item in value.items():
            name = _json_key(key, where)
            result[name] = _json_value(item, where, budget)
        return result
    if isinstance(value, list):
        return [_json_value(item, where, budget) for item in value]
    if isinstance(value, str):
        # A lone surrogate (JSON "\ud800") cannot be encoded; Go reads it as U+FFFD.
        return _SURROGATE.sub("\ufffd", value) if _SURROGATE.search(value) else value
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ManifestError(f"{where}: {value} cannot be sent to Kubernetes (not JSON)")
        if value.is_integer() and abs(value) < 1e21:
            return int(value)
        return value
    raise ManifestError(f"{where}: a {_type_name(value)} value cannot be sent to Kubernetes")


def _json_key(key: Any, where: str) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, bool):
        return "true" if key else "false"
    if isinstance(key, int):
        return str(key)
    if isinstance(key, float):
        return _go_float_key(key)
    raise ManifestError(f"{where}: a mapping key cannot be a {_type_name(key)}")


def _go_float_key(number: float) -> str:
    """sigs.k8s.io/yaml writes a float key as Go's `FormatFloat(k, 'g', -1, 32)`."""
    if math.isnan(number):
        return ".nan"
    if math.isinf(number):
        return ".inf" if number > 0 else "-.inf"
    single = _float32(number)
    if single == 0:
        return "0"
    for precision in range(9):
        text = f"{single:.{precision}e}"
        if _float32(float(text)) == single:
            break
    mantissa, _, exponent_text = text.partition("e")
    exponent = int(exponent_text)
    if exponent < -4 or exponent >= 6:
        if "." in mantissa:
            mantissa = mantissa.rstrip("0").rstrip(".")
        return f"{mantissa}e{exponent:+03d}"
    digits = len(mantissa.lstrip("-").replace(".", "").rstrip("0")) or 1
    return f"{float(text):.{max(digits - 1 - exponent, 0)}f}"


def _float32(number: float) -> float:
    result: float = struct.unpack("f", struct.pack("f", number))[0]
    return result


def _type_name(value: Any) -> str:
    return {
        list: "list",
        str: "string",
        int: "number",
        float: "number",
        bool: "boolean",
        bytes: "binary string",
    }.get(type(value), type(value).__name__)


# --- Pods inside documents -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PodSite:
    """Where the core should look: a Pod document or the pod template of a workload.

    `pod` is what the core sees (a template is presented as a Pod); `store` writes the
    mutated pod back into the document.
    """

    label: str
    """For humans: `Pod/web`, `Deployment/web (pod template)`, with the namespace."""
    namespace: str
    pod: Document
    store: Callable[[Document], None]
    owner_kind: str | None = None
    """The workload a template belongs to (`Deployment`; `none` for a PodTemplate); None for
    a Pod, whose ownerReferences say."""
    owner_name: str = ""


def services(document: Document, depth: int = 0) -> list[tuple[str, dict[str, Any]]]:
    """Every v1 Service in a document (itself or `List` items), with its namespace, as the
    core reads Services (`core.traffic.service_summary`)."""
    from webhook.core.traffic import service_summary

    if document.get("kind") == "List":
        found = []
        items = document.get("items")
        if isinstance(items, list) and depth < _MAX_LIST_DEPTH:
            for item in items:
                if isinstance(item, dict):
                    found.extend(services(item, depth + 1))
        return found
    if document.get("kind") == "Service" and document.get("apiVersion") == "v1":
        summary = service_summary(document)
        return [(_namespace_of(document), dict(summary))] if summary else []
    return []


def pod_sites(document: Document) -> list[PodSite]:
    """Every pod in a document, in order: the Pod itself, a template, or `List` items."""
    sites: list[PodSite] = []
    _collect(document, sites, depth=0)
    return sites


def describe(document: Document) -> str:
    """`Kind/name` (and namespace) for messages about a document."""
    kind = document.get("kind")
    metadata = document.get("metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    name = metadata.get("name") or (
        f"{metadata['generateName']}*" if metadata.get("generateName") else None
    )
    label = f"{kind if isinstance(kind, str) and kind else '<no kind>'}/{name or '<no name>'}"
    namespace = metadata.get("namespace")
    if isinstance(namespace, str) and namespace:
        label += f" in namespace {namespace}"
    return label


_MAX_LIST_DEPTH = 16


def _collect(document: Document, sites: list[PodSite], depth: int) -> None:
    kind = document.get("kind")
    group = _api_group(document.get("apiVersion"))
    if kind == "List" and depth < _MAX_LIST_DEPTH:
        items = document.get("items")
        if isinstance(items, list):
            for item in items:
                if isinstance(item, dict):
                    _collect(item, sites, depth + 1)
        return
    if group is None:
        return
    if kind == "Pod" and group == "":
        sites.append(_pod_document_site(document))
        return
    if kind == "PodTemplate" and group == "":
        _template_site(document, document, "template", sites)
    elif kind in WORKLOAD_GROUPS and group in WORKLOAD_GROUPS[kind]:
        spec = document.get("spec")
        if isinstance(spec, dict):
            _template_site(document, spec, "template", sites)
    elif kind == "CronJob" and group == "batch":
        spec = document.get("spec")
        job = spec.get("jobTemplate") if isinstance(spec, dict) else None
        job_spec = job.get("spec") if isinstance(job, dict) else None
        if isinstance(job_spec, dict):
            _template_site(document, job_spec, "template", sites)


def _api_group(api_version: Any) -> str | None:
    if not isinstance(api_version, str) or not api_version:
        return None
    group, slash, _ = api_version.rpartition("/")
    return group if slash else ""


def _namespace_of(document: Document) -> str:
    metadata = document.get("metadata")
    namespace = metadata.get("namespace") if isinstance(metadata, dict) else None
    return namespace if isinstance(namespace, str) else ""


def _pod_document_site(document: Document) -> PodSite:
    def store(mutated: Document) -> None:
        if mutated is not document:
            document.clear()
            document.update(mutated)

    return PodSite(describe(document), _namespace_of(document), document, store)


def _template_site(owner: Document, parent: Document, key: str, sites: list[PodSite]) -> None:
    """Present `parent[key]` (a PodTemplateSpec) as a Pod in the owner's namespace.

    Pods made from a template are created in the owner's namespace whatever the template's
    own metadata says, so that is the namespace the core sees; the template's metadata is
    written back as it was apart from what the core changed.
    """
    template = parent.get(key)
    if not isinstance(template, dict):
        return
    namespace = _namespace_of(owner)
    had_metadata = isinstance(template.get("metadata"), dict)
    metadata: Document = dict(template["metadata"]) if had_metadata else {}
    original_namespace = metadata.get("namespace", _ABSENT)
    if namespace:
        metadata["namespace"] = namespace
    else:
        metadata.pop("namespace", None)
    view: Document = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata}
    if "spec" in template:
        view["spec"] = template["spec"]

    def store(mutated: Document) -> None:
        new_metadata = mutated.get("metadata")
        if isinstance(new_metadata, dict):
            new_metadata = dict(new_metadata)
            if original_namespace is _ABSENT:
                new_metadata.pop("namespace", None)
            else:
                new_metadata["namespace"] = original_namespace
            if had_metadata or new_metadata:
                _put(template, "metadata", new_metadata, before="spec")
        if "spec" in mutated:
            template["spec"] = mutated["spec"]

    label = f"{describe(owner)} (pod template)"
    kind = owner.get("kind")
    owner_kind = kind if isinstance(kind, str) and kind != "PodTemplate" else "none"
    owner_metadata = owner.get("metadata")
    name = owner_metadata.get("name") if isinstance(owner_metadata, dict) else None
    owner_name = name if isinstance(name, str) else ""
    sites.append(PodSite(label, namespace, view, store, owner_kind, owner_name))


_ABSENT: Any = object()


def _put(mapping: Document, key: str, value: Any, before: str) -> None:
    """Set `mapping[key]`; a new key goes before `before` (metadata reads best above spec)."""
    if key in mapping or before not in mapping:
        mapping[key] = value
        return
    items = list(mapping.items())
    mapping.clear()
    for name, item in items:
        if name == before:
            mapping[key] = value
        mapping[name] = item


# --- Writing ---------------------------------------------------------------------------


class _KubeDumper(_DumperBase):
    """Block style, keys in their order, no anchors, and quotes wherever a reader might
    take a string for something else (go-yaml v2 or YAML 1.1)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        if kind is yaml.ScalarNode and implicit[0]:
            tag = go_yaml_tag(value)
            if tag != _STR:
                return tag
        return _default_resolve(self, kind, value, implicit)


def _represent_str(dumper: _KubeDumper, value: str) -> yaml.ScalarNode:
    """Multi-line text as a literal block; the emitter quotes it instead when it must."""
    return dumper.represent_scalar(_STR, value, style="|" if "\n" in value else None)


_KubeDumper.add_representer(str, _represent_str)

_YAML_WIDTH = 1 << 30
"""Never fold long strings: a folded line would make goldens and diffs harder to read."""


def dump_yaml(documents: list[Document], comments: list[list[str]] | None = None) -> str:
    """A YAML stream, `---` between documents; empty when there are none.

    `comments`, one list of lines per document, are written as `#` lines before it.
    """
    parts = [
        yaml.dump(
            document,
            Dumper=_KubeDumper,
            sort_keys=False,
            default_flow_style=False,
            allow_unicode=True,
            width=_YAML_WIDTH,
        )
        for document in documents
    ]
    if comments is not None:
        parts = [
            "".join(f"# {printable(line)}\n" for line in lines) + part
            for lines, part in zip(comments, parts, strict=True)
        ]
    return "---\n".join(parts)


def dump_json(documents: list[Document]) -> str:
    """One object for one document, a `v1` `List` for any other number, as kubectl does."""
    if len(documents) == 1:
        value: Any = documents[0]
    else:
        value = {"apiVersion": "v1", "kind": "List", "items": documents}
    return json.dumps(value, indent=2, ensure_ascii=False) + "\n"
