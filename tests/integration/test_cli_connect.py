"""A CLI command against a NATS URL where nothing listens ends with the usual error instead of
retrying forever (nats-py's first connect never gives up when reconnects are unlimited)."""

from __future__ import annotations

import socket
import subprocess
import sys


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_command_without_a_server_fails_with_a_hint_instead_of_hanging() -> None:
    url = f"nats://127.0.0.1:{_closed_port()}"
    # The timeout only turns a hang into a failure; the command gives up after a few seconds.
    done = subprocess.run(
        [sys.executable, "-m", "chaosbus.cli", "--nats", url, "get", "networkchaos"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert f"error: cannot connect to NATS at {url}" in done.stderr
    assert "is `chaosbus up` running" in done.stderr
