"""Runtime adapters: turn a Pod's `containerID` into a PID and namespace paths on this node.

The adapter is chosen by the ID's scheme: `process://<pid>[@<start>]` (local mode's process pods,
and what tests put in containerStatuses), `containerd://` and `cri-o://` through the CRI on the runtime's
unix socket (`backends/cri.py`), `docker://` through the Docker Engine API (`backends/dockerapi.py`).
The adapters, and the sockets they use (the injector's flags, or the CHAOSBUS_*_SOCKET
environment), are the `Runtimes` of the caller's backends (`backends/runtimes.py`).
A dead or missing PID, or a container its runtime no longer knows, is not an error: the target is
gone, which faults treat as recovered. Calls are synchronous with a deadline (faults run in
worker threads).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from chaosbus.common import processid
from chaosbus.common.netns import NETNS_RUN_DIR
from chaosbus.injector.backends import procs
from chaosbus.injector.backends.containers import Observed, RuntimeCallError
from chaosbus.injector.backends.kit import process_backends
from chaosbus.injector.backends.runtimes import CRI_RUNTIMES, SOCKET_ENV, RuntimeConfig, Runtimes, config_from_env

KNOWN_RUNTIMES = ("containerd", "cri-o", "docker")
TIMEOUT_ENV = "CHAOSBUS_RUNTIME_TIMEOUT"
# The kubelet labels every container it creates with its pod's uid; CRI runtimes and Docker report it.
POD_UID_LABEL = "io.kubernetes.pod.uid"
POD_NAMESPACE_LABEL = "io.kubernetes.pod.namespace"
POD_UID_ENV = processid.POD_UID_ENV
__all__ = ["SOCKET_ENV", "ContainerHandle", "RuntimeConfig", "UnsupportedRuntime", "config_from_env", "kill", "resolve"]

# Runtime IDs are hex digests in practice; anything outside this set would be spliced into a URL
# path or an RPC argument, so it is refused rather than escaped.
_RUNTIME_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


class UnsupportedRuntime(Exception):
    """This node cannot resolve the container ID: a runtime it lacks or cannot reach, a malformed
    ID, or a runtime reply it cannot use. `retryable`: a later attempt may succeed (a timeout)."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True)
class ContainerHandle:
    """Where one container lives on this node. `alive=False`: the target is gone. `pod_uid`: the
    pod the node says it belongs to ("" none; None the runtime was not asked, e.g. a journaled handle).
    """

    container_id: str
    pid: int
    netns_path: str
    mnt_ns_path: str
    alive: bool
    pod_uid: str | None = None
    pod_namespace: str | None = None


def resolve(container_id: str, runtimes: Runtimes | None = None) -> ContainerHandle:
    """Resolve a runtime-prefixed container ID (`scheme://id`) through `runtimes` (default: those
    of the process's default backends).

    Raises:
        UnsupportedRuntime: the scheme is unknown, the ID malformed, or the runtime unreachable
            (missing socket: not retryable; a timeout: retryable) or its reply unusable.
    """
    scheme, sep, ident = container_id.partition("://")
    if not sep or not ident:
        raise UnsupportedRuntime(f"container id {container_id!r} is not of the form <runtime>://<id>")
    runtimes = runtimes or process_backends().runtimes
    if scheme == "process":
        return _resolve_process(container_id, ident, runtimes)
    if scheme in KNOWN_RUNTIMES:
        return _resolve_runtime(container_id, scheme, ident, runtimes)
    raise UnsupportedRuntime(f"unknown container runtime {scheme!r} in {container_id!r}")


def kill(handle: ContainerHandle, runtimes: Runtimes | None = None) -> bool:
    """Kill a runtime container through its runtime (CRI StopContainer timeout 0, Docker kill
    KILL); False if the runtime no longer knows it.

    Raises:
        UnsupportedRuntime: not a runtime ID, or the runtime call failed.
    """
    scheme, _, ident = handle.container_id.partition("://")
    if scheme not in KNOWN_RUNTIMES or not _RUNTIME_ID.fullmatch(ident):
        raise UnsupportedRuntime(f"{handle.container_id!r} is not a container runtime id")
    adapter, breaker = (runtimes or process_backends().runtimes).client(scheme)
    try:
        return breaker.call(lambda: adapter.stop(ident) if scheme in CRI_RUNTIMES else adapter.kill(ident))  # type: ignore[union-attr]
    except RuntimeCallError as e:
        raise UnsupportedRuntime(e.message, retryable=e.retryable) from None


def _resolve_runtime(container_id: str, scheme: str, ident: str, runtimes: Runtimes) -> ContainerHandle:
    if not _RUNTIME_ID.fullmatch(ident):
        raise UnsupportedRuntime(
            f"container id {container_id!r}: the id after {scheme}:// must be letters, "
            "digits, '.', '_' or '-' (at most 128)"
        )
    try:
        adapter, breaker = runtimes.client(scheme)
        seen: Observed | None = breaker.call(lambda: adapter.status(ident))
    except RuntimeCallError as e:
        raise UnsupportedRuntime(e.message, retryable=e.retryable) from None
    if seen is None or not seen.running or seen.pid <= 1:
        return ContainerHandle(
            container_id=container_id, pid=max(seen.pid if seen else 0, 0), netns_path="", mnt_ns_path="", alive=False
        )
    if not procs.process_alive(seen.pid):
        # The runtime says it runs, we cannot see it: another PID namespace (no hostPID), or the
        # container died between the two looks; a retry tells the two apart.
        raise UnsupportedRuntime(
            f"{scheme} reports {container_id} running as pid {seen.pid}, which this injector "
            "cannot see: run it in the host PID namespace (hostPID: true)",
            retryable=True,
        )
    labels = seen.labels or {}
    pod_uid, pod_namespace = labels.get(POD_UID_LABEL, ""), labels.get(POD_NAMESPACE_LABEL)
    return _live_handle(container_id, seen.pid, pod_uid, pod_namespace, runtimes.named_netns)


def _live_handle(
    container_id: str, pid: int, pod_uid: str, pod_namespace: str | None, named: dict[tuple[int, int], str]
) -> ContainerHandle:
    proc_netns = f"/proc/{pid}/ns/net"
    return ContainerHandle(
        container_id=container_id,
        pid=pid,
        netns_path=_named_netns(proc_netns, named) or proc_netns,
        mnt_ns_path=f"/proc/{pid}/ns/mnt",
        alive=True,
        pod_uid=pod_uid,
        pod_namespace=pod_namespace,
    )


def _resolve_process(container_id: str, ident: str, runtimes: Runtimes) -> ContainerHandle:
    parsed = processid.parse(container_id)
    if parsed is None or parsed.pid <= 1:
        # pid 1 is the node's init: never a process pod, never a fault target.
        raise UnsupportedRuntime(
            f"process container id needs a pid > 1 (process://<pid>[@<start>]), got {container_id!r}"
        )
    pid = parsed.pid
    proc_netns = f"/proc/{pid}/ns/net"
    # A pid whose start time differs is another process that reuses it: the target is gone.
    alive = procs.process_alive(pid) and processid.is_running(parsed)
    return ContainerHandle(
        container_id=container_id,
        pid=pid,
        netns_path=(_named_netns(proc_netns, runtimes.named_netns) or proc_netns) if alive else proc_netns,
        mnt_ns_path=f"/proc/{pid}/ns/mnt",
        alive=alive,
    )


def process_pod(pid: int) -> tuple[str, str | None]:
    """The pod uid and namespace a process pod's supervisor gave this process ("" and None when
    it has none).

    Reading /proc/<pid>/environ costs ~0.2 ms (the kernel checks ptrace access), so callers ask only
    where it matters, not on every resolve.
    """
    env = _environ(pid)
    return env.get(POD_UID_ENV, ""), env.get(processid.POD_NAMESPACE_ENV)


def _environ(pid: int) -> dict[str, str]:
    """The environment a process started with (/proc/<pid>/environ; empty when unreadable)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            raw = f.read()
    except OSError:
        return {}
    pairs = (item.partition(b"=") for item in raw.split(b"\0") if item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, _, v in pairs}


def _named_netns(proc_netns: str, named: dict[tuple[int, int], str]) -> str | None:
    """The /var/run/netns entry for the same namespace as `proc_netns`, if there is one, through
    `named`: (device, inode) of a namespace -> its path, rebuilt on a miss (4.5 ms per target with
    1,000 netns when every lookup scanned the directory, ~5 us from the map).

    A process pod's named netns is its sandbox: it outlives a restarted process, so faults
    address it rather than the process (the Chaos Mesh #4827 lesson).
    """
    try:
        want = os.stat(proc_netns)
    except FileNotFoundError:
        return None
    key = (want.st_dev, want.st_ino)
    path = named.get(key)
    if path is not None and _same(path, key):
        return path
    # A miss or a stale entry: the map is rebuilt once instead of a scan per target. The answer
    # comes from this call's own scan, so a rebuild in another thread cannot empty it meanwhile.
    try:
        names = os.listdir(NETNS_RUN_DIR)
    except FileNotFoundError:
        return None
    fresh: dict[tuple[int, int], str] = {}
    for name in sorted(names):
        candidate = os.path.join(NETNS_RUN_DIR, name)
        try:
            st = os.stat(candidate)
        except FileNotFoundError:
            continue
        fresh.setdefault((st.st_dev, st.st_ino), candidate)
    named.clear()
    named.update(fresh)
    return fresh.get(key)


def _same(path: str, key: tuple[int, int]) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    return (st.st_dev, st.st_ino) == key
