"""Our own control traffic is never cut: the endpoints a partition or shaping rule must let through.

They come from `CHAOSBUS_EXEMPT` (comma-separated `host`, `host:port`, `CIDR` or `CIDR:port`;
hosts are resolved to IPv4) plus the NATS server(s) the injector talks to (`configure(nats_url)`,
else `CHAOSBUS_NATS_URL` / the running embedded server's URL, as `config.nats_url` finds it). In
cluster mode, list the addresses pods use to reach NATS and the API server (Service IPs and their
endpoints) in `CHAOSBUS_EXEMPT`; a pod that is itself such an endpoint keeps answering too, because
a packet is exempt when either its destination or its source matches.
"""

from __future__ import annotations

import socket
import threading
import time
from urllib.parse import urlsplit

from chaosbus.common import config, settings
from chaosbus.common.crd.networkchaos import parse_external

ENV = "CHAOSBUS_EXEMPT"
NATS_DEFAULT_PORT = 4222
TTL_S = 30.0

Endpoint = tuple[str, int | None]  # (IPv4 network as text, port or None)

_lock = threading.Lock()
_nats_url: str | None = None
_cache: tuple[float, str, tuple[Endpoint, ...]] | None = None


def configure(nats_url: str | None) -> None:
    """Tell the exemptions which NATS URL this process connects to (the injector's --nats)."""
    global _nats_url, _cache
    with _lock:
        _nats_url, _cache = nats_url, None


def endpoints() -> tuple[Endpoint, ...]:
    """The exempt endpoints now (resolved names are cached for TTL_S). Unresolvable names are
    skipped: an exemption never makes an experiment fail.
    """
    global _cache
    spec = f"{settings.current().exempt}|{_nats_url or config.nats_url()}"
    with _lock:
        if _cache is not None and _cache[1] == spec and time.monotonic() - _cache[0] < TTL_S:
            return _cache[2]
    found = _parse(spec)
    with _lock:
        _cache = (time.monotonic(), spec, found)
    return found


def _parse(spec: str) -> tuple[Endpoint, ...]:
    exempt, urls = spec.split("|", 1)
    texts = [t.strip() for t in exempt.split(",") if t.strip()]
    for url in urls.split(","):
        parts = urlsplit(url.strip() if "://" in url else f"nats://{url.strip()}")
        if parts.hostname:
            texts.append(f"{parts.hostname}:{parts.port or NATS_DEFAULT_PORT}")
    out: set[Endpoint] = set()
    for text in texts:
        ext = parse_external(text)
        if ext is None:
            continue
        if ext.network:
            out.add((ext.network, ext.port))
        else:
            out |= {(f"{addr}/32", ext.port) for addr in resolve_ipv4(ext.hostname)}
    return tuple(sorted(out, key=lambda e: (e[0], e[1] or 0)))


def resolve_ipv4(hostname: str) -> list[str]:
    """IPv4 addresses of `hostname` (empty when it does not resolve)."""
    try:
        infos = socket.getaddrinfo(hostname, None, family=socket.AF_INET, type=socket.SOCK_STREAM)
    except OSError:
        return []
    return sorted({str(info[4][0]) for info in infos})
