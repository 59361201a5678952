"""Fetch a source tarball for native/ and check it against its pinned SHA-256.

`python3 fetch_source.py URL SHA256 OUT`: a copy already at OUT, or in the download cache
(`$XDG_CACHE_HOME/chaosbus`, else `~/.cache/chaosbus`), with the right checksum is used as it is;
otherwise URL is downloaded, checked and written to OUT and the cache. A wrong checksum fails the
build and nothing is written.
"""

from __future__ import annotations

import hashlib
import os
import sys
import urllib.request
from pathlib import Path


def cached(path: Path, sha256: str) -> bytes | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    return data if hashlib.sha256(data).hexdigest() == sha256 else None


def main(url: str, sha256: str, out: str) -> int:
    target = Path(out)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "chaosbus" / target.name
    data = cached(target, sha256) or cached(cache, sha256)
    if data is None:
        with urllib.request.urlopen(url, timeout=120) as response:
            data = response.read()
        got = hashlib.sha256(data).hexdigest()
        if got != sha256:
            print(f"fetch_source: {url}: SHA-256 {got}, expected {sha256}", file=sys.stderr)
            return 1
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_bytes(data)
        except OSError:
            pass  # a read-only home only costs the next build a download
    tmp = target.with_name(f".{target.name}.{os.getpid()}")
    tmp.write_bytes(data)
    tmp.replace(target)
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: fetch_source.py URL SHA256 OUT")
    sys.exit(main(*sys.argv[1:]))
