"""HelloWorldChaos, the docs' example kind: runs `ps aux` in the target container's mount namespace."""

from __future__ import annotations

from typing import Self

from chaosbus.common.crd.common import ContainerSelectorBase, with_default_namespace
from chaosbus.common.crd.errors import Problems


class HelloWorldChaosSpec(ContainerSelectorBase, kw_only=True):
    def validate(self) -> None:
        problems = Problems()
        self.check_common(problems)
        problems.raise_if_any()

    def defaulted(self, namespace: str) -> Self:
        return with_default_namespace(self, namespace)  # type: ignore[return-value]
