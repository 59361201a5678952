"""One header per object, per experiment and per target: a message that names an object inherits
`ObjectRef`, one that names an experiment `ExperimentRef`, a per-target part `TargetRef`. The
headers keep the JSON these messages had before (what journals, KV and streams hold decodes across
an upgrade) and are bounded at decode.
"""

from __future__ import annotations

import inspect

import msgspec
import pytest

from chaosbus.common import messages as m
from chaosbus.common.wire import decode, encode

OBJECT = {f.name for f in msgspec.structs.fields(m.ObjectRef)}
HEADER = {f.name for f in msgspec.structs.fields(m.ExperimentRef)}
TARGET = {f.name for f in msgspec.structs.fields(m.TargetRef)}
MESSAGES = [
    c for _, c in inspect.getmembers(m, inspect.isclass) if issubclass(c, m.Message) and c.__module__ == m.__name__
]


@pytest.mark.parametrize("cls", MESSAGES, ids=lambda c: c.__name__)
def test_a_message_naming_an_experiment_takes_the_header(cls: type[m.Message]) -> None:
    fields = {f.name for f in msgspec.structs.fields(cls)}
    if OBJECT <= fields:
        assert issubclass(cls, m.ObjectRef), (
            f"{cls.__name__} repeats an object's kind, namespace, name: inherit ObjectRef"
        )
    if HEADER <= fields:
        assert issubclass(cls, m.ExperimentRef), f"{cls.__name__} repeats the header's fields: inherit ExperimentRef"
    if TARGET <= fields:
        assert issubclass(cls, m.TargetRef), f"{cls.__name__} repeats the target header's fields: inherit TargetRef"


def test_the_messages_about_one_experiment_share_it() -> None:
    for cls in (m.NodeCommand, m.ResultBatch, m.ExperimentDecision, m.ExperimentMemory):
        assert issubclass(cls, m.ExperimentRef)
    for cls in (m.TargetAction, m.TargetResult, m.TargetMemory):
        assert issubclass(cls, m.TargetRef)
    for cls in (m.ObjectEvent, m.ObjectWrite, m.TriggerRef, m.TriggerApplied, m.TriggerStatus, m.TriggerRecovered):
        assert issubclass(cls, m.ObjectRef)
    assert issubclass(m.ExperimentRef, m.ObjectRef)


# As these messages were written before the headers (a journal's outbox row, the scheduler's KV
# memory, a decision on its stream): the same bytes decode to the same values, and encode back to
# the same document.
PERSISTED = [
    (
        m.ObjectEvent,
        b'{"type":"ADDED","kind":"PodChaos","namespace":"ns","name":"x","uid":"u1","generation":1,'
        b'"resource_version":"7","object":{"kind":"PodChaos","metadata":{"name":"x"}}}',
    ),
    (
        m.ObjectWrite,
        b'{"write_id":"w1","op":"status","kind":"Schedule","namespace":"ns","name":"s","uid":"u2",'
        b'"object":{"status":{"active":[]}},"reason":"Spawned","at":3.0}',
    ),
    (
        m.ResultBatch,
        b'{"command_id":"u1.abc","experiment_uid":"u1","generation":2,"kind":"NetworkChaos",'
        b'"namespace":"default","name":"cut","node":"n1","results":[{"target_id":"default/web-0",'
        b'"op":"apply","ok":true,"at":12.5}]}',
    ),
    (
        m.NodeCommand,
        b'{"command_id":"u1.abc","experiment_uid":"u1","generation":2,"kind":"PodChaos","namespace":"ns",'
        b'"name":"x","node":"n1","issued_at":1.0,"deadline":61.0,"actions":[{"target_id":"ns/p",'
        b'"selector_key":".Target","op":"apply","pod_uid":"p1","fault":{"fault":"pod-kill"}}]}',
    ),
    (
        m.ExperimentDecision,
        b'{"experiment_uid":"u1","generation":3,"kind":"PodChaos","namespace":"ns","name":"x",'
        b'"desired_phase":"Run","records":[{"id":"ns/p","node":"n1"}],"at":5.0}',
    ),
    (
        m.ExperimentMemory,
        b'{"experiment_uid":"u1","generation":1,"kind":"PodChaos","namespace":"ns","name":"x","created_at":1.0,'
        b'"targets":[{"target_id":"ns/p","pod":{"uid":"p1","namespace":"ns","name":"p"},"phase":"Injected"}]}',
    ),
]


@pytest.mark.parametrize(("cls", "data"), PERSISTED, ids=[c.__name__ for c, _ in PERSISTED])
def test_what_was_persisted_before_the_header_decodes_the_same(cls: type[m.Message], data: bytes) -> None:
    decoded = decode(data, cls)
    assert msgspec.json.decode(encode(decoded)) == msgspec.json.decode(data)
    assert decode(encode(decoded), cls) == decoded


def test_the_header_alone() -> None:
    batch = decode(dict(PERSISTED)[m.ResultBatch], m.ResultBatch)
    assert batch.ref == m.ExperimentRef(
        experiment_uid="u1", generation=2, kind="NetworkChaos", namespace="default", name="cut"
    )
    assert batch.experiment == "default/cut"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", "x" * 254),
        ("namespace", "n" * 64),
        ("kind", "K" * 64),
        ("experiment_uid", "u" * 129),
        ("generation", -1),
    ],
)
def test_the_header_is_bounded_at_decode(field: str, value: object) -> None:
    doc = msgspec.json.decode(dict(PERSISTED)[m.ExperimentDecision]) | {field: value}
    with pytest.raises(msgspec.ValidationError, match=field):
        decode(msgspec.json.encode(doc), m.ExperimentDecision)


def test_an_object_header_is_bounded_at_decode() -> None:
    doc = msgspec.json.decode(dict(PERSISTED)[m.ObjectEvent]) | {"name": "x" * 254}
    with pytest.raises(msgspec.ValidationError, match="name"):
        decode(msgspec.json.encode(doc), m.ObjectEvent)


def test_a_trigger_ref_still_defaults_its_namespace() -> None:
    assert decode(b'{"kind":"PodChaos","name":"x"}', m.TriggerRef).namespace == "default"


def test_a_target_header_is_bounded_at_decode() -> None:
    doc = msgspec.json.decode(dict(PERSISTED)[m.ResultBatch])
    doc["results"][0]["target_id"] = "t" * 1025
    with pytest.raises(msgspec.ValidationError, match="target_id"):
        decode(msgspec.json.encode(doc), m.ResultBatch)
