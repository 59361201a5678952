"""StressChaos decoding, admission (every field bounded) and the planner's stress-ng argv."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from chaosbus.common.crd.errors import InvalidObject
from chaosbus.common.crd.stresschaos import StressChaosSpec, size_arg, stressors


def spec(**fields: Any) -> StressChaosSpec:
    return msgspec.convert({"mode": "all", "selector": {}, **fields}, StressChaosSpec)


def problems(s: StressChaosSpec) -> str:
    with pytest.raises(InvalidObject) as e:
        s.validate()
    return "\n".join(e.value.errors)


def test_cpu_and_memory_become_chaos_meshs_argv() -> None:
    s = spec(
        stressors={
            "cpu": {"workers": 2, "load": 50, "options": ["--cpu-method all"]},
            "memory": {"workers": 3, "size": "256MB", "oomScoreAdj": -100},
        }
    )
    s.validate()
    cpu, mem = stressors(s)
    assert cpu.args == [
        "--cpu-load-slice",
        "10",
        "--cpu-method",
        "sqrt",
        "--cpu",
        "2",
        "--cpu-load",
        "50",
        "--cpu-method",
        "all",
    ]
    assert mem.args == ["--vm", "3", "--vm-keep", "--vm-hang", "0", "--vm-bytes", "256000000"]
    assert mem.oom_score_adj == -100


def test_stressng_stressors_are_split_like_a_shell_but_never_run_by_one() -> None:
    s = spec(stressngStressors="--cpu 1 --metrics-brief --log-file '/tmp/a b'")
    s.validate()
    [raw] = stressors(s)
    assert raw.args == ["--cpu", "1", "--metrics-brief", "--log-file", "/tmp/a b"]


def test_a_stressor_with_no_workers_is_left_out() -> None:
    assert [x.name for x in stressors(spec(stressors={"cpu": {"workers": 0}, "memory": {"workers": 1}}))] == ["memory"]


@pytest.mark.parametrize(
    ("size", "arg"), [("256MB", "256000000"), ("1GiB", str(2**30)), ("512", "512"), ("25%", "25%"), ("1 kib", "1024")]
)
def test_sizes(size: str, arg: str) -> None:
    assert size_arg(size) == arg


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "one of stressors and stressngStressors is required"),
        ({"stressors": {}}, "spec.stressors: one of cpu and memory is required"),
        ({"stressors": {"cpu": {"workers": 9000}}}, "spec.stressors.cpu.workers: must be in [0, 8192]"),
        ({"stressors": {"cpu": {"workers": 1, "load": 101}}}, "spec.stressors.cpu.load: must be in [0, 100]"),
        ({"stressors": {"memory": {"workers": 1, "size": "lots"}}}, "spec.stressors.memory.size: expected bytes"),
        ({"stressors": {"memory": {"workers": 1, "size": "150%"}}}, "spec.stressors.memory.size"),
        ({"stressors": {"memory": {"workers": 1, "oomScoreAdj": -1001}}}, "oomScoreAdj: must be in [-1000, 1000]"),
        ({"stressors": {"cpu": {"workers": 1, "options": ["x"] * 65}}}, "at most 64 options"),
        ({"stressors": {"cpu": {"workers": 1, "options": ["x" * 257]}}}, "options[0]: must be at most 256"),
        ({"stressngStressors": "--cpu 'open"}, "spec.stressngStressors: cannot be split"),
        ({"stressngStressors": "x" * 4097}, "spec.stressngStressors: must be at most 4096"),
    ],
)
def test_admission_names_the_field(fields: dict[str, Any], message: str) -> None:
    assert message in problems(spec(**fields))
