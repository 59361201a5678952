"""nats-py without its websocket transport, and a connect that is really connected (natsclient).

nats-py imports aiohttp at import time whenever it is installed (kubernetes_asyncio needs it), only
for `ws://` URLs, which chaosbus never uses: that import alone is ~0.1 s of every CLI command's
start (aiohttp, yarl, multidict, http.client, ...). While nats-py is first imported, aiohttp is
marked as absent, so nats-py takes its own "not installed" branch; the mark is lifted right after,
so kubernetes_asyncio still imports aiohttp normally where it is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from chaosbus.common.logging import get, redact

if TYPE_CHECKING:
    from nats.aio.client import Client

log = get("nats")

_WEBSOCKET_ONLY = ("aiohttp",)


@contextlib.contextmanager
def tcp_only() -> Iterator[None]:
    """Import nats-py inside this block; a no-op once nats-py or aiohttp is already imported."""
    if "nats" in sys.modules:
        yield
        return
    masked = [name for name in _WEBSOCKET_ONLY if name not in sys.modules]
    for name in masked:
        sys.modules[name] = None  # type: ignore[assignment]  # an import of it raises ImportError
    try:
        yield
    finally:
        for name in masked:
            if sys.modules.get(name, False) is None:
                del sys.modules[name]


def check_url(url: str) -> None:
    """chaosbus speaks NATS over TCP (nats://, tls://); say so instead of nats-py's advice to install aiohttp."""
    for server in url.split(","):
        if server.strip().lower().startswith(("ws://", "wss://")):
            raise ValueError(f"NATS over websockets is not supported: {server.strip()} (use nats:// or tls://)")


async def open_client(url: str, *, attempts: list[Client] | None = None, **options: Any) -> Client:
    """A client (natsclient.Client: nats-py's, with its handshake, close and connection loss fixed)
    connected to `url` with `options`, and really connected: a handshake that ended on anything
    but the server's answer is made again. `attempts` collects every client made, so that a caller
    giving up can close the last one.
    """
    from chaosbus.common.natsclient import Client as FixedClient

    while True:
        nc = FixedClient()
        if attempts is not None:
            attempts.append(nc)
        await nc.connect(url, **options)
        if nc.is_connected:
            return nc
        log.warning("nats-server's answer to the connect never came; connecting again", url=redact(url))
        with contextlib.suppress(Exception):
            await nc.close()
        await asyncio.sleep(float(options.get("reconnect_time_wait", 0.5)))
