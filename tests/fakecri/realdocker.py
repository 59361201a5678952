"""A real Docker Engine (Debian's docker.io) for tests: a private dockerd on a socket in a temp dir
(no bridge, no iptables, vfs storage: it changes nothing on the host), the busybox test image
loaded through the Engine API, and containers created and started through it. Skips, saying
why, without root or the binaries.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import os
import shutil
import subprocess
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chaosbus.injector.backends.dockerapi import UnixHTTPConnection
from fakecri import realctd

IMAGE = "chaosbus-test:1"


def missing() -> str | None:
    if os.geteuid() != 0:
        return "not root"
    if shutil.which("dockerd") is None:
        return "dockerd not installed (apt-get install docker.io)"
    if not os.path.exists(realctd.BUSYBOX):
        return f"{realctd.BUSYBOX} missing (apt-get install busybox-static)"
    return None


def image_archive() -> bytes:
    """`docker save` format: manifest.json, the config, one layer."""
    layer = realctd.busybox_layer()
    files = {
        "layer.tar": layer,
        "config.json": json.dumps(realctd.image_config(layer)).encode(),
        "manifest.json": json.dumps([{"Config": "config.json", "RepoTags": [IMAGE], "Layers": ["layer.tar"]}]).encode(),
    }
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


@dataclass
class Dockerd:
    socket: Path
    process: subprocess.Popen[bytes]

    def call(
        self, method: str, path: str, body: bytes | None = None, *, content_type: str = "application/json"
    ) -> tuple[int, Any]:
        conn = UnixHTTPConnection(str(self.socket), 60)
        try:
            conn.request(method, path, body=body, headers={"Content-Type": content_type})
            resp = conn.getresponse()
            raw = resp.read()
        finally:
            conn.close()
        try:
            return resp.status, json.loads(raw) if raw else None
        except ValueError:
            return resp.status, raw

    def run_container(self, argv: list[str]) -> str:
        code, doc = self.call(
            "POST",
            "/containers/create",
            json.dumps({"Image": IMAGE, "Cmd": argv, "HostConfig": {"NetworkMode": "none"}}).encode(),
        )
        assert code == 201, (code, doc)
        container_id = str(doc["Id"])
        code, doc = self.call("POST", f"/containers/{container_id}/start")
        assert code == 204, (code, doc)
        return container_id

    def remove(self, container_id: str) -> None:
        self.call("DELETE", f"/containers/{container_id}?force=true")


# What dockerd makes outside its data and exec roots whatever its flags say; removed afterwards
# when they did not exist before (directories only when empty).
HOST_LEFTOVERS = (
    Path("/etc/docker/key.json"),
    Path("/run/docker/plugins"),
    Path("/run/docker"),
    Path("/run/containerd/s"),
    Path("/run/containerd"),
)


def _remove_new(made: list[Path]) -> None:
    for path in made:
        with contextlib.suppress(OSError):
            if path.is_dir():
                path.rmdir()
            else:
                path.unlink()


@contextlib.contextmanager
def dockerd(root: Path) -> Iterator[Dockerd]:
    """A private dockerd in `root` with the test image loaded; stopped on exit."""
    made = [p for p in HOST_LEFTOVERS if not p.exists()]
    sock = root / "d.sock"
    log = open(root / "dockerd.log", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [
            "dockerd",
            "--data-root",
            str(root / "data"),
            "--exec-root",
            str(root / "exec"),
            "--pidfile",
            str(root / "docker.pid"),
            "-H",
            f"unix://{sock}",
            "--bridge=none",
            "--iptables=false",
            "--ip6tables=false",
            "--ip-masq=false",
            "--userland-proxy=false",
            "--oom-score-adjust=0",
            "--storage-driver=vfs",
        ],
        stdout=log,
        stderr=log,
    )
    try:
        daemon = Dockerd(sock, proc)
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError, http.client.HTTPException):
                if sock.exists() and daemon.call("GET", "/_ping")[0] == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dockerd did not start: {(root / 'dockerd.log').read_text()[-2000:]}")
            time.sleep(0.2)
        code, doc = daemon.call("POST", "/images/load?quiet=1", image_archive(), content_type="application/x-tar")
        assert code == 200, (code, doc)
        yield daemon
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        log.close()
        _remove_new(made)
