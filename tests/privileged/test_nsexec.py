"""native/nsexec and HelloWorldChaos on a target whose mount namespace has no `ps` (as a distroless
container): a real process in its own PID and mount namespaces, with tmpfs over /usr/bin and
/usr/sbin, so `nsenter --mount` cannot find ps there while the host's ps, run by nsexec, lists the
target's processes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest

from chaosbus.common.messages import HelloWorld, TargetAction
from chaosbus.injector import faults, runtime
from chaosbus.injector.backends._glue import native

TARGET = r"""# distroless-target
import ctypes, sys, time
libc = ctypes.CDLL(None, use_errno=True)
for d in (b"/usr/bin", b"/usr/sbin"):  # the tools are gone from this mount namespace
    if libc.mount(b"none", d, b"tmpfs", 0, None) != 0:
        sys.exit(f"mount {d!r}: errno {ctypes.get_errno()}")
print("ready", flush=True)
time.sleep(600)
"""


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "needs root (namespaces, mounts)"
    if shutil.which("unshare") is None or shutil.which("ps") is None:
        return "needs unshare and ps on the host"
    if not (native.native_dir() / "nsexec").exists():
        return f"{native.native_dir()}/nsexec is not built (make install builds native/)"
    return None


pytestmark = pytest.mark.skipif(_why_not() is not None, reason=str(_why_not()))


@pytest.fixture
def distroless() -> Iterator[int]:
    """The pid (as the host sees it) of a process in its own PID and mount namespaces, without ps."""
    # --kill-child: the target (its PID namespace's init) dies with unshare, whatever kills unshare.
    outer = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--kill-child", "--mount", "--mount-proc", "--", sys.executable, "-c", TARGET],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert outer.stdout is not None and outer.stdout.readline().strip() == "ready"
        children = subprocess.run(
            ["pgrep", "-f", "distroless-target", "-P", str(outer.pid)], capture_output=True, text=True, check=True
        ).stdout.split()
        inner = int(children[0])
        yield inner
        os.kill(inner, 9)
    finally:
        outer.kill()
        outer.wait()


def test_the_targets_own_mount_namespace_has_no_ps(distroless: int) -> None:
    done = subprocess.run(
        ["nsenter", f"--mount=/proc/{distroless}/ns/mnt", "--", "ps", "aux"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode != 0


def test_nsexec_runs_the_hosts_ps_in_the_targets_namespaces(distroless: int) -> None:
    rc, out, err = native.run_in_target(distroless, ["ps", "ww", "-eo", "pid,args"], 5.0)
    assert rc == 0, err
    rows = [line.split(None, 1) for line in out.splitlines()[1:]]
    assert rows[0][0] == "1" and "distroless-target" in rows[0][1]  # the target, pid 1 of its namespace
    assert len(rows) == 2 and rows[1][1] == "ps ww -eo pid,args"  # only the target's namespace: it and ps
    assert native.ns_pid(distroless) == 1
    with open(f"/proc/{distroless}/cgroup") as f:
        assert f.read()  # nsexec joined these: its ps ran there (the process list shows it inside)


def test_nsexec_reports_a_program_missing_on_the_host_and_a_gone_target() -> None:
    assert native.run_in_target(os.getpid(), ["no-such-tool-anywhere"], 5.0)[0] == 127
    rc, _, err = native.run_in_target(2**22 + 7, ["true"], 5.0)
    assert rc == native.NSEXEC_FAILED and "nsexec" in err


def test_hello_world_records_the_process_list_of_a_target_without_ps(distroless: int) -> None:
    spec = HelloWorld()
    cid = f"process://{distroless}"
    action = TargetAction(
        target_id="default/pod",
        selector_key=".",
        op="apply",
        namespace="default",
        pod_name="pod",
        container_ids=[cid],
        fault=spec,
    )
    ctx = faults.FaultContext(
        experiment_uid="hw", experiment_name="hw", namespace="default", action=action, containers=[runtime.resolve(cid)]
    )
    message = faults.get("hello-world").apply(ctx, spec)
    assert isinstance(message, str)
    assert f"ps aux in the namespaces of pid {distroless} lists 2 processes" in message
    assert "distroless-target" in message.split("the target: ", 1)[1]
