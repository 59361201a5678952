"""What the IOChaos tests share: a target process pod with a volume (podexec --volume, its own PID
and mount namespaces), the io fault's context for it, and the method bits the tests use.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from chaosbus.common import messages as m
from chaosbus.common import podexec
from chaosbus.common.crd import iochaos
from chaosbus.injector import faults, runtime
from chaosbus.injector.backends import iofs

READ = 1 << iochaos.METHODS.index("read")
GETATTR = 1 << iochaos.METHODS.index("getattr") | 1 << iochaos.METHODS.index("lookup")


@dataclass
class Target:
    pid: int
    host: Path  # the volume's directory as the host sees it
    vol: str  # where the target sees it

    def mounted(self) -> int:
        return iofs.mounts_at(self.pid, self.vol)


def start_target(
    tmp: Path, argv: list[str] | None = None, netns_path: str = ""
) -> tuple[subprocess.Popen[bytes], Target]:
    """`netns_path`: the network namespace it runs in (default: this process's)."""
    host, vol = tmp / "host", tmp / "pod" / "data"
    host.mkdir(exist_ok=True)
    enter = ["nsenter", f"--net={netns_path}", "--"] if netns_path else []  # nsenter execs: same pid
    shim = subprocess.Popen(
        enter + podexec.command(argv or ["sleep", "300"], new_pidns=True, new_mountns=True, volumes=[f"{host}:{vol}"]),
        start_new_session=True,
    )
    deadline, kids = time.monotonic() + 10, []
    while not kids and time.monotonic() < deadline:
        with open(f"/proc/{shim.pid}/task/{shim.pid}/children") as f:
            kids = f.read().split()
        time.sleep(0.01)
    assert kids, "the target did not start"
    return shim, Target(int(kids[0]), host, str(vol))


def volume_target(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Target]:
    """The `target` fixture of the iofs tests: a process pod with a volume holding slow/a.txt and
    b.txt, its state (journal, rules files) under `tmp`, killed afterwards."""
    monkeypatch.setenv("CHAOSBUS_STATE_DIR", str(tmp / "state"))
    shim, t = start_target(tmp)
    (t.host / "slow").mkdir()
    (t.host / "slow" / "a.txt").write_text("slow file\n")
    (t.host / "b.txt").write_text("other file\n")
    try:
        yield t
    finally:
        os.killpg(shim.pid, signal.SIGKILL)
        shim.wait()


def ctx_for(t: Target, spec: m.IO, uid: str = "", deadline: float | None = None) -> faults.FaultContext:
    uid = uid or uuid.uuid4().hex[:8]
    action = m.TargetAction(
        target_id=f"default/pod-{uid}", op="apply", container_ids=[f"process://{t.pid}"], fault=spec
    )
    containers = [runtime.resolve(f"process://{t.pid}")]
    original = faults.original_state("io", uid, action, containers=containers)
    return faults.FaultContext(uid, "x", "default", action, containers, deadline=deadline, original=original)


def io(t: Target, **kw: Any) -> m.IO:
    return m.IO(volume_path=t.vol, **kw)


def eventually(check: Any, timeout: float = 15.0) -> Any:
    end = time.monotonic() + timeout
    while True:
        got = check()
        if got or time.monotonic() > end:
            return got
        time.sleep(0.1)
