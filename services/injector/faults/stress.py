"""stress (StressChaos): stress-ng processes inside the target's cgroup and PID namespace.

Each stressor is started through the podexec helper (chaosbus.common.podexec), which joins the
cgroups the target process is in (/proc/<pid>/cgroup) and its PID namespace, sets oom_score_adj,
then execs the host's stress-ng: the target's limits and accounting apply, as in Chaos Mesh, and
the target's filesystem needs no stress-ng. Every stressor carries `--timeout` = the time left, so
it ends at the deadline even if every chaosbus process is dead.

Stressors are found again by the marks in their environment (`procs.helper_env`: the injector's
own node name, as its sweeper looks for it, and the journal entry's key), never by a pid alone:
recovery kills the marked processes of its entry, and the orphan sweeper kills marked processes
whose entry is no longer open.
"""

from __future__ import annotations

import math
import os
import select
import shutil
import subprocess
import threading
import time

from chaosbus.common import cgroups, config, podexec
from chaosbus.common.messages import FaultSpec, Stress
from chaosbus.injector.backends import procs
from chaosbus.injector.faults import FaultContext, FaultError, register
from chaosbus.injector.journal import entry_key

START_TIMEOUT_S = 10.0


class StressFault:
    name = "stress"
    one_shot = False

    def apply(self, ctx: FaultContext, spec: FaultSpec) -> str:
        assert isinstance(spec, Stress)
        live = ctx.alive()
        if not live:
            raise FaultError("target gone: no live container to stress", retryable=False)
        key = _key(ctx)
        running = marked(key)
        if running:
            return f"stress-ng already running (pids {', '.join(map(str, running))})"
        left = None if ctx.deadline is None else ctx.deadline - time.time()
        if left is not None and left <= 0:
            return "the deadline has passed: no stressor started"
        binary = shutil.which("stress-ng")
        if binary is None:
            raise FaultError(
                "stress-ng is not installed on this node (scripts/install-system-deps.sh)", retryable=False
            )
        pid = live[0].pid
        try:
            dirs = cgroups.of_process(pid)
            pidns = _pidns_of(pid)
        except FileNotFoundError:
            raise FaultError(f"target gone: process {pid} exited", retryable=False) from None
        # The executor names its node; a caller without one (a test of the fault alone) uses this machine's.
        env = {**os.environ, **procs.helper_env(ctx.node or config.node_name(), key)}
        started: list[int] = []
        try:
            for s in spec.stressors:
                argv = [binary, *s.args] + ([] if left is None else ["--timeout", f"{math.ceil(left)}s"])
                started.append(self._start(argv, dirs, pidns, s.oom_score_adj, env, s.name))
        except FaultError:
            for p in marked(key):
                procs.kill_tree(p)
            raise
        until = "until recovered" if left is None else f"for {math.ceil(left)}s"
        where = dirs[0] if dirs else "(no cgroup)"
        return (
            f"stress-ng {', '.join(s.name for s in spec.stressors)} running {until} in cgroup "
            f"{where} (pids {', '.join(map(str, started))})"
        )

    def _start(
        self, argv: list[str], dirs: list[str], pidns: str, oom: int | None, env: dict[str, str], name: str
    ) -> int:
        r, w = os.pipe()
        try:
            cmd = podexec.command(argv, cgroups=dirs, pidns=pidns, oom_score_adj=oom, status_fd=w)
            proc = subprocess.Popen(
                cmd,
                pass_fds=(w,),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            os.close(w)
            w = -1
            message = _read_until_eof(r, START_TIMEOUT_S)
        finally:
            os.close(r)
            if w >= 0:
                os.close(w)
        # Reaped by a waiting thread whenever it ends (its deadline, a recover, the sweeper).
        threading.Thread(target=proc.wait, name=f"reap-stress-{proc.pid}", daemon=True).start()
        if message:
            proc.wait(5)
            raise FaultError(f"{name} stressor not started: {message}", retryable=False)
        return proc.pid

    def recover(self, ctx: FaultContext, spec: FaultSpec) -> str:
        killed = sum(procs.kill_tree(p) for p in marked(_key(ctx)))
        return f"stress-ng stopped ({killed} processes killed)" if killed else "no stressor left running"


def _key(ctx: FaultContext) -> str:
    return entry_key(ctx.experiment_uid, ctx.action.selector_key, ctx.action.target_id)


def _pidns_of(pid: int) -> str:
    """The target's PID namespace to enter; "" when it is the injector's own."""
    path = f"/proc/{pid}/ns/pid"
    return "" if os.stat(path).st_ino == os.stat("/proc/self/ns/pid").st_ino else path


def _read_until_eof(fd: int, timeout: float) -> str:
    """What the helper reports before it execs (empty: it started the program)."""
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return f"the helper did not start stress-ng within {timeout:.0f}s"
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        data = os.read(fd, 4096)
        if not data:
            return b"".join(chunks).decode(errors="replace").strip()
        chunks.append(data)


def marked(key: str) -> list[int]:
    """Pids of live processes carrying the marks of journal entry `key` (top-most ones first)."""
    want = f"{procs.KEY_ENV}={key}".encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                if want in f.read().split(b"\0"):
                    found.append(int(name))
        except OSError:
            continue
    return sorted(found)


register(StressFault())
