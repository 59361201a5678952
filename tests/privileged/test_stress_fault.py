"""The stress fault against a real target (PID 1 of its own PID namespace, in its own cgroup):
stressors join the target's cgroup and PID namespace, end at the deadline even when the process
that started them is killed with SIGKILL, and a refused oom_score_adj fails the target clearly.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator

import pytest

from chaosbus.common import cgroups, podexec

pytestmark = pytest.mark.privileged

if os.geteuid() != 0 or shutil.which("stress-ng") is None:
    pytest.skip(
        "needs root (cgroups, namespaces) and stress-ng (scripts/install-system-deps.sh)", allow_module_level=True
    )

APPLY = textwrap.dedent("""
    import sys, time
    from chaosbus.common import messages as m
    from chaosbus.injector import faults, runtime
    pid, deadline, key, oom = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4]
    spec = m.Stress(stressors=[m.Stressor(name="cpu", args=["--cpu", "1", "--cpu-load", "20"],
                                          oom_score_adj=int(oom) if oom else None)])
    action = m.TargetAction(target_id=key, op="apply", container_ids=[f"process://{pid}"], fault=spec)
    ctx = faults.FaultContext("uid-" + key, "x", "default", action, [runtime.resolve(f"process://{pid}")],
                              deadline=deadline)
    try:
        print(faults.get("stress").apply(ctx, spec), flush=True)
    except faults.FaultError as e:
        print("FAILED", e.message, flush=True)
    time.sleep(60)
""")


def stressors(key: str) -> list[int]:
    from chaosbus.injector.faults import stress

    return [p for p in stress.marked(f"uid-{key}|.|{key}") if _argv0(p).endswith(b"stress-ng")]


def _argv0(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")[0]
    except OSError:
        return b""


@pytest.fixture
def target() -> Iterator[tuple[int, cgroups.PodCgroup]]:
    cg = cgroups.create(f"cbst-{uuid.uuid4().hex[:8]}")
    shim = subprocess.Popen(
        podexec.command(["sleep", "120"], cgroups=cg.dirs, new_pidns=True, new_mountns=True), start_new_session=True
    )
    try:
        deadline = time.monotonic() + 5
        kids: list[str] = []
        while not kids and time.monotonic() < deadline:
            with open(f"/proc/{shim.pid}/task/{shim.pid}/children") as f:
                kids = f.read().split()
            time.sleep(0.01)
        assert kids, "the target did not start"
        yield int(kids[0]), cg
    finally:
        os.killpg(shim.pid, signal.SIGKILL)
        shim.wait()
        cgroups.remove(cg)


def start_apply(pid: int, deadline: float, key: str, oom: str = "") -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", APPLY, str(pid), str(deadline), key, oom], stdout=subprocess.PIPE, text=True
    )


def test_stressors_join_the_target_and_end_at_the_deadline_after_the_injector_is_killed(
    target: tuple[int, cgroups.PodCgroup],
) -> None:
    pid, cg = target
    key = uuid.uuid4().hex[:8]
    deadline = time.time() + 4
    injector = start_apply(pid, deadline, key)
    try:
        assert injector.stdout is not None
        line = injector.stdout.readline()
        assert re.search(r"stress-ng cpu running for [1-4]s", line), line  # the time left when it started
        [stress] = stressors(key)
        assert stress in cgroups.procs(cg.dirs[0])
        assert os.stat(f"/proc/{stress}/ns/pid").st_ino == os.stat(f"/proc/{pid}/ns/pid").st_ino
    finally:
        injector.kill()  # SIGKILL: nothing of chaosbus is left to stop the stressor
        injector.wait()
    time.sleep(max(0.0, deadline - time.time()))
    end = time.monotonic() + 3
    while stressors(key) and time.monotonic() < end:
        time.sleep(0.1)
    assert not stressors(key), "stress-ng outlived its deadline"


def test_an_oom_score_adj_the_kernel_refuses_fails_the_target(target: tuple[int, cgroups.PodCgroup]) -> None:
    pid, _ = target
    key = uuid.uuid4().hex[:8]
    # Out of the kernel's range: refused whatever the capabilities (admission never sends it; this
    # stands in for a negative value without CAP_SYS_RESOURCE, which root here cannot lose).
    injector = start_apply(pid, time.time() + 30, key, oom="-5000")
    try:
        assert injector.stdout is not None
        line = injector.stdout.readline()
        assert line.startswith("FAILED cpu stressor not started:") and "oom_score_adj -5000" in line, line
        assert not stressors(key)
    finally:
        injector.kill()
        injector.wait()


def test_stressors_carry_the_injectors_node_name_the_sweeper_looks_for(
    target: tuple[int, cgroups.PodCgroup], monkeypatch: pytest.MonkeyPatch
) -> None:
    from chaosbus.common import messages as m
    from chaosbus.injector import faults, runtime
    from chaosbus.injector.sweeper import marked_helpers

    pid, _ = target
    key = uuid.uuid4().hex[:8]
    node = f"stress-node-{key}"
    monkeypatch.setenv("CHAOSBUS_NODE", "not-the-injectors-node")  # --node given, the environment differs
    spec = m.Stress(stressors=[m.Stressor(name="cpu", args=["--cpu", "1", "--cpu-load", "5"])])
    action = m.TargetAction(target_id=key, op="apply", container_ids=[f"process://{pid}"], fault=spec)
    ctx = faults.FaultContext(
        "uid-" + key,
        "x",
        "default",
        action,
        [runtime.resolve(f"process://{pid}")],
        deadline=time.time() + 30,
        node=node,
    )
    fault = faults.get("stress")
    try:
        fault.apply(ctx, spec)
        [stress] = stressors(key)
        assert stress in {p for p, k in marked_helpers(node) if k == f"uid-{key}|.|{key}"}
        assert not [p for p, _ in marked_helpers("not-the-injectors-node") if p == stress]
    finally:
        fault.recover(ctx, spec)
    assert not stressors(key)
