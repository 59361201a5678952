"""IOChaos admission (Chaos Mesh's fields, defaults, every bad field refused by name) and the
fault one target gets (the rule native/iofs applies)."""

from __future__ import annotations

from typing import Any

import pytest

from chaosbus.common import messages as m
from chaosbus.common.crd import InvalidObject, decode_object, iochaos
from chaosbus.common.crd.iochaos import ALL_METHODS, METHODS, IOChaosSpec
from chaosbus.injector.backends import iofs


def decode(**spec: Any) -> IOChaosSpec:
    spec.setdefault("mode", "all")
    spec.setdefault("selector", {"labelSelectors": {"app": "etcd"}})
    spec.setdefault("volumePath", "/var/run/etcd")
    obj = decode_object(
        {
            "apiVersion": "chaos-mesh.org/v1alpha1",
            "kind": "IOChaos",
            "metadata": {"name": "io", "namespace": "default"},
            "spec": spec,
        }
    )
    assert isinstance(obj.spec, IOChaosSpec)
    return obj.spec


def errors(**spec: Any) -> list[str]:
    with pytest.raises(InvalidObject) as info:
        decode(**spec)
    return info.value.errors


class _Obj:
    def __init__(self, spec: IOChaosSpec) -> None:
        self.spec = spec


def planned(**spec: Any) -> m.IO:
    return iochaos.plan(_Obj(decode(**spec)), None, [])


def test_chaos_mesh_latency_example_and_defaults() -> None:
    fault = planned(action="latency", path="/var/run/etcd/**/*", delay="100ms", percent=50, methods=["read", "write"])
    assert fault == m.IO(
        action="latency",
        volume_path="/var/run/etcd",
        path="/var/run/etcd/**/*",
        methods=1 << METHODS.index("read") | 1 << METHODS.index("write"),
        percent=50,
        delay_ns=100_000_000,
        attr_values=[0] * 15,
    )
    assert iofs.rule_line(fault, 7) == "latency 7 24576 50 100000000 /var/run/etcd/**/*"
    every = planned(action="fault", errno=5)
    assert (every.methods, every.percent, every.path) == (ALL_METHODS, 100, "")  # all methods, every call, any path
    assert iofs.rule_line(every, 0) == f"fault 0 {ALL_METHODS} 100 5 -"
    assert decode(action="fault", errno=5, percent=0).percent == 100  # as Chaos Mesh: unset means 100


def test_attr_override_and_mistake_become_rule_lines() -> None:
    attr = planned(
        action="attrOverride", attr={"perm": 72, "kind": "regularFile", "atime": {"sec": 1, "nsec": 2}, "size": 10}
    )
    # mask: size (1), atime (3), kind (6), perm (7); values: ino size blocks atime(2) mtime(2) ctime(2) kind perm ...
    assert attr.attr_mask == 1 << 1 | 1 << 3 | 1 << 6 | 1 << 7
    assert attr.attr_values == [0, 10, 0, 1, 2, 0, 0, 0, 0, 4, 72, 0, 0, 0, 0]
    assert iofs.rule_line(attr, 0).startswith(f"attr 0 {ALL_METHODS} 100 {attr.attr_mask} 0 10 0 1 2 ")
    mistake = planned(action="mistake", mistake={"filling": "random", "maxOccurrences": 3, "maxLength": 10})
    assert iofs.rule_line(mistake, 0) == f"mistake 0 {ALL_METHODS} 100 1 3 10 -"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"action": "delay"}, "spec.action: must be one of latency, fault, attrOverride, mistake"),
        ({"action": "fault", "errno": 5, "volumePath": ""}, "spec.volumePath: is required"),
        ({"action": "fault", "errno": 5, "volumePath": "var/run"}, "spec.volumePath: must be an absolute path"),
        ({"action": "latency"}, "spec.delay: is required for action latency"),
        ({"action": "latency", "delay": "soon"}, "spec.delay: invalid duration"),
        ({"action": "latency", "delay": "2h"}, "spec.delay: must be within 0..1h"),
        ({"action": "fault"}, "spec.errno: must be an errno number in 1..4095"),
        ({"action": "fault", "errno": 5, "percent": 101}, "spec.percent: must be within 0..100"),
        ({"action": "fault", "errno": 5, "methods": ["read", "seek"]}, "spec.methods[1]: unknown method 'seek'"),
        ({"action": "attrOverride"}, "spec.attr: is required"),
        ({"action": "attrOverride", "attr": {}}, "spec.attr: overrides nothing"),
        ({"action": "attrOverride", "attr": {"kind": "pipe"}}, "spec.attr.kind: must be one of namedPipe"),
        ({"action": "attrOverride", "attr": {"perm": 70000}}, "spec.attr.perm: must be permission bits"),
        ({"action": "attrOverride", "attr": {"size": -1}}, "spec.attr.size: must be within"),
        ({"action": "attrOverride", "attr": {"mtime": {"sec": 1, "nsec": 10**9}}}, "spec.attr.mtime:"),
        ({"action": "mistake"}, "spec.mistake: is required"),
        (
            {"action": "mistake", "mistake": {"filling": "ones", "maxOccurrences": 1, "maxLength": 1}},
            "spec.mistake.filling: must be zero or random",
        ),
        ({"action": "mistake", "mistake": {"filling": "zero", "maxLength": 1}}, "spec.mistake.maxOccurrences: must be"),
        ({"action": "mistake", "mistake": {"filling": "zero", "maxOccurrences": 1}}, "spec.mistake.maxLength: must be"),
        ({"action": "fault", "errno": 5, "path": "a\nb"}, "spec.path: must be one line"),
        ({"action": "fault", "errno": 5, "containerNames": ["Bad_Name"]}, "spec.containerNames[0]: must be a DNS-1123"),
        ({"action": "fault", "errno": 5, "volumepath": "/x"}, "volumepath"),  # unknown field, named
    ],
)
def test_bad_fields_are_refused_by_name(spec: dict[str, Any], message: str) -> None:
    found = errors(**spec)
    assert any(message in e for e in found), found
