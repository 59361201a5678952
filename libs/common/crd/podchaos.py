"""PodChaos: pod-kill, pod-failure, container-kill."""

from __future__ import annotations

from typing import Self

from chaosbus.common.crd.common import ContainerSelectorBase, with_default_namespace
from chaosbus.common.crd.errors import Problems

ACTIONS = ("pod-kill", "pod-failure", "container-kill")


class PodChaosSpec(ContainerSelectorBase, kw_only=True):
    action: str = ""
    grace_period: int = 0

    def validate(self) -> None:
        problems = Problems()
        problems.one_of("spec.action", self.action, ACTIONS)
        self.check_common(problems)
        if self.grace_period < 0:
            problems.add("spec.gracePeriod", f"must be >= 0, got {self.grace_period}")
        if self.action == "container-kill" and not self.container_names:
            problems.add("spec.containerNames", "container-kill needs at least one container name")
        problems.raise_if_any()

    def defaulted(self, namespace: str) -> Self:
        return with_default_namespace(self, namespace)  # type: ignore[return-value]
