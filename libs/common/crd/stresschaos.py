"""StressChaos: stress-ng stressors inside the target container's cgroup and PID namespace.

Fields per Chaos Mesh v1alpha1 (`stressors.cpu`, `stressors.memory`, `stressngStressors`). The planner
turns the spec into stress-ng argument lists (options parsed to argv, never a shell); the injector
adds the binary and `--timeout` (the time left), so each stressor ends on its own at the deadline.
"""

from __future__ import annotations

import re
import shlex
from typing import TYPE_CHECKING, Any, Self

import msgspec

from chaosbus.common import faultspecs as fs
from chaosbus.common.crd import bounds
from chaosbus.common.crd.common import ContainerSelectorBase, with_default_namespace
from chaosbus.common.crd.errors import Problems

if TYPE_CHECKING:
    from chaosbus.common.faultplan import Selected

MAX_WORKERS = 8192  # Chaos Mesh's bound
MAX_OPTIONS = 64
MAX_OPTION_CHARS = 256
MAX_STRESSNG_CHARS = 4096
# Chaos Mesh's size syntax: bytes with a decimal or binary unit, or a percentage of memory.
_SIZE = re.compile(r"^\s*([0-9]+)\s*(B|KB|MB|GB|TB|KIB|MIB|GIB|TIB|K|M|G|T)?\s*$", re.IGNORECASE)
_PERCENT = re.compile(r"^\s*([0-9]{1,3})\s*%\s*$")
_UNITS = {
    "": 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "K": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}


class _S(msgspec.Struct, rename="camel", omit_defaults=True, kw_only=True, forbid_unknown_fields=True):
    pass


class CPUStressor(_S):
    workers: int
    load: int | None = None
    options: list[str] = []


class MemoryStressor(_S):
    workers: int = 0
    size: str = ""
    oom_score_adj: int = 0
    options: list[str] = []


class Stressors(_S):
    cpu: CPUStressor | None = None
    memory: MemoryStressor | None = None


class StressChaosSpec(ContainerSelectorBase, kw_only=True):
    stressors: Stressors | None = None
    stressng_stressors: str = msgspec.field(default="", name="stressngStressors")

    def validate(self) -> None:
        problems = Problems()
        self.check_common(problems)
        if self.stressors is None and not self.stressng_stressors:
            problems.add("spec", "one of stressors and stressngStressors is required")
        if self.stressors is not None:
            if self.stressors.cpu is None and self.stressors.memory is None:
                problems.add("spec.stressors", "one of cpu and memory is required")
            if (cpu := self.stressors.cpu) is not None:
                _workers(problems, "spec.stressors.cpu.workers", cpu.workers)
                if cpu.load is not None and not 0 <= cpu.load <= 100:
                    problems.add("spec.stressors.cpu.load", f"must be in [0, 100], got {cpu.load}")
                _options(problems, "spec.stressors.cpu.options", cpu.options)
            if (mem := self.stressors.memory) is not None:
                _workers(problems, "spec.stressors.memory.workers", mem.workers)
                if mem.size and size_arg(mem.size) is None:
                    problems.add(
                        "spec.stressors.memory.size",
                        f"expected bytes with a unit (256MB, 1GiB) or a percentage (50%), got {bounds.show(mem.size)}",
                    )
                if not -1000 <= mem.oom_score_adj <= 1000:
                    problems.add(
                        "spec.stressors.memory.oomScoreAdj", f"must be in [-1000, 1000], got {mem.oom_score_adj}"
                    )
                _options(problems, "spec.stressors.memory.options", mem.options)
        if self.stressng_stressors:
            if len(self.stressng_stressors) > MAX_STRESSNG_CHARS:
                problems.add("spec.stressngStressors", f"must be at most {MAX_STRESSNG_CHARS} characters")
            else:
                try:
                    if not shlex.split(self.stressng_stressors):
                        problems.add("spec.stressngStressors", "names no stressor")
                except ValueError as e:
                    problems.add("spec.stressngStressors", f"cannot be split into arguments: {e}")
        problems.raise_if_any()

    def defaulted(self, namespace: str) -> Self:
        return with_default_namespace(self, namespace)  # type: ignore[return-value]


def _workers(problems: Problems, path: str, value: int) -> None:
    if not 0 <= value <= MAX_WORKERS:
        problems.add(path, f"must be in [0, {MAX_WORKERS}], got {value}")


def _options(problems: Problems, path: str, options: list[str]) -> None:
    if len(options) > MAX_OPTIONS:
        problems.add(path, f"at most {MAX_OPTIONS} options, got {len(options)}")
    for i, o in enumerate(options):
        if len(o) > MAX_OPTION_CHARS:
            problems.add(f"{path}[{i}]", f"must be at most {MAX_OPTION_CHARS} characters")


def size_arg(size: str) -> str | None:
    """`size` as stress-ng's `--vm-bytes` value (bytes, or N%); None if it is not Chaos Mesh's syntax."""
    if (p := _PERCENT.match(size)) is not None:
        return f"{int(p.group(1))}%" if 0 < int(p.group(1)) <= 100 else None
    if (m := _SIZE.match(size)) is None:
        return None
    n = int(m.group(1)) * _UNITS[(m.group(2) or "").upper()]
    return str(n) if 0 < n <= bounds.U64 else None


def option_args(options: list[str]) -> list[str]:
    """Each option may hold a flag and its value (`--cpu-method all`): split like a shell would, run as argv."""
    return [arg for o in options for arg in shlex.split(o)]


def stressors(spec: StressChaosSpec) -> list[fs.Stressor]:
    """The stress-ng processes one target runs (Chaos Mesh's argv, without the binary and the timeout).
    A stressor with 0 workers is left out, as in Chaos Mesh.
    """
    out: list[fs.Stressor] = []
    s = spec.stressors
    if s is not None and s.cpu is not None and s.cpu.workers > 0:
        args = ["--cpu-load-slice", "10", "--cpu-method", "sqrt", "--cpu", str(s.cpu.workers)]
        if s.cpu.load is not None:
            args += ["--cpu-load", str(s.cpu.load)]
        out.append(fs.Stressor(name="cpu", args=args + option_args(s.cpu.options)))
    if s is not None and s.memory is not None and s.memory.workers > 0:
        # --vm-bytes is shared by the workers; --vm-hang 0 holds the memory without burning CPU.
        args = ["--vm", str(s.memory.workers), "--vm-keep", "--vm-hang", "0"]
        if s.memory.size:
            args += ["--vm-bytes", size_arg(s.memory.size) or s.memory.size]
        out.append(
            fs.Stressor(
                name="memory", args=args + option_args(s.memory.options), oom_score_adj=s.memory.oom_score_adj or None
            )
        )
    if spec.stressng_stressors:
        out.append(fs.Stressor(name="stressng", args=shlex.split(spec.stressng_stressors)))
    return out


def plan(obj: Any, target: Selected, everyone: Any) -> fs.Stress:
    spec = obj.spec
    assert isinstance(spec, StressChaosSpec)
    return fs.Stress(stressors=stressors(spec))
