"""The injector's backends and faults keep no process-wide state: what they hold about the kernel
objects, servers and helpers they drive lives in a `Backends` (built once by the injector's edge,
handed to every fault), so two injectors in one process, or a test with its own backends, share
nothing. Read from the source, not imported: a module-level dict, list or set, an object built at
import time, a `global` statement or a zero-argument cache would be state every caller shares.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "services" / "injector"
PACKAGES = ("backends", "faults")
MODULES = ("executor.py", "runtime.py", "sweeper.py")  # what hands the backends down

# The only process-wide things allowed, each for a reason:
ALLOWED = {
    # the table of fault kinds (faults.REGISTRY), filled by each fault module's register(...) when imported
    ("faults/__init__.py", "_KINDS"),
    # the backends of callers that hand in none (tools, benchmarks, single-fault tests); the
    # service builds its own
    ("backends/kit.py", "_DEFAULT"),
}
# What a module-level value may be built by: immutable values and pure helpers.
IMMUTABLE_CALLS = {
    "TypeVar",
    "frozenset",
    "tuple",
    "range",
    "len",
    "object",
    "re.compile",
    "struct.Struct",
    "cblog.get",
    "dataclasses.field",
}
MUTATING_METHODS = {"add", "append", "extend", "update", "pop", "popitem", "clear", "setdefault", "remove", "discard"}


def modules() -> list[Path]:
    return sorted([*(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")), *(ROOT / m for m in MODULES)])


def _name(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_name(node.value)}.{node.attr}"
    return ""


def _mutated(tree: ast.Module) -> set[str]:
    """Names the module changes in place: `NAME[k] = v`, `del NAME[k]`, `NAME.update(...)`."""
    out: set[str] = set()
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        elif isinstance(node, ast.Delete):
            targets = node.targets
        for t in targets:
            if isinstance(t, ast.Subscript) and isinstance(t.value, ast.Name):
                out.add(t.value.id)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in MUTATING_METHODS:
            if isinstance(node.func.value, ast.Name):
                out.add(node.func.value.id)
    return out


def _mutable(value: ast.expr | None) -> str | None:
    """Why a module-level value is mutable state (None: it is not)."""
    if isinstance(value, (ast.Dict, ast.List, ast.Set, ast.DictComp, ast.ListComp, ast.SetComp)):
        return f"a {type(value).__name__.lower().replace('comp', ' comprehension')}"
    if isinstance(value, ast.Call):
        called = _name(value.func)
        if called in IMMUTABLE_CALLS:
            return None
        return f"built at import time by {called or 'a call'}()"
    return None


def _stateful_classes(sources: dict[str, str]) -> dict[tuple[str, str], str]:
    """(module name, class name) -> why its instances hold state: an `__init__` that sets an
    attribute to a dict, list, set or an object it builds (a lock, a cache)."""
    out: dict[tuple[str, str], str] = {}
    for rel, source in sources.items():
        module = Path(rel).stem
        for node in ast.walk(ast.parse(source, filename=rel)):
            if not isinstance(node, ast.ClassDef):
                continue
            for item in node.body:
                if not (isinstance(item, ast.FunctionDef) and item.name == "__init__"):
                    continue
                for stmt in ast.walk(item):
                    if isinstance(stmt, (ast.Assign, ast.AnnAssign)) and (why := _mutable(stmt.value)):
                        made = why.removeprefix("built at import time by ")
                        out.setdefault((module, node.name), f"its __init__ makes {made}")
    return out


def shared_instances(rel: str, source: str, stateful: dict[tuple[str, str], str]) -> list[str]:
    """Instances of stateful classes made at import time, at module level or as class attributes
    (a fault's `orphans = X()` is one object for every injector in the process)."""
    tree = ast.parse(source, filename=rel)
    # where a bare class name comes from: this module, or the module it was imported from
    origin = {
        a.asname or a.name: n.module.rsplit(".", 1)[-1]
        for n in tree.body
        if isinstance(n, ast.ImportFrom) and n.module
        for a in n.names
    }
    out = []
    bodies = [tree.body, *(n.body for n in ast.walk(tree) if isinstance(n, ast.ClassDef))]
    for body in bodies:
        for node in body:
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, ast.Call):
                module, _, cls = _name(node.value.func).rpartition(".")
                key = (module.rsplit(".", 1)[-1] or origin.get(cls, Path(rel).stem), cls)
                names = [
                    t.id for t in getattr(node, "targets", [getattr(node, "target", None)]) if isinstance(t, ast.Name)
                ]
                if key in stateful and not any((rel, n) in ALLOWED for n in names):
                    out.append(f"{rel}:{node.lineno}: a {cls} made at import time ({stateful[key]})")
    return out


def findings(rel: str, source: str) -> list[str]:
    """The process-wide state in one module's source (`rel`: its path under services/injector)."""
    tree = ast.parse(source, filename=rel)
    mutated = _mutated(tree)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Global, ast.Nonlocal)):
            out.append(f"{rel}:{node.lineno}: `{type(node).__name__.lower()} {', '.join(node.names)}`")
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = [t.id for t in targets if isinstance(t, ast.Name)]
            why = _mutable(node.value)
            for name in names:
                if (rel, name) in ALLOWED or why is None or name == "__all__":
                    continue
                # A constant table (UPPER_CASE, never changed in place) is configuration, not state.
                if name.lstrip("_").isupper() and name not in mutated and not isinstance(node.value, ast.Call):
                    continue
                out.append(f"{rel}:{node.lineno}: {name} is {why}")
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and (rel, node.name) not in ALLOWED:
            cached = [
                d for d in node.decorator_list if _name(d.func if isinstance(d, ast.Call) else d).endswith("cache")
            ]
            if cached and not (node.args.args or node.args.posonlyargs or node.args.kwonlyargs):
                out.append(f"{rel}:{node.lineno}: {node.name}() caches one value for the whole process")
    return out


def test_the_checker_sees_state() -> None:
    """The check itself: each kind of process-wide state is found, constants and memos are not."""
    source = (
        "import functools\nimport threading\n"
        "_servers = {}\nREGISTRY: dict[str, int] = {}\n_lock = threading.Lock()\n"
        "TABLE = {'a': 1}\nKINDS = {'x'}\n"
        "def put(k):\n    global _count\n    REGISTRY[k] = 1\n"
        "@functools.cache\ndef probe():\n    return 1\n"
        "@functools.lru_cache(maxsize=8)\ndef memo(x):\n    return x\n"
    )
    tree = ast.parse(source)
    assert _mutable(tree.body[2].value) == "a dict"  # type: ignore[attr-defined]
    found = findings("backends/sample.py", source)
    assert [f.split(": ", 1)[1] for f in found] == [
        "`global _count`",
        "_servers is a dict",
        "REGISTRY is a dict",
        "_lock is built at import time by threading.Lock()",
        "probe() caches one value for the whole process",
    ]


def test_the_checker_sees_state_in_objects_made_at_import() -> None:
    sources = {
        "faults/sample.py": (
            "class Scan:\n    def __init__(self):\n        self._by_netns = {}\n"
            "class Names:\n    def __init__(self, prefix):\n        self.prefix = prefix\n"
            "class Fault:\n    orphans = Scan()\n    names = Names('x')\n"
        )
    }
    stateful = _stateful_classes(sources)
    assert stateful == {("sample", "Scan"): "its __init__ makes a dict"}
    assert [
        f.split(": ", 1)[1] for f in shared_instances("faults/sample.py", sources["faults/sample.py"], stateful)
    ] == ["a Scan made at import time (its __init__ makes a dict)"]


SOURCES = {p.relative_to(ROOT).as_posix(): p.read_text() for p in modules()}


@pytest.fixture(scope="module")
def stateful() -> dict[tuple[str, str], str]:
    return _stateful_classes(SOURCES)


@pytest.mark.parametrize("rel", sorted(SOURCES))
def test_no_process_wide_state(rel: str, stateful: dict[tuple[str, str], str]) -> None:
    found = findings(rel, SOURCES[rel]) + shared_instances(rel, SOURCES[rel], stateful)
    assert found == [], "state belongs in a Backends (services/injector/backends/kit.py)"
