"""The PID-namespace parent dies of the signal its program died of (a pod-kill's SIGKILL): whoever
waits on it (the supervisor) sees the same end as if it had waited on the program.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import psutil
import pytest

from chaosbus.common import podexec

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="a new PID namespace needs root")


def test_the_parent_dies_of_the_sigkill_that_killed_its_program() -> None:
    # SIGKILL is the case that matters: the only signal from outside that kills a PID namespace's
    # init without a handler (a pod-kill), and one whose disposition cannot be set.
    sig = signal.SIGKILL
    shim = subprocess.Popen(
        podexec.command(["sleep", "60"], new_pidns=True), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 10
        children: list[psutil.Process] = []
        while not children:
            assert time.monotonic() < deadline, "the program never started"
            children = psutil.Process(shim.pid).children()
            time.sleep(0.02)
        os.kill(children[0].pid, sig)
        _, err = shim.communicate(timeout=10)
    finally:
        if shim.poll() is None:
            shim.kill()
            shim.wait()
    assert shim.returncode == -sig, err.decode()
    assert b"Traceback" not in err, err.decode()
