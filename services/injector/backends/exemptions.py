"""Our own control traffic is never cut: the endpoints a partition or shaping rule must let through.

They come from `CHAOSBUS_EXEMPT` (comma-separated `host`, `host:port`, `CIDR` or `CIDR:port`;
hosts are resolved to IPv4) plus the NATS server(s) the injector talks to (the URL its
`Exemptions` was made with, else `CHAOSBUS_NATS_URL` / the running embedded server's URL, as
`config.nats_url` finds it). Each `Backends` holds one `Exemptions`. In
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


class Exemptions:
    """One injector's exempt endpoints; `nats_url`: the NATS URL it connects to (the injector's
    --nats; None: `config.nats_url()`)."""

    def __init__(self, nats_url: str | None = None) -> None:
        self.nats_url = nats_url
        self._lock = threading.Lock()
        self._cache: tuple[float, str, tuple[Endpoint, ...]] | None = None

    def endpoints(self) -> tuple[Endpoint, ...]:
        """The exempt endpoints now (resolved names are cached for TTL_S). Unresolvable names are
        skipped: an exemption never makes an experiment fail.
        """
        spec = f"{settings.current().exempt}|{self.nats_url or config.nats_url()}"
        with self._lock:
            cached = self._cache
        if cached is not None and cached[1] == spec and time.monotonic() - cached[0] < TTL_S:
            return cached[2]
        found = _parse(spec)
        with self._lock:
            self._cache = (time.monotonic(), spec, found)
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
