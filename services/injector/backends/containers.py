"""What a container runtime reports about one container, and how a runtime call fails.

Shared by the CRI (`cri.py`) and Docker Engine (`dockerapi.py`) adapters, so `runtime.py` treats
every runtime alike: an `Observed` container, `None` for one the runtime does not know (removed:
the target is gone), or a `RuntimeCallError` saying whether a retry could help; and a `Breaker`
that stops asking a runtime which just timed out.
"""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

DEFAULT_TIMEOUT_S = 2.0
T = TypeVar("T")


@dataclass(frozen=True)
class Observed:
    """One container as its runtime sees it: its init process's host PID, whether it runs, and its
    labels (the kubelet's `io.kubernetes.pod.uid` among them; None: the reply had none to give).
    """

    pid: int
    running: bool
    labels: dict[str, str] | None = None


class RuntimeCallError(Exception):
    """A runtime call failed: the socket is missing, the runtime refused, timed out or answered
    something that is not what the API says. `retryable`: a later attempt may succeed."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable


def require_socket(path: str, runtime: str) -> None:
    """Fail clearly, before any connection attempt, when `path` is not a unix socket.

    Raises:
        RuntimeCallError: (not retryable) the socket is absent or something else is at its path.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise RuntimeCallError(
            f"{runtime} socket {path} does not exist on this node: mount the runtime's "
            "socket into the injector or point the injector at it (see docs/cluster.md, "
            "Container runtimes)"
        ) from None
    except PermissionError:
        raise RuntimeCallError(f"{runtime} socket {path} is not accessible to the injector") from None
    if not stat.S_ISSOCK(mode):
        raise RuntimeCallError(f"{runtime} socket {path} is not a unix socket")


def pid_from_json(text: str, where: str) -> int:
    """The `"pid"` of a JSON object (the CRI verbose `info["info"]` of containerd and CRI-O).

    Raises:
        RuntimeCallError: (not retryable) not JSON, not an object, or no non-negative integer pid.
    """
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise RuntimeCallError(f"{where} is not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise RuntimeCallError(f"{where} is not a JSON object")
    return checked_pid(doc.get("pid"), f"{where} pid")


def checked_pid(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise RuntimeCallError(f"{where} must be a non-negative integer, got {value!r}")
    return value


class Breaker:
    """Fail fast while a runtime is unresponsive: after a retryable failure (timeout, unavailable)
    every call for `cooldown` seconds fails at once with that error instead of waiting out its own
    deadline, so a hung runtime costs a command of 1,000 targets one timeout, not 1,000.
    Thread-safe enough without a lock: a race costs at most one extra real call.
    """

    def __init__(self, cooldown: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.cooldown, self.clock = cooldown, clock
        self._until = 0.0
        self._error: RuntimeCallError | None = None

    def call(self, fn: Callable[[], T]) -> T:
        """`fn()`, unless the breaker is open.

        Raises:
            RuntimeCallError: `fn`'s own, or (retryable) the one that opened the breaker.
        """
        error, now = self._error, self.clock()
        if error is not None and now < self._until:
            raise RuntimeCallError(f"{error.message} (not asked again for {self._until - now:.1f}s)", retryable=True)
        try:
            result = fn()
        except RuntimeCallError as e:
            if e.retryable:
                self._error, self._until = e, self.clock() + self.cooldown
            raise
        self._error = None
        return result
