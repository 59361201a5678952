"""process:// IDs carry the start time, so a pid that a new process reuses is not taken for the
old target: resolution calls that target gone and nothing is signalled.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from chaosbus.common import processid
from chaosbus.injector import runtime


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


def test_round_trip_and_bare_pids() -> None:
    assert processid.parse("process://1234@987") == processid.ProcessId(1234, 987)
    assert str(processid.ProcessId(1234, 987)) == "process://1234@987"
    assert processid.parse("process://1234") == processid.ProcessId(1234, None)
    for bad in ("process://", "process://x", "process://12@", "process://12@x", "containerd://12"):
        assert processid.parse(bad) is None


def test_a_running_process_is_named_with_its_start_time(sleeper: subprocess.Popen[bytes]) -> None:
    ident = processid.of_process(sleeper.pid)
    assert ident.start is not None and processid.is_running(ident)
    handle = runtime.resolve(str(ident))
    assert handle.alive and handle.pid == sleeper.pid


def test_a_reused_pid_is_a_gone_target(sleeper: subprocess.Popen[bytes]) -> None:
    ident = processid.of_process(sleeper.pid)
    assert ident.start is not None
    impostor = processid.ProcessId(sleeper.pid, ident.start + 1)  # same pid, another process's start
    assert not processid.is_running(impostor)
    assert not runtime.resolve(str(impostor)).alive
    assert sleeper.poll() is None  # and nothing touched the live process


def test_a_name_with_spaces_and_parentheses_does_not_shift_the_fields(tmp_path: Path) -> None:
    odd = tmp_path / "a) b (c"
    odd.symlink_to(sys.executable)
    proc = subprocess.Popen([str(odd), "-c", "import time; time.sleep(60)"])
    try:
        start = processid.start_time(proc.pid)
        assert start is not None
        with open(f"/proc/{proc.pid}/comm") as f:
            assert f.read().strip() == "a) b (c"
        seconds = start / os.sysconf("SC_CLK_TCK") + psutil.boot_time()
        assert seconds == pytest.approx(psutil.Process(proc.pid).create_time(), abs=0.05)
    finally:
        proc.kill()
        proc.wait()


def test_malformed_ids_are_refused_clearly() -> None:
    with pytest.raises(runtime.UnsupportedRuntime, match="pid > 1"):
        runtime.resolve("process://1")
    with pytest.raises(runtime.UnsupportedRuntime, match="pid > 1"):
        runtime.resolve("process://12@later")
