"""What the DNS responder and the HTTP proxy share: one server per network namespace, serving the
rules of every experiment on that namespace, and stopping when the last rule goes.

A server's thread sits inside its namespace and so keeps it alive; a rule therefore names the
target's processes, and a rule whose processes are all gone is dropped by the server itself, so a
pod that ended never leaves a server (and its namespace) behind.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

R = TypeVar("R")


class Rules(Generic[R]):
    """Experiments' rules by key, in the order they were added (the order they act in), each with
    the processes whose end drops it. `_lock` guards them and is the server's lock too.
    """

    def __init__(self) -> None:
        self.rules: dict[str, R] = {}
        self._owners: dict[str, tuple[int, ...]] = {}
        self._lock = threading.Lock()

    def set_rule(self, key: str, rule: R, pids: tuple[int, ...] = ()) -> None:
        """Add or replace a rule; `pids`: the target's processes, whose end drops the rule."""
        with self._lock:
            self.rules[key] = rule
            self._owners[key] = pids

    def drop_rule(self, key: str) -> bool:
        """Remove a rule; True when none is left."""
        with self._lock:
            self.rules.pop(key, None)
            self._owners.pop(key, None)
            return not self.rules

    def snapshot(self) -> list[R]:
        with self._lock:
            return list(self.rules.values())

    def _drop_orphaned_rules(self) -> bool:
        """Drop the rules whose target processes are all gone; True when none is left."""
        with self._lock:
            for key, pids in list(self._owners.items()):
                if pids and not any(os.path.exists(f"/proc/{pid}") for pid in pids):
                    self.rules.pop(key, None)
                    self._owners.pop(key, None)
            return not self.rules


class Server(Protocol):
    netns_path: str

    @property
    def alive(self) -> bool: ...

    def drop_rule(self, key: str) -> bool: ...

    def stop(self) -> None: ...


S = TypeVar("S", bound=Server)


def netns_key(netns_path: str) -> str:
    # A pod's containers reach one netns by different /proc paths: one server per namespace.
    try:
        st = os.stat(netns_path)
    except OSError:
        return netns_path
    return f"{st.st_dev}:{st.st_ino}"


class Servers(Generic[S]):
    """The servers of one sort an injector runs, one per namespace (each `Backends` has its own)."""

    def __init__(self, start: Callable[[str], S]) -> None:
        self._start = start
        self._servers: dict[str, S] = {}
        self._lock = threading.Lock()

    def ensure(self, netns_path: str) -> S:
        """The namespace's server, started if there is none (or it ended)."""
        with self._lock:
            key = netns_key(netns_path)
            server = self._servers.get(key)
            if server is None or not server.alive:
                server = self._start(netns_path)
                self._servers[key] = server
            return server

    def release(self, netns_path: str, rule_key: str) -> None:
        """Drop one experiment's rule; the server stops when it has none left."""
        with self._lock:
            key = netns_key(netns_path)
            server = self._servers.get(key)
            if server is None:  # the namespace is gone: found by the path it was started with
                key, server = next(
                    ((k, s) for k, s in self._servers.items() if s.netns_path == netns_path), (key, None)
                )
            if server is None:
                return
            if server.drop_rule(rule_key):
                del self._servers[key]
                server.stop()

    def running(self) -> dict[str, S]:
        """The live servers by namespace (those that stopped on their own are forgotten)."""
        with self._lock:
            for key in [k for k, s in self._servers.items() if not s.alive]:
                del self._servers[key]
            return dict(self._servers)
