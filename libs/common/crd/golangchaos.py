"""GolangChaos, a kind of chaosbus's own (Chaos Mesh never shipped it): make `(*DB).Query` and
`(*DB).QueryContext` of `database/sql` return an error inside the target's running Go programs
(`action: sql-error`, the only action and the default) for `duration`. `containerName` (a list)
picks the containers; absent, every container of the pod. Pure.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Self

import msgspec

from chaosbus.common import faultspecs as fs
from chaosbus.common.crd import bounds
from chaosbus.common.crd.common import PodSelectorBase, with_default_namespace
from chaosbus.common.crd.errors import Problems

if TYPE_CHECKING:
    from chaosbus.common.faultplan import Selected

SQL_ERROR = "sql-error"
ACTIONS = (SQL_ERROR,)
MAX_CONTAINER_NAMES = 64


class GolangChaosSpec(PodSelectorBase, kw_only=True):
    action: str = SQL_ERROR
    container_names: list[str] = msgspec.field(default_factory=list, name="containerName")

    def validate(self) -> None:
        problems = Problems()
        self.check_common(problems)
        if self.action not in ACTIONS:
            problems.add("spec.action", f"unknown action {bounds.show(self.action)} (one of {', '.join(ACTIONS)})")
        if not self.duration:
            problems.add("spec.duration", f"is required for {SQL_ERROR} (a duration such as 30s or 5m)")
        if len(self.container_names) > MAX_CONTAINER_NAMES:
            problems.add("spec.containerName", f"at most {MAX_CONTAINER_NAMES} names, got {len(self.container_names)}")
        else:
            for i, name in enumerate(self.container_names):
                bounds.dns_label(problems, f"spec.containerName[{i}]", name)
        problems.raise_if_any()

    def defaulted(self, namespace: str) -> Self:
        return with_default_namespace(self, namespace)  # type: ignore[return-value]


def plan(obj: Any, target: Selected, everyone: Any) -> fs.GoSqlError:
    """One container's fault: every Go process of the selected container (one record each)."""
    assert isinstance(obj.spec, GolangChaosSpec)
    return fs.GoSqlError(container_names=[target.container.name] if target.container else [])
