"""RFC 6902 operations, built directly against the exact object received.

The API server applies our patch to the JSON it sent us; an operation that does not apply
fails the pod's creation even with `failurePolicy: Ignore`. So each operation is chosen by
looking at that JSON: `add` only where the member is absent, `replace` where it is present.
`apply_patch` is the local applier the CLI uses; it is as strict as the API server's.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from webhook.core.model import PatchOp


def escape(segment: str) -> str:
    """RFC 6901: `~` first, then `/`; the other order corrupts `~1`."""
    return segment.replace("~", "~0").replace("/", "~1")


def set_member(parent: Mapping[str, Any], parent_path: str, key: str, value: Any) -> PatchOp:
    op = "replace" if key in parent else "add"
    return {"op": op, "path": f"{parent_path}/{escape(key)}", "value": value}


class PatchError(ValueError):
    """An operation that would not apply: the same condition that makes the API server fail."""


def apply_patch(doc: Any, ops: list[PatchOp]) -> Any:
    """Apply `add`/`replace`/`remove`/`test` strictly to a deep copy of `doc`."""
    result = copy.deepcopy(doc)
    for op in ops:
        result = _apply_one(result, op)
    return result


def _unescape(segment: str) -> str:
    return segment.replace("~1", "/").replace("~0", "~")


def _apply_one(doc: Any, op: PatchOp) -> Any:
    path = op["path"]
    if path == "":
        if op["op"] in ("add", "replace"):
            return copy.deepcopy(op["value"])
        raise PatchError(f"unsupported operation on the root: {op['op']}")
    if not path.startswith("/"):
        raise PatchError(f"bad path {path!r}")
    *parents, last = (_unescape(part) for part in path[1:].split("/"))
    target = doc
    for part in parents:
        target = _child(target, part, path)
    kind = op["op"]
    if isinstance(target, dict):
        if kind == "add":
            target[last] = copy.deepcopy(op["value"])
        elif last not in target:
            raise PatchError(f"{kind} of missing member {path!r}")
        elif kind == "replace":
            target[last] = copy.deepcopy(op["value"])
        elif kind == "remove":
            del target[last]
        elif kind == "test":
            if target[last] != op["value"]:
                raise PatchError(f"test failed at {path!r}")
        else:
            raise PatchError(f"unsupported operation {kind!r}")
    elif isinstance(target, list):
        if kind == "add":
            index = len(target) if last == "-" else _index(last, len(target) + 1, path)
            target.insert(index, copy.deepcopy(op["value"]))
        else:
            index = _index(last, len(target), path)
            if kind == "replace":
                target[index] = copy.deepcopy(op["value"])
            elif kind == "remove":
                del target[index]
            elif kind == "test":
                if target[index] != op["value"]:
                    raise PatchError(f"test failed at {path!r}")
            else:
                raise PatchError(f"unsupported operation {kind!r}")
    else:
        raise PatchError(f"parent of {path!r} is not a container")
    return doc


def _child(target: Any, part: str, path: str) -> Any:
    if isinstance(target, dict):
        if part not in target:
            raise PatchError(f"missing parent in {path!r}")
        return target[part]
    if isinstance(target, list):
        return target[_index(part, len(target), path)]
    raise PatchError(f"missing parent in {path!r}")


def _index(part: str, bound: int, path: str) -> int:
    if not part.isascii() or not part.isdigit() or (len(part) > 1 and part[0] == "0"):
        raise PatchError(f"bad array index in {path!r}")
    index = int(part)
    if index >= bound:
        raise PatchError(f"array index out of range in {path!r}")
    return index
