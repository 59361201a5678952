"""io (IOChaos): a FUSE filesystem over the target's volume, inside its mount namespace, that
applies the rules of every experiment on that volume and passes everything else through
(native/iofs, driven through backends/iofs).

`original_state` journals each selected container's process (pid and start time), so recovering
after a restart finds the same mount namespace. `apply` adds the experiment's rule (with the
fault's deadline in it, so the filesystem stops injecting on time even with no chaosbus process
left) to the volume's rules file and mounts iofs there unless a live one already serves it;
`recover` removes the rule and, when it was the last, detaches the mount (lazily: a file opened
through it keeps working until closed, and iofs exits when the last one is).

A server that dies would leave the target with "Transport endpoint is not connected" on the
volume: a watcher thread per server detaches its mount the moment it exits, and a restarted
injector re-asserting the fault finds the dead server's mount, detaches it and mounts a new one.

The orphan sweeper detaches an iofs mount in a pod's network namespace that no open entry owns
(its entry lost, or a recovery that could not finish), judged by mount namespace and mount point,
and removes the state files (rules, server records, control sockets, half-written ones) that no
open entry and no live process needs (`IofsStateFiles`).

Files the target's processes (the container's process and its descendants) opened on the volume
before the mount are moved onto it once it is mounted, and every file open on it is moved back
to the volume after the mount is detached, by re-opening each inside the process with ptrace at
the same descriptor and offset (native/fdswitch, as Chaos Mesh's toda does).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from chaosbus.common import logging as cblog
from chaosbus.common.messages import IO, FaultSpec, TargetAction
from chaosbus.injector.backends import iofs
from chaosbus.injector.backends.kit import Backends
from chaosbus.injector.faults import FaultContext, FaultError, Owner, register
from chaosbus.injector.journal import entry_key
from chaosbus.injector.runtime import ContainerHandle

log = cblog.get("injector.io")
POLL_S = 0.2  # how often an adopted server (not this process's child) is checked for life


def _switch_in(vol: iofs.Volume) -> str:
    """Move the files the target's processes opened on the volume before the mount onto iofs."""
    try:
        return f"{iofs.fdswitch(vol.pid, vol.path)} open files moved"
    except iofs.IofsError as e:
        log.warning("open files not moved onto iofs", volume=vol.path, error=str(e))
        return f"open files not all moved ({e})"


def _detach(vol: iofs.Volume) -> tuple[int, int]:
    """Detach iofs from the volume, then move every file open on it back to the volume.
    (mounts detached, files moved back)."""
    ids = iofs.mount_ids(vol.pid, vol.path)
    n = iofs.umount(vol)
    try:
        moved = iofs.fdswitch(vol.pid, vol.path, from_mounts=ids)
    except iofs.IofsError as e:
        log.warning("open files not moved back from iofs", target=vol.pid, volume=vol.path, error=str(e))
        moved = 0
    return n, moved


def _reload(vol: iofs.Volume, server: tuple[int, int]) -> None:
    """Have the live server put the volume's rules file in force now; returns once it has (a
    server without a control socket is signalled instead and reads it within moments)."""
    if iofs.reload(vol) is None:
        os.kill(server[0], signal.SIGUSR1)


def _server(vol: iofs.Volume) -> tuple[int, int] | None:
    """The live server of the volume as last recorded, None if it is not running."""
    return _recorded_server(vol.server_file)


def _recorded_server(server_file: Path) -> tuple[int, int] | None:
    try:
        pid, start = (int(x) for x in server_file.read_text().split())
    except (OSError, ValueError):
        return None
    return (pid, start) if iofs.start_ticks(pid) == start else None


def _serve(vol: iofs.Volume, volumes: iofs.Volumes) -> str:
    """Make sure a live iofs serves the volume (caller holds the volume's lock in `volumes`)."""
    server = _server(vol)
    if server is not None and iofs.mounts_at(vol.pid, vol.path):
        _reload(vol, server)
        _watch(vol, server, None, volumes)
        return f"iofs {server[0]}"
    if iofs.mounts_at(vol.pid, vol.path):
        _detach(vol)  # its server is dead: every call on it would fail with ENOTCONN
    proc, passthrough = iofs.start(vol)
    start = iofs.start_ticks(proc.pid) or 0
    vol.server_file.write_text(f"{proc.pid} {start}\n")
    _watch(vol, (proc.pid, start), proc, volumes)
    how = "kernel passthrough" if passthrough else "no kernel passthrough"
    return f"iofs {proc.pid} mounted ({how}), {_switch_in(vol)}"


def _watch(
    vol: iofs.Volume, server: tuple[int, int], proc: subprocess.Popen[bytes] | None, volumes: iofs.Volumes
) -> None:
    if not volumes.watch(server):
        return
    threading.Thread(
        target=_watcher, args=(vol, server, proc, volumes), name=f"iofs-watch-{server[0]}", daemon=True
    ).start()


def _watcher(
    vol: iofs.Volume, server: tuple[int, int], proc: subprocess.Popen[bytes] | None, volumes: iofs.Volumes
) -> None:
    """When the server exits: if it still serves the volume (no recovery detached it first), its
    mount would answer ENOTCONN to everything, so it is detached."""
    if proc is not None:
        proc.wait()
    else:
        while iofs.start_ticks(server[0]) == server[1]:
            time.sleep(POLL_S)
    volumes.unwatch(server)
    with volumes.lock(vol):
        try:
            recorded = tuple(int(x) for x in vol.server_file.read_text().split())
        except (OSError, ValueError):
            return
        if recorded != server:
            return
        vol.server_file.unlink(missing_ok=True)
        vol.control.unlink(missing_ok=True)
        try:
            n, moved = _detach(vol)
        except iofs.IofsError as e:
            log.error("iofs died; its mount could not be detached", pid=server[0], volume=vol.path, error=str(e))
            return
        if n:
            log.warning(
                "iofs died; its mount was detached",
                pid=server[0],
                target=vol.pid,
                volume=vol.path,
                files_moved_back=moved,
            )


class IofsMounts:
    """iofs mounts in the mount namespaces of a network namespace's processes, for the orphan
    sweeper. Items are "<mount ns inode>:<mount point>"."""

    what = "iofs mount"

    def _scan(self, netns_path: str, backends: Backends) -> dict[str, int]:
        """item -> a live process in that mount namespace (to enter it by)."""
        inode = os.stat(netns_path).st_ino
        found: dict[str, int] = {}
        seen: set[int] = set()
        # The sweep's shared /proc scan, not one of our own per netns; a process that joined the
        # netns since is found by the next sweep, one that left is checked again here.
        for pid in backends.netns_procs.pids_in(inode):
            name = str(pid)
            try:
                if os.stat(f"/proc/{name}/ns/net").st_ino != inode:
                    continue
                mnt, lines = backends.netns_procs.mount_table(pid)
                if mnt in seen:
                    continue
                seen.add(mnt)
            except OSError:
                continue  # exited meanwhile, or a kernel thread
            for point in iofs.mount_points(lines):
                found.setdefault(f"{mnt}:{point}", int(name))
        return found

    def find(self, netns_path: str, backends: Backends) -> list[str]:
        return sorted(self._scan(netns_path, backends))

    def owned(self, originals: list[dict[str, Any]]) -> set[str] | None:
        out = set()
        for o in originals:
            for t in o.get("targets", []):
                if iofs.start_ticks(t["pid"]) == t["start"]:
                    try:
                        mnt = os.stat(f"/proc/{t['pid']}/ns/mnt").st_ino
                        out.add(f"{mnt}:{o.get('volume', '')}")
                    except OSError:
                        continue
        return out

    def remove(self, netns_path: str, item: str, backends: Backends) -> None:
        pid = self._scan(netns_path, backends).get(item)
        if pid is None:
            return  # gone meanwhile
        point = item.split(":", 1)[1]
        start = iofs.start_ticks(pid)
        if start is not None:
            _detach(iofs.Volume(pid, start, point))


class IofsStateFiles:
    """The files of `iofs.rules_dir()` for the sweeper: per volume its rules, its server's record
    and control socket, and the temporary files of a rules write or a server start that a crash cut
    short. A volume's files are stale once no open entry targets it and its target is gone, or
    neither a live server nor another injector (its target's netns out of the sweep's scope) may
    still need them; a temporary file once its writer is gone (nobody will rename it)."""

    what = "iofs state file"

    def find(self, backends: Backends) -> list[str]:
        try:
            paths = list(iofs.rules_dir(create=False).iterdir())
        except FileNotFoundError:
            return []
        return sorted(str(p) for p in paths if iofs.state_file(p) is not None)

    def stale(self, items: list[str], owners: list[Owner], scope: set[int]) -> list[str]:
        owned = {
            iofs.Volume(t["pid"], t["start"], o.get("volume", "")).rules.stem
            for _, o in owners
            for t in o.get("targets", [])
        }
        verdicts: dict[str, bool] = {}
        out = []
        for item in items:
            f = iofs.state_file(Path(item))
            if f is None:
                continue
            if f.writer is not None:
                if not os.path.exists(f"/proc/{f.writer}"):
                    out.append(item)
                continue
            if f.stem not in verdicts:
                verdicts[f.stem] = f.stem not in owned and _unneeded(f, scope)
            if verdicts[f.stem]:
                out.append(item)
        return out

    def remove(self, item: str, backends: Backends) -> None:
        f = iofs.state_file(Path(item))
        if f is None:
            return
        with backends.iofs.lock_rules(f.rules):  # a watcher thread may be clearing the volume's record
            f.path.unlink(missing_ok=True)


def _unneeded(f: iofs.StateFile, scope: set[int]) -> bool:
    """Whether no process may still need a volume's files that no open entry owns."""
    if iofs.start_ticks(f.pid) != f.start:
        return True  # the target is gone (its server ends with it)
    if _recorded_server(f.server_file) is not None:
        return False  # serving a mount: the mount's own sweep detaches it if it is an orphan
    try:
        return os.stat(f"/proc/{f.pid}/ns/net").st_ino in scope
    except OSError:
        return True  # the target ended meanwhile


def _after_failed_apply(vol: iofs.Volume, rules: dict[str, str], *, mounted: bool) -> None:
    """The volume's files once its server could not take a rule (caller holds the volume's lock):
    the other experiments' rules stay as they were; with none left and no server that may read the
    file (a live one recorded, or one that mounted the volume meanwhile), nothing of the volume is
    left behind for the sweeper."""
    if rules or mounted or _server(vol) is not None:
        iofs.write_rules(vol.rules, rules)
        return
    vol.rules.unlink(missing_ok=True)
    vol.server_file.unlink(missing_ok=True)  # a dead server's record: nothing serves the volume
    vol.control.unlink(missing_ok=True)


def _volumes(ctx: FaultContext, spec: IO) -> list[iofs.Volume]:
    return [iofs.Volume(t["pid"], t["start"], spec.volume_path) for t in ctx.original.get("targets", [])]


class IOFault:
    name = "io"
    orphans = IofsMounts()
    state_files = IofsStateFiles()

    def original_state(
        self, experiment_uid: str, action: TargetAction, containers: list[ContainerHandle], backends: Backends
    ) -> dict[str, Any]:
        targets = []
        for c in containers:
            start = iofs.start_ticks(c.pid) if c.alive else None
            if start is not None:
                targets.append({"pid": c.pid, "start": start})
        volume = action.fault.volume_path if isinstance(action.fault, IO) else ""
        return {"targets": targets, "volume": volume}

    def apply(self, ctx: FaultContext, spec: FaultSpec) -> str:
        assert isinstance(spec, IO)
        key = entry_key(ctx.experiment_uid, ctx.action.selector_key, ctx.action.target_id)
        line = iofs.rule_line(spec, int(ctx.deadline * 1e9) if ctx.deadline else 0)
        done = []
        for vol in _volumes(ctx, spec):
            if not vol.target_alive():
                continue
            with ctx.backends.iofs.lock(vol):
                rules = iofs.read_rules(vol.rules)
                rules[key] = line
                iofs.write_rules(vol.rules, rules)
                try:
                    done.append(_serve(vol, ctx.backends.iofs))
                except iofs.IofsError as e:
                    rules.pop(key, None)
                    _after_failed_apply(vol, rules, mounted=e.already)
                    raise FaultError(f"{spec.volume_path} in process {vol.pid}: {e}", retryable=False) from e
        if not done:
            raise FaultError("target gone: no live container process", retryable=False)
        return f"{spec.action} on {spec.volume_path}{' ' + spec.path if spec.path else ''} ({', '.join(done)})"

    def recover(self, ctx: FaultContext, spec: FaultSpec) -> str:
        assert isinstance(spec, IO)
        key = entry_key(ctx.experiment_uid, ctx.action.selector_key, ctx.action.target_id)
        out = []
        for vol in _volumes(ctx, spec):
            with ctx.backends.iofs.lock(vol):
                rules = iofs.read_rules(vol.rules)
                rules.pop(key, None)
                if not vol.target_alive():
                    vol.rules.unlink(missing_ok=True)
                    vol.server_file.unlink(missing_ok=True)
                    vol.control.unlink(missing_ok=True)
                    out.append("target gone")
                    continue
                iofs.write_rules(vol.rules, rules)
                server = _server(vol)
                if server is not None:
                    # In force before recovery returns, also for files that stay open on a
                    # detached mount (deleted ones, or one fdswitch could not move back).
                    try:
                        _reload(vol, server)
                    except iofs.IofsError as e:
                        log.warning("iofs did not confirm the rules", volume=vol.path, error=str(e))
                if rules:
                    out.append(f"rule removed, {len(rules)} other left")
                    continue
                try:
                    n, moved = _detach(vol)
                except iofs.IofsError as e:
                    raise FaultError(f"detaching iofs from {spec.volume_path} in process {vol.pid}: {e}") from e
                vol.rules.unlink(missing_ok=True)
                vol.server_file.unlink(missing_ok=True)
                vol.control.unlink(missing_ok=True)
                out.append(f"unmounted ({n}), {moved} open files moved back" if n else "nothing mounted")
        return f"recovered {spec.volume_path}: {', '.join(out) or 'no target'}"


register(IOFault())
