"""IOChaos's io fault against a real target: native/iofs mounted over a volume inside the target's
own mount namespace (a process pod's, made by podexec --volume), probed from inside it.

Each check reads back what a program on the volume sees (tests/helpers/ioprobe.py, run in the
target's mount namespace), what is on disk, and the target's /proc/<pid>/mountinfo.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.iofstarget import GETATTR, READ, Target, ctx_for, eventually, io, start_target, volume_target
from helpers.ioprobe import probe

from chaosbus.common.crd import iochaos
from chaosbus.injector import faults
from chaosbus.injector.backends import iofs
from chaosbus.injector.backends._glue.native import native_dir
from chaosbus.injector.backends.kit import process_backends

pytestmark = pytest.mark.privileged

if os.geteuid() != 0 or not os.path.exists("/dev/fuse") or not (native_dir() / "iofs").exists():
    pytest.skip("needs root, /dev/fuse and native/build/iofs (make install)", allow_module_level=True)

UNAFFECTED = 0.07  # median seconds of a call no rule delays, on a loaded machine (a delay here is 100 ms)


@pytest.fixture
def target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Target]:
    yield from volume_target(tmp_path, monkeypatch)


FAULT = faults.get("io")


def test_latency_on_read_of_matched_paths_only_and_gone_after_recovery(target: Target) -> None:
    spec = io(target, action="latency", path=f"{target.vol}/slow/**", methods=READ, delay_ns=100_000_000)
    ctx = ctx_for(target, spec)
    slow, other = f"{target.vol}/slow/a.txt", f"{target.vol}/b.txt"
    FAULT.apply(ctx, spec)
    try:
        assert target.mounted() == 1
        results = probe(target.pid, [("read", slow), ("read", other), ("stat", slow)] * 8)
        assert all(r.errno == 0 for r in results)
        assert {r.value for r in results[0::3]} == {"slow file\n"}
        # 100 ms +- 20 ms on the matched read. A loaded machine only adds to a sleep (the FUSE thread
        # wakes late), so the least disturbed of eight reads is compared; none may be shorter.
        slow_reads = min(r.seconds for r in results[0::3])
        other_reads = statistics.median(r.seconds for r in results[1::3])
        stats = statistics.median(r.seconds for r in results[2::3])
        assert 0.08 <= slow_reads - other_reads <= 0.12, (slow_reads, other_reads)
        assert other_reads < UNAFFECTED and stats < UNAFFECTED, (other_reads, stats)
    finally:
        FAULT.recover(ctx, spec)
    assert target.mounted() == 0
    after = probe(target.pid, [("read", slow)] * 5)
    assert statistics.median(r.seconds for r in after) < UNAFFECTED and after[0].value == "slow file\n"


def test_percent_50_fails_about_half_of_the_matched_calls_with_the_errno(target: Target) -> None:
    spec = io(target, action="fault", methods=READ, percent=50, errno=5)
    ctx = ctx_for(target, spec)
    FAULT.apply(ctx, spec)
    try:
        results = probe(target.pid, [("read", f"{target.vol}/b.txt")] * 200 + [("stat", f"{target.vol}/b.txt")])
    finally:
        FAULT.recover(ctx, spec)
    failed = [r for r in results[:200] if r.errno]
    assert {r.errno for r in failed} == {5}  # EIO
    # Binomial(200, 0.5): mean 100, sd 7.1; 68..132 is +-4.5 sd (wrongly failing: < 1e-5).
    assert 68 <= len(failed) <= 132, len(failed)
    assert results[-1].errno == 0  # getattr is not among the methods


def test_attr_override_changes_what_stat_returns_not_the_file(target: Target) -> None:
    mask, values = iochaos.attr_override(iochaos.AttrOverride(size=4242, perm=0o600))
    spec = io(
        target, action="attrOverride", path=f"{target.vol}/b.txt", methods=GETATTR, attr_mask=mask, attr_values=values
    )
    ctx = ctx_for(target, spec)
    FAULT.apply(ctx, spec)
    try:
        during = probe(target.pid, [("stat", f"{target.vol}/b.txt"), ("stat", f"{target.vol}/slow/a.txt")])
    finally:
        FAULT.recover(ctx, spec)
    assert during[0].value[:2] == [4242, 0o600]
    assert during[1].value[0] == len("slow file\n")
    assert os.stat(target.host / "b.txt").st_size == len("other file\n")
    assert probe(target.pid, [("stat", f"{target.vol}/b.txt")])[0].value[0] == len("other file\n")


def test_mistake_corrupts_reads_within_its_bounds_and_never_the_file(target: Target) -> None:
    original = "A" * 4096
    (target.host / "data.bin").write_text(original)
    spec = io(
        target, action="mistake", methods=READ, mistake_filling=0, mistake_max_occurrences=2, mistake_max_length=3
    )
    ctx = ctx_for(target, spec)
    FAULT.apply(ctx, spec)
    try:
        reads = probe(target.pid, [("read", f"{target.vol}/data.bin")] * 10)
    finally:
        FAULT.recover(ctx, spec)
    for r in reads:
        changed = [i for i, (a, b) in enumerate(zip(r.value, original, strict=True)) if a != b]
        assert 1 <= len(changed) <= 2 * 3, changed  # at most maxOccurrences runs of maxLength bytes
        assert {r.value[i] for i in changed} == {"\0"}
    assert (target.host / "data.bin").read_text() == original
    assert probe(target.pid, [("read", f"{target.vol}/data.bin")])[0].value == original


def test_experiments_on_one_volume_compose_and_recover_one_by_one(target: Target) -> None:
    slow, other = f"{target.vol}/slow/a.txt", f"{target.vol}/b.txt"
    latency = io(target, action="latency", path=f"{target.vol}/slow/*", methods=READ, delay_ns=100_000_000)
    fault = io(target, action="fault", path=other, methods=READ, errno=28)
    c1, c2 = ctx_for(target, latency), ctx_for(target, fault)
    FAULT.apply(c1, latency)
    FAULT.apply(c2, fault)
    try:
        assert target.mounted() == 1  # one filesystem serves both
        both = probe(target.pid, [("read", slow), ("read", other)])
        assert both[0].seconds >= 0.08 and both[1].errno == 28
        FAULT.recover(c1, latency)
        assert target.mounted() == 1
        one = probe(target.pid, [("read", slow), ("read", other)] * 3)
        assert statistics.median(r.seconds for r in one[0::2]) < UNAFFECTED and one[1].errno == 28
    finally:
        FAULT.recover(c1, latency)
        FAULT.recover(c2, fault)
    assert target.mounted() == 0
    assert [r.errno for r in probe(target.pid, [("read", slow), ("read", other)])] == [0, 0]


def test_a_killed_fuse_server_is_detached_and_the_files_work_again(target: Target) -> None:
    spec = io(target, action="fault", methods=READ, errno=5)
    ctx = ctx_for(target, spec)
    FAULT.apply(ctx, spec)
    try:
        vol = iofs.Volume(target.pid, iofs.start_ticks(target.pid) or 0, target.vol)
        server = int(vol.server_file.read_text().split()[0])
        assert probe(target.pid, [("read", f"{target.vol}/b.txt")])[0].errno == 5
        os.kill(server, signal.SIGKILL)
        assert eventually(lambda: target.mounted() == 0), "the dead server's mount was left in place"
        res = probe(target.pid, [("read", f"{target.vol}/b.txt"), ("write", f"{target.vol}/new.txt", "x")])
        assert [r.errno for r in res] == [0, 0] and res[0].value == "other file\n"  # no ENOTCONN
    finally:
        FAULT.recover(ctx, spec)
    assert target.mounted() == 0


APPLY = textwrap.dedent("""
    import json, sys, time
    from chaosbus.common import messages as m
    from chaosbus.injector import faults, runtime
    pid, vol, deadline, uid = int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), sys.argv[4]
    spec = m.IO(action="latency", volume_path=vol, methods=int(sys.argv[5]), delay_ns=100_000_000)
    action = m.TargetAction(target_id="default/p", op="apply", container_ids=[f"process://{pid}"], fault=spec)
    containers = [runtime.resolve(f"process://{pid}")]
    original = faults.original_state("io", uid, action, containers=containers)
    ctx = faults.FaultContext(uid, "x", "default", action, containers, deadline=deadline or None, original=original)
    if sys.argv[6] == "apply":
        print(faults.get("io").apply(ctx, spec), flush=True)
        time.sleep(120)
    else:
        print(faults.get("io").recover(ctx, spec), flush=True)
""")


def _injector(t: Target, op: str, uid: str, deadline: float = 0.0) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", APPLY, str(t.pid), t.vol, str(deadline), uid, str(READ), op],
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )


def test_killed_injector_leaves_working_files_and_a_new_one_recovers(target: Target) -> None:
    uid = uuid.uuid4().hex[:8]
    injector = _injector(target, "apply", uid)
    try:
        assert injector.stdout is not None
        assert "mounted" in injector.stdout.readline()
    finally:
        injector.kill()  # SIGKILL: the server outlives it and keeps serving
        injector.wait()
    res = probe(target.pid, [("read", f"{target.vol}/b.txt")] * 2)
    assert [r.errno for r in res] == [0, 0] and min(r.seconds for r in res) >= 0.08
    again = _injector(target, "recover", uid)
    assert again.communicate(timeout=60)[0].startswith("recovered")
    assert target.mounted() == 0
    assert statistics.median(r.seconds for r in probe(target.pid, [("read", f"{target.vol}/b.txt")] * 5)) < UNAFFECTED


def test_the_filesystem_stops_injecting_at_the_deadline_with_no_injector(target: Target) -> None:
    uid = uuid.uuid4().hex[:8]
    deadline = time.time() + 3
    injector = _injector(target, "apply", uid, deadline)
    try:
        assert injector.stdout is not None
        assert "mounted" in injector.stdout.readline()
    finally:
        injector.kill()
        injector.wait()
    time.sleep(max(0.0, deadline - time.time()))
    res = probe(target.pid, [("read", f"{target.vol}/b.txt")] * 5)
    assert statistics.median(r.seconds for r in res) < UNAFFECTED, [r.seconds for r in res]
    _injector(target, "recover", uid).communicate(timeout=60)
    assert target.mounted() == 0


def test_the_filesystem_ends_when_its_target_does_with_no_injector(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHAOSBUS_STATE_DIR", str(tmp_path / "state"))
    shim, t = start_target(tmp_path)
    try:
        injector = _injector(t, "apply", uuid.uuid4().hex[:8])
        try:
            assert injector.stdout is not None
            assert "mounted" in injector.stdout.readline()
        finally:
            injector.kill()
            injector.wait()
        vol = iofs.Volume(t.pid, iofs.start_ticks(t.pid) or 0, t.vol)
        server = int(vol.server_file.read_text().split()[0])
        start = iofs.start_ticks(server)
    finally:
        os.killpg(shim.pid, signal.SIGKILL)
        shim.wait()
    # iofs is in the target's mount namespace and would keep it alive: it detaches its mount itself
    # and ends, though no injector is left to recover the fault.
    assert eventually(lambda: iofs.start_ticks(server) != start), "iofs outlived its target"


def test_the_sweeper_detaches_a_mount_no_open_entry_owns(target: Target) -> None:
    spec = io(target, action="fault", methods=READ, errno=5)
    ctx = ctx_for(target, spec)
    FAULT.apply(ctx, spec)
    orphans = faults.orphans(tags=["io"])["io"]
    netns = f"/proc/{target.pid}/ns/net"
    item = f"{os.stat(f'/proc/{target.pid}/ns/mnt').st_ino}:{target.vol}"
    try:
        assert item in orphans.find(netns, process_backends())
        assert item in (orphans.owned([dict(ctx.original)]) or set())  # its entry is open: kept
        orphans.remove(netns, item, process_backends())  # as the sweeper does once no open entry owns it
        assert target.mounted() == 0
        assert item not in orphans.find(netns, process_backends())
        assert probe(target.pid, [("read", f"{target.vol}/b.txt")])[0].value == "other file\n"
    finally:
        FAULT.recover(ctx, spec)


def _reader(tmp_path: Path, in_child: bool = False) -> tuple[subprocess.Popen[bytes], Target, Any]:
    """A target that opened b.txt once, before any experiment, and then reads it and writes one
    byte past its text every 50 ms for as long as it lives, logging what each read returned
    (`in_child`: the target is a shell, the reader its child)."""
    (tmp_path / "host").mkdir()
    (tmp_path / "host" / "b.txt").write_text("other file\n")
    vol, log = tmp_path / "pod" / "data", tmp_path / "reads.log"
    script = textwrap.dedent(f"""
        import os, time
        fd = os.open("{vol}/b.txt", os.O_RDWR)
        while True:
            try:
                got = os.pread(fd, 11, 0).decode()
                os.pwrite(fd, b"w", 11)
            except OSError as e:
                got = f"ERR{{e.errno}}"
            with open("{log}", "a") as f:
                f.write(repr(got) + "\\n")
            time.sleep(0.05)
    """)
    argv = ["python3", "-c", script]
    shim, t = start_target(tmp_path, ["sh", "-c", 'python3 -c "$1" & wait', "sh", script] if in_child else argv)

    def lines() -> list[str]:
        return log.read_text().splitlines() if log.exists() else []

    assert eventually(lambda: "'other file\\n'" in lines()), lines()[-3:]
    return shim, t, lines


@pytest.mark.parametrize("in_child", [False, True], ids=["target", "its-child"])
def test_a_file_opened_before_the_experiment_is_affected_then_normal_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_child: bool
) -> None:
    monkeypatch.setenv("CHAOSBUS_STATE_DIR", str(tmp_path / "state"))
    shim, t, lines = _reader(tmp_path, in_child)
    try:
        spec = io(t, action="fault", path=f"{t.vol}/b.txt", methods=READ, errno=5)
        ctx = ctx_for(t, spec)
        assert "1 open files moved" in FAULT.apply(ctx, spec)
        try:
            seen = len(lines())
            assert eventually(lambda: "'ERR5'" in lines()[seen:]), lines()[-3:]
        finally:
            message = FAULT.recover(ctx, spec)
        assert "1 open files moved back" in message, message
        assert t.mounted() == 0
        seen = len(lines())
        assert eventually(lambda: lines()[seen:].count("'other file\\n'") >= 3), lines()[-3:]
        assert "ERR" not in "".join(lines()[seen + 1 :])
        assert (t.host / "b.txt").read_text() == "other file\nw"  # its writes reached the file
    finally:
        os.killpg(shim.pid, signal.SIGKILL)
        shim.wait()


def test_files_open_on_a_killed_fuse_server_are_moved_back_not_left_broken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHAOSBUS_STATE_DIR", str(tmp_path / "state"))
    shim, t, lines = _reader(tmp_path)
    try:
        spec = io(t, action="fault", path=f"{t.vol}/b.txt", methods=READ, errno=5)
        ctx = ctx_for(t, spec)
        FAULT.apply(ctx, spec)
        try:
            seen = len(lines())
            assert eventually(lambda: "'ERR5'" in lines()[seen:]), lines()[-3:]
            vol = iofs.Volume(t.pid, iofs.start_ticks(t.pid) or 0, t.vol)
            os.kill(int(vol.server_file.read_text().split()[0]), signal.SIGKILL)
            assert eventually(lambda: t.mounted() == 0), "the dead server's mount was left in place"
            # No ENOTCONN (107) left: the file the target holds is the volume's again (reads in the
            # instant between the detach and the move may have failed).
            assert eventually(lambda: lines()[-3:] == ["'other file\\n'"] * 3), lines()[-3:]
        finally:
            FAULT.recover(ctx, spec)
    finally:
        os.killpg(shim.pid, signal.SIGKILL)
        shim.wait()
