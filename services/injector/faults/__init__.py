"""Fault kinds: one module each, registered by fault tag in a plain dict.

A fault acts on ONE target (the containers of one pod, already resolved to handles); selection,
fan-out, retries and phases belong to the injector core. `apply` and `recover` are idempotent,
and a target that is gone (process dead, netns gone) counts as recovered. Both return a short
human message for the status record and raise `FaultError` on failure. They are sync and may
block for a few milliseconds (a process spawn): the core calls them via `asyncio.to_thread`.

Adding a kind: its spec Struct in `messages.py`, a module here ending in `register(...)`, its
import at the bottom of this file, its tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from chaosbus.common.messages import FaultSpec, TargetAction
from chaosbus.common.netns import netns_inode
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


REGISTRY: dict[str, Fault] = {}


def register(fault: Fault, registry: dict[str, Fault] | None = None) -> Fault:
    """Add `fault` under its tag (to `registry`, default the module's REGISTRY)."""
    target = REGISTRY if registry is None else registry
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
        return (REGISTRY if registry is None else registry)[tag]
    except KeyError:
        raise FaultError(f"fault {tag!r} is not supported by this injector", retryable=False) from None


def batched(tag: str, registry: dict[str, Fault] | None = None) -> bool:
    """Whether the fault registered for `tag` asked for its targets to run in batches."""
    fault = (REGISTRY if registry is None else registry).get(tag)
    return bool(getattr(fault, "batched", False))


def spec_tag(spec: FaultSpec) -> str:
    """The tag a spec is registered under (its msgspec union tag)."""
    return str(type(spec).__struct_config__.tag)


# Imported last: each module registers itself and needs the names above.
from chaosbus.injector.faults import container_kill, hello_world, partition, pod_kill, shaping, task  # noqa: E402

__all__ = [
    "REGISTRY", "CommandOutput", "Fault", "FaultContext", "FaultError", "batched", "container_kill", "get",
    "hello_world", "partition", "pod_kill", "register", "shaping", "spec_tag", "task",
]
