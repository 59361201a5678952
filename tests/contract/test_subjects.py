"""The subject table is the single source of truth: one owner and one schema per stream, no two
streams claiming a subject, builders that always produce the intended number of tokens, and a
registered fault for every fault spec on the wire.
"""

from __future__ import annotations

import typing

import msgspec
import pytest

from chaosbus.common import messages, subjects
from chaosbus.injector import faults

SERVICES = ("watcher", "scheduler", "injector", "recorder")
READERS = (*SERVICES, "dashboard")  # the dashboard reads (and writes only through the triggers)
# Fault specs the scheduler may emit that the node injector does not implement; it answers them
# with a non-retryable "not supported" failure (see services/injector/core.py). None today:
# pod-failure, the last one, is done by the node injector too (local mode's process pods).
UNSUPPORTED_FAULTS: frozenset[str] = frozenset()


def overlap(a: str, b: str) -> bool:
    """Whether some concrete subject matches both NATS subject patterns (`*` one token, `>` the rest)."""
    ta, tb = a.split("."), b.split(".")
    for i in range(max(len(ta), len(tb))):
        x = ta[i] if i < len(ta) else None
        y = tb[i] if i < len(tb) else None
        if x == ">" or y == ">":
            return (x is not None) and (y is not None)
        if x is None or y is None:
            return False
        if x != y and "*" not in (x, y):
            return False
    return True


def matches(pattern: str, subject: str) -> bool:
    return overlap(pattern, subject) and "*" not in subject.split(".") and ">" not in subject.split(".")


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("chaos.obj.>", "chaos.obj.Pod.ns.n", True),
        ("chaos.obj.>", "chaos.obj", False),
        ("chaos.cmd.*", "chaos.cmd.n1", True),
        ("chaos.cmd.*", "chaos.cmd.n1.x", False),
        ("chaos.cmd.*", "chaos.result.*", False),
        ("chaos.*.x", "chaos.cmd.*", True),
        ("chaos.>", "chaos.cmd.*", True),
        ("a.b", "a.b.c", False),
    ],
)
def test_overlap_helper(a: str, b: str, expected: bool) -> None:
    assert overlap(a, b) is expected and overlap(b, a) is expected


STREAM_IDS = [s.name for s in subjects.STREAMS]


@pytest.mark.parametrize("stream", subjects.STREAMS, ids=STREAM_IDS)
def test_stream_has_exactly_one_owning_service(stream: subjects.Stream) -> None:
    assert stream.owner in SERVICES


@pytest.mark.parametrize("stream", subjects.STREAMS, ids=STREAM_IDS)
def test_stream_message_is_a_wire_struct(stream: subjects.Stream) -> None:
    assert issubclass(stream.message, msgspec.Struct)
    assert issubclass(stream.message, messages.Message)


@pytest.mark.parametrize("stream", subjects.STREAMS, ids=STREAM_IDS)
def test_stream_is_read_by_known_services(stream: subjects.Stream) -> None:
    assert stream.consumers, "a stream nobody consumes is dead weight"
    readers = {c.identity for c in stream.consumers}
    assert readers <= set(READERS)
    assert all(c.identity != stream.owner or not c.durable for c in stream.consumers), (
        "an owner reads back its own stream only to compare at start, never as a work consumer"
    )


def test_stream_names_are_unique() -> None:
    assert len(STREAM_IDS) == len(set(STREAM_IDS))


def test_each_message_type_travels_on_one_stream() -> None:
    types = [s.message for s in subjects.STREAMS]
    assert len(types) == len(set(types))


@pytest.mark.parametrize(
    ("a", "b"),
    [(a, b) for i, a in enumerate(subjects.STREAMS) for b in subjects.STREAMS[i + 1 :]],
    ids=[f"{a.name}-{b.name}" for i, a in enumerate(subjects.STREAMS) for b in subjects.STREAMS[i + 1 :]],
)
def test_no_two_streams_overlap(a: subjects.Stream, b: subjects.Stream) -> None:
    for x in a.subjects:
        for y in b.subjects:
            assert not overlap(x, y), f"{a.name} {x!r} overlaps {b.name} {y!r}"


def test_bucket_names_are_unique_and_owned() -> None:
    names = [b.name for b in subjects.BUCKETS]
    assert len(names) == len(set(names))
    assert all(b.owners for b in subjects.BUCKETS)


# --- builders ------------------------------------------------------------------------------------

NASTY = ["web.0", "node-1.example.com", "a b", "x*y", "x>y", "", "ünïcode", "tab\there"]


@pytest.mark.parametrize("value", NASTY)
def test_token_is_one_valid_subject_token(value: str) -> None:
    t = subjects.token(value)
    assert t and "." not in t and not set(t) & set(" \t*>")
    assert t.isascii()


@pytest.mark.parametrize("value", ["web-0", "n1", "PodChaos", "abc_DEF-123"])
def test_token_keeps_safe_values(value: str) -> None:
    assert subjects.token(value) == value


@pytest.mark.parametrize("name", NASTY)
@pytest.mark.parametrize(
    ("build", "stream", "tokens"),
    [
        (lambda v: subjects.object_subject("PodChaos", v, v), subjects.OBJECTS, 5),
        (lambda v: subjects.command_subject(v), subjects.COMMANDS, 3),
        (lambda v: subjects.result_subject(v, v), subjects.RESULTS, 4),
        (lambda v: subjects.decision_subject(v), subjects.DECISIONS, 3),
        (lambda v: subjects.write_subject("PodChaos", v, v), subjects.WRITES, 5),
    ],
    ids=["object", "command", "result", "decision", "write"],
)
def test_built_subject_has_fixed_tokens_and_lands_on_its_stream_only(
    name: str, build: typing.Callable[[str], str], stream: subjects.Stream, tokens: int
) -> None:
    subject = build(name)
    assert len(subject.split(".")) == tokens
    owners = [s.name for s in subjects.STREAMS if any(matches(p, subject) for p in s.subjects)]
    assert owners == [stream.name]


@pytest.mark.parametrize("node", NASTY)
def test_injector_consumer_name_is_valid(node: str) -> None:
    name = subjects.injector_consumer(node)
    assert name.startswith("injector-") and not set(name) & set(". \t*>")


@pytest.mark.parametrize(("a", "b"), [("n1", "n2"), ("web-0", "web-1"), ("node.a", "node.b")])
def test_distinct_names_give_distinct_command_subjects(a: str, b: str) -> None:
    assert subjects.command_subject(a) != subjects.command_subject(b)


@pytest.mark.parametrize(
    ("kind", "ns", "name", "key"),
    [
        ("PodChaos", "default", "x", "PodChaos.default.x"),
        ("Node", "", "n1", "Node._.n1"),
        ("Pod", "prod", "web.0", "Pod.prod.web.0"),
    ],
)
def test_object_key(kind: str, ns: str, name: str, key: str) -> None:
    assert subjects.object_key(kind, ns, name) == key


# --- faults on the wire vs the injector's registry -------------------------------------------------

FAULT_TAGS = sorted(str(t.__struct_config__.tag) for t in typing.get_args(messages.Fault))


def test_fault_union_members_are_fault_specs() -> None:
    assert all(issubclass(t, messages.FaultSpec) for t in typing.get_args(messages.Fault))
    assert len(FAULT_TAGS) == len(set(FAULT_TAGS))


@pytest.mark.parametrize("tag", FAULT_TAGS)
def test_every_fault_spec_is_registered_or_explicitly_unsupported(tag: str) -> None:
    assert (tag in faults.REGISTRY) != (tag in UNSUPPORTED_FAULTS), tag


@pytest.mark.parametrize("tag", sorted(faults.REGISTRY))
def test_every_registered_fault_has_a_wire_spec(tag: str) -> None:
    assert tag in FAULT_TAGS
    assert faults.REGISTRY[tag].name == tag


def test_unsupported_list_names_only_real_specs() -> None:
    assert UNSUPPORTED_FAULTS <= set(FAULT_TAGS)


@pytest.mark.parametrize("spec", [t() for t in typing.get_args(messages.Fault)], ids=FAULT_TAGS)
def test_fault_specs_round_trip_through_a_target_action(spec: messages.FaultSpec) -> None:
    action = messages.TargetAction(target_id="ns/p", op="apply", fault=spec)  # type: ignore[arg-type]
    decoded = msgspec.json.decode(msgspec.json.encode(action), type=messages.TargetAction)
    assert decoded.fault == spec and faults.spec_tag(decoded.fault) == faults.spec_tag(spec)


def test_the_cluster_injector_does_the_api_level_faults_and_tasks() -> None:
    from chaosbus.injector import cluster

    registry = cluster.registry(object(), "pause")
    # Each also a node fault: pod-kill and pod-failure on process pods, a Task as a process.
    assert set(registry) == {"pod-failure", "pod-kill", "task"}
    assert all(registry[tag].name == tag for tag in registry)


# --- the dashboard's identity ---------------------------------------------------------------------


def test_the_dashboard_reads_and_never_writes_a_stream_or_the_object_store() -> None:
    from chaosbus.common import natsauth

    p = natsauth.permissions("dashboard")
    assert not [
        s
        for s in p.publish
        if s.startswith(
            ("chaos.obj", "chaos.cmd", "chaos.result", "chaos.phase", "chaos.write", "$KV.objects", "$KV.targets")
        )
    ]
    assert "$KV.control.>" in p.publish and subjects.HALT_SUBJECT in p.publish  # the kill switch, signed
    assert all(t.pattern in p.publish for t in subjects.TRIGGERS)
    assert "chaos.health.*" in p.subscribe


def test_a_node_injector_reports_its_health_on_its_own_subject_only() -> None:
    from chaosbus.common import natsauth

    p = natsauth.permissions("injector", node="n1")
    assert subjects.health_subject("n1") in p.publish
    assert "chaos.health.*" not in p.publish
