"""Bounds on everything an object may carry, so bad input fails admission with `field: message`
instead of surfacing later as OverflowError, RecursionError or a fault that silently does nothing.

Generic bounds hold for every kind (free-form blocks included): nesting depth, integers within
64 bits (Kubernetes' int64, Chaos Mesh's uint64 rates), finite floats, string length, YAML aliases capped by expanded
size. Specific ones come from what consumes a value: netlink fields are u32/u64, a fault's
deadline must fit nftables' `meta time` (nanoseconds since the epoch in an int64), a device name
must be one Linux accepts (IFNAMSIZ), names and namespaces are DNS-1123 (they become KV keys and
subject tokens, so a `.` in a namespace would collide with another object's key). Pure.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.resolver import Resolver

from chaosbus.common.crd.errors import InvalidObject, Problems

U32 = 2**32 - 1
U64 = 2**64 - 1
INT64 = 2**63 - 1
# A YAML or JSON stream given to `apply` or a trigger; Kubernetes refuses objects over ~1.5 MiB.
MAX_DOCUMENT_BYTES = 1024 * 1024
# One admitted object as stored; its status (at most 256 KiB, recorder) comes on top, and the
# whole travels as one NATS message (1 MiB by default).
MAX_OBJECT_BYTES = 512 * 1024
MAX_DEPTH = 64  # nesting of mappings and lists; Chaos Mesh's deepest shapes (Workflow templates) use ~12
MAX_NODES = 100_000  # YAML nodes of one document once aliases are expanded (JSON encoding expands them)
MAX_STRING = 256 * 1024
# A fault's deadline (creation + duration) is matched by nftables as `meta time`, an int64 of
# nanoseconds since the epoch, which ends in 2262; 100 years keeps any deadline this century can
# compute well inside it.
MAX_DURATION_S = 100 * 365 * 86400
IFNAMSIZ = 16  # Linux: names are at most 15 bytes plus the NUL
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def dns_label(problems: Problems, path: str, value: object) -> None:
    """A DNS-1123 label (namespaces, container names): lower-case alphanumerics and `-`, 1-63."""
    if not isinstance(value, str) or len(value) > 63 or not _DNS_LABEL.match(value):
        problems.add(
            path, f"must be a DNS-1123 label (lower-case letters, digits and '-', at most 63), got {show(value)}"
        )


def dns_subdomain(problems: Problems, path: str, value: object) -> None:
    """A DNS-1123 subdomain (object names): labels joined by `.`, at most 253 characters."""
    if not isinstance(value, str) or len(value) > 253 or not _DNS_SUBDOMAIN.match(value):
        problems.add(
            path,
            f"must be a DNS-1123 subdomain (lower-case letters, digits, '-' and '.', at most 253), got {show(value)}",
        )


def device(problems: Problems, path: str, value: str) -> None:
    """An interface name Linux accepts (dev_valid_name): "" means the default one."""
    if not value:
        return
    bad = (
        len(value.encode()) >= IFNAMSIZ
        or value in (".", "..")
        or any(c in "/:" or c.isspace() for c in value)
        or not value.isprintable()
    )
    if bad:
        problems.add(
            path,
            f"not a Linux interface name (at most {IFNAMSIZ - 1} bytes, no '/', ':' or whitespace), got {show(value)}",
        )


def unsigned(problems: Problems, path: str, value: int | None, limit: int = U32) -> None:
    """A field the kernel takes as an unsigned integer of `limit` (u32 by default)."""
    if value is not None and not 0 <= value <= limit:
        problems.add(path, f"must be between 0 and {limit}, got {value}")


def check_tree(value: Any, path: str, problems: Problems) -> None:
    """Depth, integer range, finite floats and string length of a decoded document, iteratively (a
    recursive walk would itself overflow on the input it is meant to refuse).
    """
    stack: list[tuple[Any, str, int]] = [(value, path, 0)]
    while stack:
        node, where, depth = stack.pop()
        if isinstance(node, dict):
            if depth >= MAX_DEPTH:
                problems.add(where or "object", f"nested deeper than {MAX_DEPTH} levels")
                return
            for k, v in node.items():
                if not isinstance(k, str):
                    problems.add(where or "object", f"keys must be strings, got {show(k)}")
                    return
                stack.append((v, f"{where}.{k}" if where else k, depth + 1))
        elif isinstance(node, list):
            if depth >= MAX_DEPTH:
                problems.add(where or "object", f"nested deeper than {MAX_DEPTH} levels")
                return
            stack.extend((v, f"{where}[{i}]", depth + 1) for i, v in enumerate(node))
        elif isinstance(node, bool) or node is None:
            continue
        elif isinstance(node, int):
            if not -INT64 - 1 <= node <= U64:
                problems.add(where, "integer out of range (64 bits)")
        elif isinstance(node, float):
            if not math.isfinite(node):
                problems.add(where, f"must be a finite number, got {node}")
        elif isinstance(node, str) and len(node) > MAX_STRING:
            problems.add(where, f"longer than {MAX_STRING} characters")


def checked_tree(value: Any, path: str = "") -> None:
    """`check_tree`, raising InvalidObject."""
    problems = Problems()
    check_tree(value, path, problems)
    problems.raise_if_any()


def metadata_of(doc: object) -> dict[str, Any]:
    """A document's metadata, which must be a mapping when present (raises InvalidObject)."""
    meta = doc.get("metadata") if isinstance(doc, dict) else None
    if meta is None:
        return {}
    if not isinstance(meta, dict):
        raise InvalidObject([f"metadata: must be a mapping, got {type(meta).__name__}"])
    return meta


def name_of(doc: object) -> str:
    """metadata.name for messages, whatever the document looks like."""
    meta = doc.get("metadata") if isinstance(doc, dict) else None
    name = meta.get("name") if isinstance(meta, dict) else None
    return name if isinstance(name, str) else "?"


# --- YAML ---------------------------------------------------------------------------------------


class _Bounded(Composer):
    """Composes nodes (PyYAML composes recursively), refusing nesting deeper than MAX_DEPTH and a
    document whose nodes, aliases expanded, exceed MAX_NODES (an alias bomb is small as text and
    as Python objects, which share the aliased node, and explodes when encoded as JSON).
    """

    def __init__(self) -> None:
        Composer.__init__(self)
        self._depth = 0
        self._sizes: dict[int, int] = {}

    def compose_document(self) -> yaml.Node | None:
        self._sizes = {}
        node: yaml.Node | None = super().compose_document()
        return node

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise InvalidObject([f"yaml: nested deeper than {MAX_DEPTH} levels{_where(self)}"])
            node: yaml.Node | None = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if node is not None and id(node) not in self._sizes:
            self._sizes[id(node)] = size = 1 + sum(self._sizes.get(id(c), 1) for c in _children(node))
            if size > MAX_NODES:
                raise InvalidObject([f"yaml: more than {MAX_NODES} values once aliases are expanded{_where(self)}"])
        return node


class _PureLoader(_Bounded, yaml.SafeLoader):
    """The same in pure Python, for a PyYAML built without libyaml."""

    def __init__(self, stream: str) -> None:
        yaml.SafeLoader.__init__(self, stream)
        _Bounded.__init__(self)


_LOADER: Callable[[str], Any] = _PureLoader

try:
    from yaml._yaml import CParser
except ImportError:  # a PyYAML built without libyaml: _PureLoader
    pass
else:

    class _FastLoader(_Bounded, CParser, SafeConstructor, Resolver):
        """Events from libyaml's parser (C), nodes from the bounded composer above: the pure-Python
        scanner took 0.45 ms of the 0.5 ms a small experiment's `chaosbus apply` spent decoding, this
        0.07 ms (measured); libyaml's own composer would skip the bounds.
        """

        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            _Bounded.__init__(self)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)

    _LOADER = _FastLoader


def _children(node: yaml.Node) -> Iterator[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        yield from node.value
    elif isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            yield k
            yield v


def _where(loader: Any) -> str:
    """Where the parser is: the line of the next event (libyaml's parser keeps no reader mark)."""
    event = loader.peek_event() if loader.check_event() else None
    return "" if event is None else f" (line {event.start_mark.line + 1})"


def load_yaml(text: str) -> list[Any]:
    """Every non-empty document of a YAML (or JSON) stream, within the bounds above.

    Raises:
        InvalidObject: too large, too deep, too many values, or not YAML (naming the line).
    """
    if len(text) > MAX_DOCUMENT_BYTES:
        raise InvalidObject([f"yaml: larger than {MAX_DOCUMENT_BYTES} bytes"])
    loader = None
    try:
        loader = _LOADER(text)
        docs = []
        while loader.check_data():
            doc = loader.get_data()
            if doc is not None:
                docs.append(doc)
        return docs
    except UnicodeEncodeError as e:  # a lone surrogate: no UTF-8 text, so no YAML
        raise InvalidObject([f"yaml: invalid YAML: {e.reason} at character {e.start}"]) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        # libyaml puts the end of a text without a final newline on a line after the last one
        line = None if mark is None else min(mark.line + 1, text.count("\n") + 1)
        where = f" (line {line}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e)
        if "maximum nesting depth" in problem and mark is not None:  # libyaml's own cap (1,000), met first
            raise InvalidObject([f"yaml: nested deeper than {MAX_DEPTH} levels (line {line})"]) from None
        raise InvalidObject([f"yaml: invalid YAML{where}: {problem}"]) from None
    except (ValueError, OverflowError) as e:  # a timestamp or number the constructor cannot build
        if isinstance(e, InvalidObject):
            raise
        raise InvalidObject([f"yaml: invalid value: {e}"]) from None
    finally:
        if loader is not None:
            loader.dispose()


def show(value: object) -> str:
    """repr, cut to 80 characters for error messages."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
