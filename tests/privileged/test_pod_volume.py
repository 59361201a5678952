"""A process pod's volume: a host directory bind-mounted into the pod's own mount namespace, as a
container's hostPath volume is (podexec --volume, `chaosbus pod run -v HOST:PATH`).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from chaosbus.common import podexec

pytestmark = pytest.mark.privileged

if os.geteuid() != 0:
    pytest.skip("needs root (mount namespaces)", allow_module_level=True)


def test_volume_is_the_host_directory_inside_the_pod_only(tmp_path: Path) -> None:
    host, mount_point = tmp_path / "host", tmp_path / "mnt" / "data"
    host.mkdir()
    (host / "seen").write_text("from the host")
    script = (
        f"import os; print(open('{mount_point}/seen').read()); open('{mount_point}/written', 'w').write('from the pod')"
    )
    out = subprocess.run(
        podexec.command(["python3", "-c", script], new_pidns=True, new_mountns=True, volumes=[f"{host}:{mount_point}"]),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "from the host"
    assert (host / "written").read_text() == "from the pod"
    # The mount point exists on the host (created like a kubelet's), but nothing is mounted there.
    assert list(mount_point.iterdir()) == []
    with open("/proc/self/mountinfo") as f:
        assert str(mount_point) not in f.read()


def test_volume_refused_without_a_mount_namespace_or_with_a_relative_path(tmp_path: Path) -> None:
    for args in (["--new-pidns", "--volume", f"{tmp_path}:/x"], ["--new-pidns", "--new-mountns", "--volume", "rel:/x"]):
        with pytest.raises(ValueError):
            podexec.parse([*args, "--", "true"])


def test_volume_on_a_missing_host_directory_fails_before_the_program_runs(tmp_path: Path) -> None:
    out = subprocess.run(
        podexec.command(["true"], new_pidns=True, new_mountns=True, volumes=[f"{tmp_path}/missing:{tmp_path}/m"]),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == podexec.SETUP_FAILED
    assert "is not a directory" in out.stderr
