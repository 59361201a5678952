"""Spec fields every pod-based experiment kind shares (selector, mode, value, duration)."""

from __future__ import annotations

import msgspec

from chaosbus.common.crd import bounds
from chaosbus.common.crd.errors import Problems
from chaosbus.common.crd.selectors import (
    PodSelectorSpec,
    default_namespaces,
    validate_mode,
    validate_selector,
)
from chaosbus.common.durations import parse_duration


class PodSelectorBase(msgspec.Struct, rename="camel", omit_defaults=True, kw_only=True, forbid_unknown_fields=True):
    """The embedded PodSelector (`selector`, `mode`, `value`) plus `duration` and `remoteCluster`."""

    selector: PodSelectorSpec = msgspec.field(default_factory=PodSelectorSpec)
    mode: str = ""
    value: str = ""
    duration: str | None = None
    remote_cluster: str = ""

    def duration_seconds(self) -> float | None:
        """None when absent or empty: the experiment runs until deleted or paused."""
        if not self.duration:
            return None
        return parse_duration(self.duration)

    def check_common(self, problems: Problems) -> None:
        validate_mode(problems, "spec.", self.mode, self.value)
        validate_selector(problems, "spec.selector", self.selector)
        if self.duration:
            try:
                seconds = parse_duration(self.duration)
                if seconds < 0:
                    problems.add("spec.duration", f"must not be negative, got {self.duration!r}")
                elif seconds > bounds.MAX_DURATION_S:
                    problems.add(
                        "spec.duration",
                        f"must be at most {bounds.MAX_DURATION_S // 3600}h (a fault's "
                        f"deadline must fit the kernel's clock), got {self.duration!r}",
                    )
            except ValueError as e:
                problems.add("spec.duration", str(e))


class ContainerSelectorBase(PodSelectorBase, kw_only=True):
    """A PodSelector plus `containerNames` (empty: the first container of each pod)."""

    container_names: list[str] = []


def with_default_namespace(spec: PodSelectorBase, namespace: str) -> PodSelectorBase:
    return msgspec.structs.replace(spec, selector=default_namespaces(spec.selector, namespace))
