"""An interrupted test run's mounts no longer fail the next run: the controller releases the mounts
under the run folders pytest would delete, and leaves a run that is still going alone.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import tmpmounts

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _volume(run: Path) -> Path:
    """Where kubelet mounts a pod's projected token volume, under a run's node folder."""
    volume = run / "popen-gw3/node0/kubelet/pods/uid/volumes/kubernetes.io~projected/kube-api-access"
    volume.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(volume)], check=True)
    (volume / "token").write_text("x")
    return volume


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "pytest-of-tester"
    root.mkdir()
    yield root
    for line in reversed(Path("/proc/self/mounts").read_text().splitlines()):
        point = line.split()[1]
        if point.startswith(f"{root}/"):
            subprocess.run(["umount", "-l", point], capture_output=True)


def test_mounts_of_abandoned_runs_are_released_and_a_live_run_keeps_its_own(root: Path) -> None:
    killed = root / "pytest-5"  # its controller died before the node's teardown: lock left behind
    killed_volume = _volume(killed)
    (killed / ".lock").write_text(str(_dead_pid()))
    renamed = root / "garbage-1b2c"  # an earlier cleanup renamed it and failed on the mount
    _volume(renamed)
    finished = root / "pytest-6"  # ended normally, so pytest removed its lock
    _volume(finished)
    running = root / "pytest-7"
    running_volume = _volume(running)
    (running / ".lock").write_text(str(os.getpid()))

    with pytest.raises(OSError) as busy:
        shutil.rmtree(killed)
    assert busy.value.errno == errno.EBUSY

    released = tmpmounts.release(root)

    assert sorted(Path(p).relative_to(root).parts[0] for p in released) == ["garbage-1b2c", "pytest-5", "pytest-6"]
    for folder in (killed, renamed, finished):
        shutil.rmtree(folder)
    assert not killed_volume.exists()
    assert os.path.ismount(running_volume)
    assert (running_volume / "token").read_text() == "x"
