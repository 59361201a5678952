"""The three patch formats the fake accepts: JSON merge patch (RFC 7386), JSON patch (RFC 6902)
and, for core kinds only, a strategic merge patch that merges known lists by their merge key.
"""

from __future__ import annotations

import copy
from typing import Any

MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "volumes": "name",
    "env": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
    "containerStatuses": "name",
    "initContainerStatuses": "name",
    "conditions": "type",
    "podIPs": "ip",
    "hostIPs": "ip",
}


class PatchFailed(ValueError):
    """A JSON patch operation could not be applied (the server answers 422)."""


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif key in MERGE_KEYS and isinstance(value, list) and isinstance(out.get(key), list):
            out[key] = _merge_list(out[key], value, MERGE_KEYS[key])
        else:
            out[key] = strategic_merge_patch(out.get(key), value)
    return out


def _merge_list(current: list[Any], patch: list[Any], key: str) -> list[Any]:
    merged = [copy.deepcopy(c) for c in current]
    index = {c.get(key): i for i, c in enumerate(merged) if isinstance(c, dict)}
    for item in patch:
        if isinstance(item, dict) and item.get(key) in index:
            i = index[item[key]]
            merged[i] = strategic_merge_patch(merged[i], item)
        else:
            merged.append(copy.deepcopy(item))
    return merged


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchFailed(f"invalid path {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc: Any, parts: list[str]) -> Any:
    cur = doc
    for p in parts[:-1]:
        if isinstance(cur, dict) and p in cur:
            cur = cur[p]
        elif isinstance(cur, list) and p.isdigit() and int(p) < len(cur):
            cur = cur[int(p)]
        else:
            raise PatchFailed(f"missing path element {p!r}")
    return cur


def _get(doc: Any, parts: list[str]) -> Any:
    if not parts:
        return doc
    parent, last = _parent(doc, parts), parts[-1]
    if isinstance(parent, dict) and last in parent:
        return parent[last]
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return parent[int(last)]
    raise PatchFailed(f"missing value at {'/'.join(parts)}")


def _remove(doc: Any, parts: list[str]) -> Any:
    parent, last = _parent(doc, parts), parts[-1]
    if isinstance(parent, dict) and last in parent:
        return parent.pop(last)
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return parent.pop(int(last))
    raise PatchFailed(f"missing value at {'/'.join(parts)}")


def _add(doc: Any, parts: list[str], value: Any, *, replace: bool) -> Any:
    if not parts:
        return copy.deepcopy(value)
    parent, last = _parent(doc, parts), parts[-1]
    if isinstance(parent, dict):
        if replace and last not in parent:
            raise PatchFailed(f"replace of a missing key {last!r}")
        parent[last] = copy.deepcopy(value)
    elif isinstance(parent, list):
        if last == "-" and not replace:
            parent.append(copy.deepcopy(value))
        elif last.isdigit() and int(last) <= len(parent) - (1 if replace else 0):
            if replace:
                parent[int(last)] = copy.deepcopy(value)
            else:
                parent.insert(int(last), copy.deepcopy(value))
        else:
            raise PatchFailed(f"index {last!r} out of range")
    else:
        raise PatchFailed("parent is not a container")
    return doc


def json_patch(target: Any, ops: list[Any]) -> Any:
    doc = copy.deepcopy(target)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchFailed("malformed operation")
        parts, kind = _pointer(op["path"]), op["op"]
        if kind == "add":
            doc = _add(doc, parts, op.get("value"), replace=False)
        elif kind == "replace":
            _get(doc, parts)
            doc = _add(doc, parts, op.get("value"), replace=True)
        elif kind == "remove":
            _remove(doc, parts)
        elif kind == "test":
            if _get(doc, parts) != op.get("value"):
                raise PatchFailed("test failed")
        elif kind in ("move", "copy"):
            source = _pointer(op.get("from", ""))
            value = _remove(doc, source) if kind == "move" else copy.deepcopy(_get(doc, source))
            doc = _add(doc, parts, value, replace=False)
        else:
            raise PatchFailed(f"unknown op {kind!r}")
    return doc
