"""native/timeskew against real processes: real ptrace, real vDSO patches, read back from
/proc/<pid>/mem. A skew is measured as a change of (clock - CLOCK_BOOTTIME), exact under load."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest
from helpers.clocktargets import ClockTarget, c_argv, gettimeofday_skew, monotonic_skew, realtime_skew

from chaosbus.injector import faults
from chaosbus.injector.backends import timeskew
from chaosbus.injector.backends.kit import process_backends

HOUR_NS = 3600 * 10**9
TOLERANCE_NS = 10 * 10**6
REALTIME = 1 << 0
MONOTONIC = 1 << 1


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "needs root (ptrace of other processes)"
    if not (timeskew.native_dir() / "timeskew").exists():
        return f"{timeskew.native_dir()}/timeskew is not built (make install builds native/)"
    return None


pytestmark = pytest.mark.skipif(_why_not() is not None, reason=str(_why_not()))


@pytest.fixture
def targets() -> Iterator[list[ClockTarget]]:
    started: list[ClockTarget] = []
    yield started
    for t in started:
        t.stop()


def _skews(target: ClockTarget, threads: int, of=realtime_skew) -> dict[int, int]:
    return {tid: of(row) for tid, row in target.fresh(threads).items()}


def _assert_shifted(before: dict[int, int], after: dict[int, int], offset: int) -> None:
    assert before.keys() == after.keys()
    for tid in before:
        assert abs(after[tid] - before[tid] - offset) < TOLERANCE_NS, (tid, after[tid] - before[tid])


def test_realtime_minus_one_hour_on_c_and_python_threads_only(targets: list[ClockTarget]) -> None:
    c = ClockTarget.c(threads=3)
    py = ClockTarget.python(threads=2)
    bystander = ClockTarget.c()
    targets += [c, py, bystander]
    base = {t.pid: _skews(t, n) for t, n in ((c, 3), (py, 2), (bystander, 1))}
    mono_base = _skews(c, 3, monotonic_skew)
    originals = {t.pid: timeskew.plan(t.pid) for t in (c, py)}

    for t in (c, py):
        done = timeskew.inject(t.pid, -HOUR_NS, REALTIME, 0)
        assert done.patches == originals[t.pid]
        for p in done.patches:  # each entry now jumps to the payload
            assert timeskew.read_bytes(t.pid, p.address, len(p.original)) != p.original

    _assert_shifted(base[c.pid], _skews(c, 3), -HOUR_NS)
    _assert_shifted(base[py.pid], _skews(py, 2), -HOUR_NS)
    _assert_shifted(base[bystander.pid], _skews(bystander, 1), 0)
    _assert_shifted(mono_base, _skews(c, 3, monotonic_skew), 0)  # not selected: untouched
    row = c.fresh(3)[0]
    assert abs(gettimeofday_skew(row) - realtime_skew(row)) < TOLERANCE_NS
    assert abs(row[5] - row[1] // 10**9) <= 1  # time() follows the skewed realtime

    for t in (c, py):
        timeskew.restore(t.pid, originals[t.pid])
        for p in originals[t.pid]:
            assert timeskew.read_bytes(t.pid, p.address, len(p.original)) == p.original
    _assert_shifted(base[c.pid], _skews(c, 3), 0)
    _assert_shifted(base[py.pid], _skews(py, 2), 0)


def test_monotonic_selected_and_sub_second_offset(targets: list[ClockTarget]) -> None:
    c = ClockTarget.c(threads=2)
    targets.append(c)
    base_rt, base_mono = _skews(c, 2), _skews(c, 2, monotonic_skew)
    offset = -1_500_000_000
    timeskew.inject(c.pid, offset, REALTIME | MONOTONIC, 0)
    _assert_shifted(base_rt, _skews(c, 2), offset)
    _assert_shifted(base_mono, _skews(c, 2, monotonic_skew), offset)


def test_skew_ends_at_the_deadline_with_nothing_left_to_restore(targets: list[ClockTarget]) -> None:
    c = ClockTarget.c()
    targets.append(c)
    base = _skews(c, 1)
    timeskew.inject(c.pid, HOUR_NS, REALTIME, time.time_ns() + 400_000_000)
    _assert_shifted(base, _skews(c, 1), HOUR_NS)
    time.sleep(0.5)
    _assert_shifted(base, _skews(c, 1), 0)


def test_a_skewed_process_refuses_a_second_patch_and_a_gone_one_says_so(targets: list[ClockTarget]) -> None:
    c = ClockTarget.c()
    targets.append(c)
    patches = timeskew.plan(c.pid)
    timeskew.inject(c.pid, HOUR_NS, REALTIME, 0)
    with pytest.raises(timeskew.TimeSkewError) as already:
        timeskew.inject(c.pid, HOUR_NS, REALTIME, 0)
    assert already.value.already
    c.stop()
    with pytest.raises(timeskew.TimeSkewError) as gone:
        timeskew.restore(c.pid, patches)
    assert gone.value.gone


def test_the_sweeper_restores_a_skew_no_open_entry_owns(targets: list[ClockTarget]) -> None:
    owned_target = ClockTarget(["unshare", "--net", "--", *c_argv()])  # its own netns, as a pod's
    targets.append(owned_target)
    targets.append(ClockTarget.c())  # a bystander in the host's netns, never looked at
    pid = owned_target.pid
    base = _skews(owned_target, 1)
    originals = timeskew.plan(pid)
    timeskew.inject(pid, -HOUR_NS, REALTIME, 0)
    orphans = faults.orphans(tags=["time-skew"])["time-skew"]
    netns = f"/proc/{pid}/ns/net"
    item = f"{pid}:{timeskew.start_ticks(pid)}"
    assert orphans.find(netns, process_backends()) == [item]
    journaled = {"processes": [{"pid": pid, "start": timeskew.start_ticks(pid), "patches": []}]}
    assert orphans.owned([journaled]) == {item}  # an open entry owns it: the sweeper leaves it
    orphans.remove(netns, item, process_backends())
    assert vdso_is(pid, originals)
    assert orphans.find(netns, process_backends()) == []
    _assert_shifted(base, _skews(owned_target, 1), 0)


def vdso_is(pid: int, patches: tuple[timeskew.Patch, ...]) -> bool:
    return all(timeskew.read_bytes(pid, p.address, len(p.original)) == p.original for p in patches)
