"""Typed edges: a subject and the message type it carries come from one entry of the subject table.

Every stream and core subject names its message type; the bus decodes what it reads as that type
and refuses to publish another type, or on a subject that is not the entry's. Every KV bucket
names the type stored under each of its key patterns (or declares itself free-form bytes, and why),
and the bus's typed handle refuses any other. The code outside the table never spells a subject,
and never reaches past the bus to nats-py to publish, subscribe or touch a bucket.
"""

from __future__ import annotations

import ast
from pathlib import Path

import msgspec
import pytest

from chaosbus.common import kvbucket, subjects
from chaosbus.common import messages as m

ROOT = Path(__file__).resolve().parents[2]
# Where subjects are used, not defined: every service, the CLI and the shared library but the table
# and the bus (with the KV listing and follower beside it, which read a bucket's own stream, not a
# subject, and the one-off reader, which reads the stream and filter its caller takes from the table).
NOT_USERS = {
    "libs/common/subjects.py",
    "libs/common/bus.py",
    "libs/common/kvsnapshot.py",
    "libs/common/kvfollow.py",
    "libs/common/kvbucket.py",
    "libs/common/lastread.py",
}
SOURCES = sorted(
    p
    for folder in ("services", "cli", "libs/common")
    for p in (ROOT / folder).rglob("*.py")
    if str(p.relative_to(ROOT)) not in NOT_USERS
)
# The bench taps the streams with core subscriptions (leaving the services' consumers alone), but
# takes every subject and bucket from the table too: a renamed subject cannot silently break it.
BENCH = sorted((ROOT / "bench").rglob("*.py"))
RAW_CALLS = {"publish", "subscribe", "request", "pull_subscribe"}
ENTRIES = [*subjects.STREAMS, *subjects.CORE_SUBJECTS]


def _name(entry: subjects.Stream[object] | subjects.CoreSubject[msgspec.Struct]) -> str:  # type: ignore[type-var]
    return entry.name if isinstance(entry, subjects.Stream) else entry.pattern


@pytest.mark.parametrize("entry", ENTRIES, ids=_name)
def test_every_entry_names_its_message_type(
    entry: subjects.Stream[m.Message] | subjects.CoreSubject[msgspec.Struct],
) -> None:
    assert isinstance(entry.message, type) and issubclass(entry.message, msgspec.Struct)
    if isinstance(entry, subjects.Stream):
        assert issubclass(entry.message, m.Message)


@pytest.mark.parametrize("entry", subjects.TRIGGERS, ids=_name)
def test_every_request_names_its_reply_type(entry: subjects.CoreSubject[msgspec.Struct]) -> None:
    assert entry.reply is not None and issubclass(entry.reply, m.Message)


@pytest.mark.parametrize(
    ("stream", "consumer"),
    [(s, c) for s in subjects.STREAMS for c in s.consumers if c.durable],
    ids=lambda v: v.name if isinstance(v, subjects.Stream) else str(v),
)
def test_every_durable_consumer_resolves_to_a_filter_of_its_stream(
    stream: subjects.Stream[m.Message], consumer: subjects.Consumer
) -> None:
    durable = consumer.durable.format(node="node-1")
    found = stream.pull_filter(durable)
    assert "{" not in found and stream.covers(found)
    assert found == (consumer.filter or stream.subjects[0]).format(node="node-1")


def test_the_injector_reads_its_own_node_only() -> None:
    assert subjects.COMMANDS.pull_filter(subjects.injector_consumer("web.1")) == subjects.command_subject("web.1")


def test_a_durable_not_in_the_table_is_refused() -> None:
    with pytest.raises(LookupError):
        subjects.RESULTS.pull_filter("someone-else")
    with pytest.raises(LookupError):
        subjects.COMMANDS.pull_filter("recorder")


@pytest.mark.parametrize(
    ("subject", "pattern", "expected"),
    [
        ("chaos.obj.*.*.*", "chaos.obj.>", True),
        ("chaos.obj.PodChaos.ns.x", "chaos.obj.>", True),
        ("chaos.obj", "chaos.obj.>", False),
        ("chaos.obj.>", "chaos.obj.*.*.*", False),
        ("chaos.result.n1.u1", "chaos.result.*.*", True),
        ("chaos.result.u1", "chaos.result.*.*", False),
        ("chaos.result.*.*", "chaos.result.*.*", True),
        ("chaos.result.*.u1", "chaos.result.n1.*", False),
        ("chaos.cmd.n1", "chaos.cmd.n1", True),
        ("chaos.cmd.n2", "chaos.cmd.n1", False),
    ],
)
def test_within(subject: str, pattern: str, expected: bool) -> None:
    assert subjects.within(subject, pattern) is expected


def _decision() -> m.ExperimentDecision:
    return m.ExperimentDecision(
        experiment_uid="u1", generation=1, kind="PodChaos", namespace="ns", name="x", desired_phase="Run"
    )


def test_a_message_goes_only_where_its_entry_says() -> None:
    subjects.check(subjects.DECISIONS, subjects.decision_subject("u1"), _decision())
    with pytest.raises(TypeError):
        subjects.check(subjects.RESULTS, subjects.result_subject("n1", "u1"), _decision())
    with pytest.raises(ValueError):
        subjects.check(subjects.DECISIONS, subjects.result_subject("n1", "u1"), _decision())
    with pytest.raises(ValueError):
        subjects.check(subjects.LEASES, subjects.health_subject("n1"))


def _code_strings(tree: ast.AST) -> list[tuple[int, str]]:
    """String literals and the literal start of f-strings, docstrings left out."""
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            out.append((node.lineno, node.value))
        elif isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
            out.append((node.lineno, str(node.values[0].value)))
    return out


@pytest.mark.parametrize("path", SOURCES + BENCH, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_subject_is_spelled_outside_the_table(path: Path) -> None:
    tree = ast.parse(path.read_text(), str(path))
    spelled = [f"line {n}: {s!r}" for n, s in _code_strings(tree) if s.startswith(("chaos.", "$SYS.", "$KV."))]
    assert not spelled, "subjects come from libs/common/subjects.py"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_nothing_publishes_or_subscribes_past_the_bus(path: Path) -> None:
    """`bus.nc.publish(...)`, `bus.js.subscribe(...)` and the like skip the table's checks."""
    tree = ast.parse(path.read_text(), str(path))
    raw = [
        f"line {node.lineno}: {ast.unparse(node.func)}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in RAW_CALLS
        and isinstance(node.func.value, ast.Attribute | ast.Name)
        and (node.func.value.attr if isinstance(node.func.value, ast.Attribute) else node.func.value.id) in ("nc", "js")
    ]
    assert not raw, "publish and subscribe through the bus (libs/common/bus.py), which takes a table entry"


def _bus_calls(tree: ast.AST) -> list[ast.Call]:
    names = {"consume", "consume_batches", "replay_and_follow", "last_messages", "publish", "signal", "listen"}
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in names
        and ast.unparse(node.func.value).split(".")[-1] == "bus"
    ]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_consumer_is_one_the_table_declares(path: Path) -> None:
    """A durable named at a call site is its stream's in the table (checked here, not at start),
    and a filter, where one is given, is the table's too.
    """
    tree = ast.parse(path.read_text(), str(path))
    wrong = []
    for call in _bus_calls(tree):
        entry = call.args[0] if call.args else None
        if not (isinstance(entry, ast.Attribute) and ast.unparse(entry.value) == "subjects"):
            continue  # a variable: mypy holds it to a table entry's type
        stream = getattr(subjects, entry.attr)
        for kw in call.keywords:
            if kw.arg == "durable" and isinstance(kw.value, ast.Constant):
                try:
                    stream.pull_filter(kw.value.value)
                except LookupError as e:
                    wrong.append(f"line {call.lineno}: {e}")
            if kw.arg == "filter_subject" and not ast.unparse(kw.value).startswith("subjects."):
                wrong.append(f"line {call.lineno}: filter {ast.unparse(kw.value)} is not the table's")
    assert not wrong


# --- KV buckets ----------------------------------------------------------------------------------


@pytest.mark.parametrize("bucket", subjects.BUCKETS, ids=lambda b: b.name)
def test_every_bucket_names_what_its_keys_hold(bucket: subjects.Bucket[object]) -> None:
    assert bucket.keys, "a bucket declares its key patterns"
    for keys in bucket.keys:
        if keys.value is bytes:
            assert bucket.raw, f"{bucket.name}/{keys.pattern} holds bytes: the table says why (raw=...)"
        else:
            assert issubclass(keys.value, m.Message), f"{bucket.name}/{keys.pattern}: a wire message"
    if bucket.raw:
        assert all(k.value is bytes for k in bucket.keys)


@pytest.mark.parametrize(
    ("bucket", "key", "value"),
    [
        (subjects.TARGETS, subjects.target_pod_key("ns", "web.0"), m.TargetPod),
        (subjects.TARGETS, subjects.target_namespace_key("ns"), m.TargetNamespace),
        (subjects.TARGETS, subjects.target_node_key("node-1.example.com"), m.TargetNode),
        (subjects.SCHEDULER, subjects.memory_key("9b1f.x"), m.ExperimentMemory),
        (subjects.SCHEDULER, subjects.LEADER_KEY, m.LeaderLease),
        (subjects.CONTROL, subjects.HALT_KEY, m.HaltState),
        (subjects.OBJECT_STORE, subjects.object_key("PodChaos", "ns", "a.b"), bytes),
    ],
    ids=lambda v: v.name if isinstance(v, subjects.Bucket) else v if isinstance(v, str) else v.__name__,
)
def test_every_key_the_services_build_has_its_declared_type(
    bucket: subjects.Bucket[object], key: str, value: type[object]
) -> None:
    found = bucket.keys_of(key)
    assert found is not None and found.value is value


def _a_value_of_another_type(wanted: type[object]) -> object:
    return m.TargetNode(name="n") if wanted is not m.TargetNode else m.TargetNamespace(name="n")


@pytest.mark.parametrize(
    ("bucket", "keys"),
    [(b, k) for b in subjects.BUCKETS for k in b.keys],
    ids=lambda v: v.name if isinstance(v, subjects.Bucket) else v.pattern,
)
def test_a_value_of_another_type_is_refused(bucket: subjects.Bucket[object], keys: subjects.Keys[object]) -> None:
    handle = kvbucket.TypedBucket(bucket, None, None)  # type: ignore[arg-type]  # encoding touches no NATS
    key = keys.pattern.replace("*", "x").replace(">", "x.y")
    with pytest.raises(TypeError):
        handle.encode(key, _a_value_of_another_type(keys.value))
    if keys.pattern != ">":  # a bucket that takes every key
        with pytest.raises(ValueError):
            handle.encode("no-such-prefix.x.y", _a_value_of_another_type(keys.value))


RAW_KV = {"kv", "follow_kv", "key_value", "create_key_value", "watchall"}


@pytest.mark.parametrize("path", SOURCES + BENCH, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_bucket_is_touched_past_the_table(path: Path) -> None:
    """`bus.kv(...)`, nats-py's KeyValue and the raw snapshot skip the table's value types: a service
    takes `await bus.bucket(subjects.X)`, and puts Structs, not bytes it encoded itself.
    """
    tree = ast.parse(path.read_text(), str(path))
    raw = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in ("nats.js.kv", "chaosbus.common.kvsnapshot"):
            raw.append(f"line {node.lineno}: from {node.module} import ...")
        elif isinstance(node, ast.ImportFrom) and any(a.name == "kvsnapshot" for a in node.names):
            raw.append(f"line {node.lineno}: imports kvsnapshot")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr in RAW_KV:
                raw.append(f"line {node.lineno}: {ast.unparse(node.func)}")
            elif node.func.attr in ("put", "create", "update") and any(
                isinstance(a, ast.Call) and ast.unparse(a.func).split(".")[-1] in ("encode", "seal_message")
                for a in node.args
            ):
                raw.append(f"line {node.lineno}: {ast.unparse(node)[:80]} stores bytes it encoded itself")
    assert not raw, "buckets through the bus's typed handle (bus.bucket(subjects.X))"
