"""Fault kinds: one module each, registered by fault tag in a plain dict.

A fault acts on ONE target (the containers of one pod, already resolved to handles); selection,
fan-out, retries and phases belong to the injector core. `apply` and `recover` are idempotent,
and a target that is gone (process dead, netns gone) counts as recovered. Both return a short
human message for the status record and raise `FaultError` on failure. They are sync and may
block for a few milliseconds (a process spawn): the core calls them via `asyncio.to_thread`.

Besides `apply` and `recover`, a fault module declares what the injector's machinery needs to know
about it, as optional attributes (defaults in brackets): `one_shot` (False: it leaves state that
is journaled until recovered), `batched` (False), `ends_with_machine` (False: its effect may outlive
this machine, an API object say; True: it lives only in this machine's kernel or processes, so
its intent is journaled without an fsync of its own), `original_state(experiment_uid, action, containers, backends)`
(what recovering restores, journaled before `apply` runs and handed back to `apply` and `recover`
as `FaultContext.original`; {}), `orphans` (None: the marked kernel objects the
orphan sweeper removes when no open journal entry owns them) and `state_files` (None: the files
it keeps in the injector's state directory, which the sweeper removes once no open entry and no
live process owns them). Adding a fault: a module here ending
in `register(...)`, its name in `NODE_FAULTS` below, its tests (see docs/architecture.md,
"Adding a fault kind").
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from chaosbus.common.messages import FaultSpec, TargetAction
from chaosbus.common.netns import netns_inode
from chaosbus.injector.backends.kit import Backends, process_backends
from chaosbus.injector.runtime import ContainerHandle


class FaultError(Exception):
    """A fault could not be applied or recovered; `retryable` tells the core whether to retry."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable


@dataclass(frozen=True)
class FaultContext:
    """Everything a fault knows about its one target."""

    experiment_uid: str
    experiment_name: str
    namespace: str
    action: TargetAction
    containers: list[ContainerHandle]  # resolved from action.container_ids, same order
    deadline: float | None = None  # when the fault must end (epoch seconds); None: until recovered
    original: Mapping[str, Any] = field(default_factory=dict)  # as journaled (see `original_state`)
    node: str = ""  # the injector's node name: the mark its helper processes carry for the sweeper
    backends: Backends = field(default_factory=process_backends)  # what the fault runs on

    def alive(self) -> list[ContainerHandle]:
        return [c for c in self.containers if c.alive]

    def netns_paths(self) -> list[str]:
        """Distinct netns paths of the live containers (a pod's containers share one netns)."""
        seen: dict[int, str] = {}
        for c in self.alive():
            try:
                seen.setdefault(netns_inode(c.netns_path), c.netns_path)
            except FileNotFoundError:
                continue
        return list(seen.values())


@dataclass(frozen=True)
class CommandOutput:
    """What a fault that runs a command returns from `apply` instead of a bare message."""

    message: str
    exit_code: int
    stdout: str


class Fault(Protocol):
    """A fault kind. One may also set `batched = True`: its apply and recover are sub-millisecond
    kernel transactions that never wait, so a command's targets run one after another in a few
    worker threads instead of one thread each (see `batched`).
    """

    name: str  # the FaultSpec tag

    def apply(self, ctx: FaultContext, spec: FaultSpec) -> str | CommandOutput: ...

    def recover(self, ctx: FaultContext, spec: FaultSpec) -> str: ...


class Orphans(Protocol):
    """Kernel objects a fault marks as its own in a network namespace (nft tables by name prefix,
    tc objects by handle), so the sweeper can find what a crash or a lost recover left behind.
    """

    what: str  # for the sweep report: "nft table", "traffic shaping"

    def find(self, netns_path: str, backends: Backends) -> list[str]:
        """The marked objects in the namespace (their names), read through the injector's
        `backends`; raises if the namespace cannot be read."""
        ...

    def owned(self, originals: list[dict[str, Any]]) -> set[str] | None:
        """Which of them the fault's open entries in that namespace own, from the entries'
        original state; None: all of them (the fault cannot tell its objects apart).
        """
        ...

    def remove(self, netns_path: str, item: str, backends: Backends) -> None:
        """Remove one orphan through `backends`; a namespace that is gone counts as removed."""
        ...


class StateFiles(Protocol):
    """Files a fault keeps on the node beside its kernel objects (rules files, server records,
    sockets), so the sweeper can remove those a crash left behind. Judged under the sweeper's
    exclusive gate: no apply or recover of this injector is between its intent and its effect.
    """

    what: str  # for the sweep report: "iofs state file"

    def find(self, backends: Backends) -> list[str]:
        """Every file of the fault's in the state directory (paths)."""
        ...

    def stale(self, items: list[str], owners: list[Owner], scope: set[int]) -> list[str]:
        """Which of `items` belong to no live fault. `owners`: the original state of each open
        entry of the fault with the inodes of its network namespaces; `scope`: the inodes of the
        network namespaces this sweep may act in (a file of a live target elsewhere may be another
        injector's and is kept)."""
        ...

    def remove(self, item: str, backends: Backends) -> None:
        """Remove one stale file (one already gone counts as removed)."""
        ...


# The original state of one open entry and the inodes of its network namespaces.
Owner = tuple[frozenset[int], Mapping[str, Any]]

# The table of the node's fault kinds, as `REGISTRY`: each module registers itself when imported, and
# the first read of `REGISTRY` imports them all. Importing this package imports none of them, so an
# injector with a registry of its own (the cluster injector's API faults) loads no node fault and none
# of the kernel libraries they use (pyroute2 alone is ~0.15 s and ~11 MB).
_KINDS: dict[str, Fault] = {}
NODE_FAULTS = (
    "container_kill",
    "dns",
    "go_sql_error",
    "hello_world",
    "http",
    "io",
    "partition",
    "pod_kill",
    "process_pod_failure",
    "shaping",
    "stress",
    "task",
    "time_skew",
)


_MODULES = tuple(f"{__name__}.{name}" for name in NODE_FAULTS)


def _registry() -> dict[str, Fault]:
    if not all(m in sys.modules for m in _MODULES):  # the common case, a few dict lookups
        for m in _MODULES:
            importlib.import_module(m)
    return _KINDS


def __getattr__(name: str) -> dict[str, Fault]:
    if name == "REGISTRY":
        return _registry()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def register(fault: Fault, registry: dict[str, Fault] | None = None) -> Fault:
    """Add `fault` under its tag (to `registry`, default the table of the node's fault kinds)."""
    target = _KINDS if registry is None else registry
    if fault.name in target:
        raise ValueError(f"fault {fault.name!r} registered twice")
    target[fault.name] = fault
    return fault


def get(tag: str, registry: dict[str, Fault] | None = None) -> Fault:
    """The fault registered for `tag`.

    Raises:
        FaultError: (not retryable) no such fault on this injector.
    """
    try:
        return (_registry() if registry is None else registry)[tag]
    except KeyError:
        raise FaultError(f"fault {tag!r} is not supported by this injector", retryable=False) from None


def batched(tag: str, registry: dict[str, Fault] | None = None) -> bool:
    """Whether the fault registered for `tag` asked for its targets to run in batches."""
    fault = (_registry() if registry is None else registry).get(tag)
    return bool(getattr(fault, "batched", False))


def ends_with_machine(tag: str, registry: dict[str, Fault] | None = None) -> bool:
    """Whether the fault registered for `tag` declared that its effect cannot outlive a reboot of
    this machine; an unknown fault is assumed to outlive it.
    """
    return getattr((_registry() if registry is None else registry).get(tag), "ends_with_machine", False) is True


def one_shot(tag: str, registry: dict[str, Fault] | None = None) -> bool:
    """Whether the fault registered for `tag` changes nothing that must be recovered; an unknown
    fault is assumed to leave state behind.
    """
    return getattr((_registry() if registry is None else registry).get(tag), "one_shot", False) is True


def original_state(
    tag: str,
    experiment_uid: str,
    action: TargetAction,
    registry: dict[str, Fault] | None = None,
    containers: Sequence[ContainerHandle] = (),
    backends: Backends | None = None,
) -> dict[str, Any]:
    """What recovering the action restores, as the fault module declares it ({} by default), read
    from the target's resolved `containers` (through `backends`, default the process's) where the
    fault needs them."""
    declare = getattr((_registry() if registry is None else registry).get(tag), "original_state", None)
    if declare is None:
        return {}
    state: dict[str, Any] = declare(experiment_uid, action, list(containers), backends or process_backends())
    return state


def orphans(registry: dict[str, Fault] | None = None, tags: Iterable[str] | None = None) -> dict[str, Orphans]:
    """Fault tag -> the orphans it declares, for the faults of `tags` (default: all) that do."""
    reg = _registry() if registry is None else registry
    wanted = reg if tags is None else [t for t in tags if t in reg]
    found = {tag: getattr(reg[tag], "orphans", None) for tag in wanted}
    return {tag: o for tag, o in found.items() if o is not None}


def state_files(registry: dict[str, Fault] | None = None, tags: Iterable[str] | None = None) -> dict[str, StateFiles]:
    """Fault tag -> the state files it declares, for the faults of `tags` (default: all) that do."""
    reg = _registry() if registry is None else registry
    wanted = reg if tags is None else [t for t in tags if t in reg]
    found = {tag: getattr(reg[tag], "state_files", None) for tag in wanted}
    return {tag: f for tag, f in found.items() if f is not None}


def spec_tag(spec: FaultSpec) -> str:
    """The tag a spec is registered under (its msgspec union tag)."""
    return str(type(spec).__struct_config__.tag)


__all__ = [
    "REGISTRY",
    "CommandOutput",
    "Fault",
    "FaultContext",
    "FaultError",
    "Orphans",
    "Owner",
    "batched",
    "ends_with_machine",
    "get",
    "one_shot",
    "original_state",
    "orphans",
    "register",
    "spec_tag",
    "state_files",
    "StateFiles",
]
