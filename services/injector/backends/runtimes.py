"""The container runtimes an injector asks (`runtime.py` resolves container IDs through them): the
sockets and deadline it was configured with, one adapter per runtime (CRI for containerd and CRI-O,
the Docker Engine API for Docker) made on first use, each with its `Breaker`, and the map of named
network namespaces. Each `Backends` owns one `Runtimes`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from chaosbus.common import settings
from chaosbus.injector.backends.containers import DEFAULT_TIMEOUT_S, Breaker
from chaosbus.injector.backends.dockerapi import DockerClient

if TYPE_CHECKING:  # grpcio costs ~20 MB of RSS: loaded only on a node that meets a CRI container ID
    from chaosbus.injector.backends.cri import CriClient

CRI_RUNTIMES = ("containerd", "cri-o")
# scheme -> (environment variable, default socket path)
SOCKET_ENV = {
    "containerd": ("CHAOSBUS_CONTAINERD_SOCKET", "/run/containerd/containerd.sock"),
    "cri-o": ("CHAOSBUS_CRIO_SOCKET", "/var/run/crio/crio.sock"),
    "docker": ("CHAOSBUS_DOCKER_SOCKET", "/var/run/docker.sock"),
}
# After a runtime timed out or was unavailable, calls to it fail at once for this long.
BREAKER_COOLDOWN_S = 5.0


@dataclass(frozen=True)
class RuntimeConfig:
    """The runtime sockets this node uses and the deadline of each runtime call."""

    sockets: dict[str, str]
    timeout: float = DEFAULT_TIMEOUT_S


def config_from_env(
    containerd: str | None = None, crio: str | None = None, docker: str | None = None, timeout: float | None = None
) -> RuntimeConfig:
    """Explicit values first, then CHAOSBUS_*_SOCKET / CHAOSBUS_RUNTIME_TIMEOUT, then the defaults."""
    explicit = {"containerd": containerd, "cri-o": crio, "docker": docker}
    given = settings.current()
    configured = {"containerd": given.containerd_socket, "cri-o": given.crio_socket, "docker": given.docker_socket}
    sockets = {s: explicit[s] or configured[s] or default for s, (_env, default) in SOCKET_ENV.items()}
    if timeout is None:
        timeout = given.runtime_timeout or DEFAULT_TIMEOUT_S
    if timeout <= 0:
        raise ValueError(f"runtime timeout must be > 0 seconds, got {timeout}")
    return RuntimeConfig(sockets=sockets, timeout=timeout)


class Runtimes:
    """One injector's runtime adapters. `config` None: read from the environment on first use."""

    def __init__(self, config: RuntimeConfig | None = None) -> None:
        self._lock = threading.Lock()
        self._config = config
        self._clients: dict[str, tuple[CriClient | DockerClient, Breaker]] = {}
        # (device, inode) of a namespace -> its /var/run/netns path (see runtime._named_netns)
        self.named_netns: dict[tuple[int, int], str] = {}

    def configure(self, config: RuntimeConfig) -> None:
        """Use `config` from now on (tests point the adapters at a fake runtime's sockets)."""
        with self._lock:
            self._close()
            self._config = config

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        for scheme, (adapter, _) in self._clients.items():
            if scheme in CRI_RUNTIMES:
                adapter.close()  # type: ignore[union-attr]
        self._clients.clear()

    def client(self, scheme: str) -> tuple[CriClient | DockerClient, Breaker]:
        """The adapter for a runtime scheme (made on first use), and its breaker."""
        with self._lock:
            if self._config is None:
                self._config = config_from_env()
            found = self._clients.get(scheme)
            if found is None:
                path = self._config.sockets[scheme]
                adapter: CriClient | DockerClient
                if scheme in CRI_RUNTIMES:
                    from chaosbus.injector.backends.cri import CriClient

                    adapter = CriClient(path, runtime=scheme, timeout=self._config.timeout)
                else:
                    adapter = DockerClient(path, timeout=self._config.timeout)
                found = self._clients[scheme] = (adapter, Breaker(BREAKER_COOLDOWN_S))
            return found
