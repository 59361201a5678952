"""TimeChaos: shift the clocks the target's processes read (`timeOffset`, `clockIds`), as Chaos
Mesh does by patching each process's vDSO (the node injector's time-skew fault). Pure.
"""

from __future__ import annotations

from typing import Self

import msgspec

from chaosbus.common.crd import bounds
from chaosbus.common.crd.common import ContainerSelectorBase, with_default_namespace
from chaosbus.common.crd.errors import Problems
from chaosbus.common.durations import parse_duration

# The clock ids Chaos Mesh accepts, by name, with Linux's numbers (the payload's mask bit).
CLOCK_IDS: dict[str, int] = {
    "CLOCK_REALTIME": 0,
    "CLOCK_MONOTONIC": 1,
    "CLOCK_PROCESS_CPUTIME_ID": 2,
    "CLOCK_THREAD_CPUTIME_ID": 3,
    "CLOCK_MONOTONIC_RAW": 4,
    "CLOCK_REALTIME_COARSE": 5,
    "CLOCK_MONOTONIC_COARSE": 6,
    "CLOCK_BOOTTIME": 7,
    "CLOCK_REALTIME_ALARM": 8,
    "CLOCK_BOOTTIME_ALARM": 9,
    "CLOCK_SGI_CYCLE": 10,
    "CLOCK_TAI": 11,
}
DEFAULT_CLOCKS = ("CLOCK_REALTIME",)
MAX_CONTAINER_NAMES = 64
# The payload adds nanoseconds in an int64 to clocks that are themselves int64 nanoseconds; a
# century either way keeps every sum far from overflow.
MAX_OFFSET_S = 100 * 365 * 86400


class TimeChaosSpec(ContainerSelectorBase, kw_only=True):
    time_offset: str = ""
    clock_ids: list[str] = msgspec.field(default_factory=list, name="clockIds")

    def validate(self) -> None:
        problems = Problems()
        self.check_common(problems)
        if not self.time_offset:
            problems.add("spec.timeOffset", "is required (a duration such as -1h, 10m or -150ms)")
        else:
            try:
                if abs(parse_duration(self.time_offset)) > MAX_OFFSET_S:
                    problems.add(
                        "spec.timeOffset",
                        f"must be within ±{MAX_OFFSET_S // 3600}h, got {bounds.show(self.time_offset)}",
                    )
            except ValueError as e:
                problems.add("spec.timeOffset", str(e))
        if len(self.clock_ids) > len(CLOCK_IDS):
            problems.add("spec.clockIds", f"at most {len(CLOCK_IDS)} clocks, got {len(self.clock_ids)}")
        else:
            for i, name in enumerate(self.clock_ids):
                if name not in CLOCK_IDS:
                    problems.add(
                        f"spec.clockIds[{i}]", f"unknown clock {bounds.show(name)} (one of {', '.join(CLOCK_IDS)})"
                    )
        if len(self.container_names) > MAX_CONTAINER_NAMES:
            problems.add("spec.containerNames", f"at most {MAX_CONTAINER_NAMES} names, got {len(self.container_names)}")
        else:
            for i, name in enumerate(self.container_names):
                bounds.dns_label(problems, f"spec.containerNames[{i}]", name)
        problems.raise_if_any()

    def defaulted(self, namespace: str) -> Self:
        spec = with_default_namespace(self, namespace)
        if not self.clock_ids:
            spec = msgspec.structs.replace(spec, clock_ids=list(DEFAULT_CLOCKS))
        return spec  # type: ignore[return-value]

    def offset_ns(self) -> int:
        return round(parse_duration(self.time_offset) * 1e9)

    def clock_mask(self) -> int:
        mask = 0
        for name in self.clock_ids or DEFAULT_CLOCKS:
            mask |= 1 << CLOCK_IDS[name]
        return mask
