"""native/fetch_source.py against a real HTTP server on localhost: the URLs are tried in order, a
URL that fails or gives other bytes is passed over, the first with the pinned checksum wins (and
later ones are never asked), and when none gives it the build fails naming every URL tried.
"""

from __future__ import annotations

import hashlib
import http.server
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "native" / "fetch_source.py"
TARBALL = b"\x1f\x8b pretend tarball " + bytes(range(256)) * 64
SHA256 = hashlib.sha256(TARBALL).hexdigest()


@dataclass
class Server:
    base: str
    files: dict[str, bytes]
    asked: list[str] = field(default_factory=list)


@pytest.fixture
def server() -> Iterator[Server]:
    files: dict[str, bytes] = {}
    asked: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
            asked.append(self.path)
            body = files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield Server(f"http://127.0.0.1:{httpd.server_address[1]}", files, asked)
    finally:
        httpd.shutdown()
        httpd.server_close()


def _closed_port() -> int:
    """A localhost port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fetch(tmp_path: Path, urls: list[str]) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path / "build" / "fuse3_x.orig.tar.gz"
    out.parent.mkdir(exist_ok=True)
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), SHA256, str(out), *urls],
        capture_output=True,
        text=True,
        timeout=60,
        env={"XDG_CACHE_HOME": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"},
        check=False,
    )
    return proc, out


def test_the_second_url_gives_the_tarball_when_the_first_does_not_answer(server: Server, tmp_path: Path) -> None:
    server.files["/mirror/fuse3.tar.gz"] = TARBALL
    server.files["/upstream/fuse3.tar.gz"] = TARBALL
    dead = f"http://127.0.0.1:{_closed_port()}/pool/fuse3.tar.gz"
    proc, out = fetch(tmp_path, [dead, f"{server.base}/mirror/fuse3.tar.gz", f"{server.base}/upstream/fuse3.tar.gz"])
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == TARBALL
    assert (tmp_path / "cache" / "chaosbus" / out.name).read_bytes() == TARBALL
    assert server.asked == ["/mirror/fuse3.tar.gz"]  # the third was never needed
    assert dead in proc.stderr  # what was passed over is said


def test_a_url_with_other_bytes_or_an_error_is_passed_over(server: Server, tmp_path: Path) -> None:
    server.files["/pool/fuse3.tar.gz"] = TARBALL[:-1] + b"!"  # not what is pinned
    server.files["/snapshot/fuse3.tar.gz"] = TARBALL
    urls = [f"{server.base}/pool/fuse3.tar.gz", f"{server.base}/gone.tar.gz", f"{server.base}/snapshot/fuse3.tar.gz"]
    proc, out = fetch(tmp_path, urls)
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == TARBALL
    assert server.asked == ["/pool/fuse3.tar.gz", "/gone.tar.gz", "/snapshot/fuse3.tar.gz"]


def test_no_url_giving_the_tarball_fails_naming_them_all_and_writes_nothing(server: Server, tmp_path: Path) -> None:
    server.files["/pool/fuse3.tar.gz"] = b"something else"
    urls = [f"{server.base}/pool/fuse3.tar.gz", f"{server.base}/gone.tar.gz", f"http://127.0.0.1:{_closed_port()}/x"]
    proc, out = fetch(tmp_path, urls)
    assert proc.returncode == 1
    assert all(url in proc.stderr for url in urls), proc.stderr
    assert "404" in proc.stderr and f"expected {SHA256}" in proc.stderr
    assert not out.exists() and not (tmp_path / "cache" / "chaosbus" / out.name).exists()


def test_a_cached_copy_is_used_without_asking_anyone(server: Server, tmp_path: Path) -> None:
    cache = tmp_path / "cache" / "chaosbus" / "fuse3_x.orig.tar.gz"
    cache.parent.mkdir(parents=True)
    cache.write_bytes(TARBALL)
    proc, out = fetch(tmp_path, [f"{server.base}/pool/fuse3.tar.gz"])
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == TARBALL and server.asked == []
