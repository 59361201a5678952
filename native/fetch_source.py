"""Fetch a source tarball for native/ and check it against its pinned SHA-256.

`python3 fetch_source.py SHA256 OUT URL [URL...]`: a copy already at OUT, or in the download cache
(`$XDG_CACHE_HOME/chaosbus`, else `~/.cache/chaosbus`), with the right checksum is used as it is;
otherwise the URLs are tried in order until one gives a file with that checksum, which is written
to OUT and the cache. A URL that does not answer, fails, or gives other bytes is passed over (and
said so); when none gives the file, the build fails naming every URL and what each did, and
nothing is written.
"""

from __future__ import annotations

import hashlib
import os
import sys
import urllib.request
from pathlib import Path

TIMEOUT_S = 60


def cached(path: Path, sha256: str) -> bytes | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    return data if hashlib.sha256(data).hexdigest() == sha256 else None


def download(urls: list[str], sha256: str) -> tuple[bytes | None, list[str]]:
    """The first of `urls` whose bytes have the checksum, and what each URL tried did."""
    tried = []
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
                data = response.read()
        except (OSError, ValueError) as e:  # URLError and HTTPError are OSErrors
            tried.append(f"{url}: {e}")
            continue
        got = hashlib.sha256(data).hexdigest()
        if got == sha256:
            return data, tried
        tried.append(f"{url}: SHA-256 {got}, expected {sha256}")
    return None, tried


def main(sha256: str, out: str, urls: list[str]) -> int:
    target = Path(out)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "chaosbus" / target.name
    data = cached(target, sha256) or cached(cache, sha256)
    if data is None:
        data, tried = download(urls, sha256)
        for line in tried:
            print(f"fetch_source: passed over {line}", file=sys.stderr)
        if data is None:
            print(
                f"fetch_source: no URL gave {target.name} with SHA-256 {sha256}; tried, in order:\n  "
                + "\n  ".join(tried)
                + f"\nPut a copy with that checksum at {cache} to build without a download.",
                file=sys.stderr,
            )
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
    if len(sys.argv) < 4:
        sys.exit("usage: fetch_source.py SHA256 OUT URL [URL...]")
    sys.exit(main(sys.argv[1], sys.argv[2], sys.argv[3:]))
