"""nats-py's client where it loses time or hides errors around a lost connection, fixed by
subclassing it (nats-py itself is not patched).

- The handshake reads the server's real answer. nats-server pings a client whose CONNECT it has not
  answered within 2 s (an auth callout waiting on a slow Kubernetes API); nats-py took that PING
  for the PONG it waits for. On a first connect the client then never wrote a byte; on a reconnect
  it went on as connected, and a refusal arriving later came through its reader, where nats-py
  takes an authorization violation as the end of the connection for good, instead of trying again
  as it does with a refusal answered in time. Here a PING during the handshake is answered and
  the wait goes on.
- The reader survives a flush that timed out: nats-py set the result of its cancelled future
  when the late PONG came, and that error ended the reader, leaving a connection that heard
  nothing until its pings found it stale.
- Closing always finishes. nats-py flushes what is still buffered before it closes the socket; on
  a connection that is already gone that raises (ConnectionResetError), and nats-py then skips the
  rest: its subscriptions' tasks keep running and the error replaces whatever the caller was
  raising. Here the error is logged and the cleanup finished.
- A lost connection is announced (`lost`): a request written to a socket that is then found dead
  (nats-server killed and restarted before the client read the end of the old connection) is
  never answered, and nats-py waits out its whole timeout (5 s for JetStream) for it. A caller that
  can safely ask again (a publish with a message id, a one-off read) waits for this instead and
  asks again on the new connection; a follower's ordered consumer, gone with a restarted server, is
  re-created as soon as the client is back (`resume_on_reconnect`), not two heartbeats later.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Awaitable, Coroutine
from typing import Any, TypeVar
from urllib.parse import ParseResult

from chaosbus.common import logging as cblog
from chaosbus.common.tcpnats import tcp_only

with tcp_only():
    import nats.errors
    from nats.aio.client import Client as NatsClient
    from nats.aio.transport import Transport

T = TypeVar("T")
log = cblog.get("nats")
_PING = b"PING\r\n"
_PONG = b"PONG\r\n"
RECONNECT_POLL_S = 0.05


class ConnectionLost(ConnectionError):
    """The connection a request went out on was lost before its answer came (it may have been
    carried out or not: only a request that is safe to repeat is asked again)."""


class Client(NatsClient):
    """nats-py's client with the fixes of the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        self._lost: asyncio.Future[None] | None = None
        self.back = asyncio.Event()  # set once reconnected (or closed): what `until_connected` waits on

    def lost(self) -> asyncio.Future[None]:
        """Done once the current connection is lost, or at once while there is none (reconnecting
        or closed); shared by every caller: await it, never cancel it.
        """
        if self._lost is None or (self._lost.done() and self.is_connected):
            self._lost = asyncio.get_running_loop().create_future()
        if not self.is_connected and not self._lost.done():
            self._lost.set_result(None)
        return self._lost

    def _announce_loss(self) -> None:
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)

    async def _attempt_reconnect(self) -> None:
        self._announce_loss()
        self.back.clear()
        try:
            await super()._attempt_reconnect()
        finally:
            if self.is_connected or self.is_closed:
                self.back.set()

    async def _process_connect_init(self) -> None:
        plain = self._transport
        if plain is None:
            await super()._process_connect_init()
            return
        self._transport = _Handshake(plain)
        try:
            await super()._process_connect_init()
        finally:
            self._transport = plain

    async def _process_pong(self) -> None:
        # The PONG of a flush (or rtt) that timed out finds its future cancelled; nats-py set its
        # result anyway, and the InvalidStateError ended the reader: a connection that then heard
        # nothing (every answer lost) until its pings found it stale, 15-20 s later.
        if self._pongs and self._pongs[0].done():
            self._pongs.pop(0)
            self._pings_outstanding = 0
            return
        await super()._process_pong()

    async def _close(self, status: int, do_cbs: bool = True) -> None:
        self._announce_loss()
        self.back.set()  # waiters for the connection learn that it is closed
        try:
            await super()._close(status, do_cbs)
        except Exception as e:
            log.warning("closing the NATS connection failed; finishing its cleanup", error=str(e) or type(e).__name__)
        finally:
            if self.is_closed:
                self._release()

    def _release(self) -> None:
        """What nats-py's close does after its last flush, done here whatever that flush raised."""
        self._pending, self._pending_data_size = [], 0
        for task in (self._reading_task, self._ping_interval_task, self._flusher_task):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        for sub in self._subs.values():
            if sub._wait_for_msgs_task is not None and not sub._wait_for_msgs_task.done():
                sub._wait_for_msgs_task.cancel()
            if sub._message_iterator is not None:
                sub._message_iterator._cancel()
            for waiting in (sub._pending_next_msgs_calls or {}).values():
                waiting.cancel()
        self._subs.clear()
        transport: Any = self._transport  # nats-py leaves Transport.close unannotated
        if transport is not None:
            transport.close()


async def until_connected(nc: NatsClient, deadline: float) -> None:
    """Return once `nc` is connected (again); nats.errors.TimeoutError past `deadline` (monotonic),
    ConnectionClosedError once it is closed for good."""
    while not nc.is_connected:
        if nc.is_closed:
            raise nats.errors.ConnectionClosedError
        left = deadline - time.monotonic()
        if left <= 0:
            raise nats.errors.TimeoutError
        if not isinstance(nc, Client) or nc.back.is_set():  # set: the reconnect has not begun yet
            await asyncio.sleep(min(left, RECONNECT_POLL_S))
            continue
        # the status is asked again at least every second, whatever the event says
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(nc.back.wait(), min(left, 1.0))


def lost(nc: NatsClient) -> asyncio.Future[None]:
    """`Client.lost` of `nc`; a future never done for another client (nats-py's own, in a test)."""
    if isinstance(nc, Client):
        return nc.lost()
    return asyncio.get_running_loop().create_future()


async def unless_lost(nc: NatsClient, call: Awaitable[T]) -> T:
    """The result of awaiting `call` (a coroutine) on `nc`'s current connection; ConnectionLost as
    soon as that connection is lost (its answer would never come), the call cancelled then.
    """
    gone = lost(nc)
    if gone.done():
        if isinstance(call, Coroutine):
            call.close()
        raise ConnectionLost("the NATS connection is away")
    running = asyncio.ensure_future(call)

    def interrupt(_: object) -> None:
        running.cancel()

    gone.add_done_callback(interrupt)
    try:
        return await running
    except asyncio.CancelledError:
        me = asyncio.current_task()
        if gone.done() and (me is None or not me.cancelling()):
            raise ConnectionLost("the NATS connection was lost before the answer came") from None
        raise
    finally:
        gone.remove_done_callback(interrupt)


def resume_on_reconnect(nc: NatsClient, sub: Any) -> asyncio.Task[None]:
    """A task (cancel it with the subscription) that re-creates the ordered consumer behind `sub`
    (nats-py's `js.subscribe(..., ordered_consumer=True)`) as soon as `nc` is connected again after
    a loss, from the message after the last one it delivered. nats-py does that only once two idle
    heartbeats were missed (2-4 s after the reconnect with a 1 s heartbeat); its check stays, for a
    consumer lost without the connection (a lame-duck server shutting JetStream down).
    """

    async def resume() -> None:
        # nats-py's ordered-consumer state, private: on the core subscription a push one wraps
        jsi = getattr(getattr(sub, "_sub", sub), "_jsi", None)
        if jsi is None or not getattr(jsi, "_ordered", False):
            return
        while not nc.is_closed:
            await asyncio.shield(lost(nc))
            try:
                await until_connected(nc, float("inf"))
                await jsi.reset_ordered_consumer(jsi._sseq + 1)
            except nats.errors.ConnectionClosedError:
                return
            except Exception as e:  # nats-py's own heartbeat check re-creates it a little later
                log.warning("follower not re-created after the reconnect", error=str(e) or type(e).__name__)

    return asyncio.ensure_future(resume())


class _Handshake(Transport):
    """The transport while nats-py connects: a PING read where the answer to CONNECT is awaited
    is answered with a PONG and skipped, so the handshake reads the server's real answer."""

    def __init__(self, inner: Transport) -> None:
        self.inner: Any = inner  # nats-py leaves some of Transport's methods unannotated

    async def readline(self) -> bytes:
        while True:
            line: bytes = await self.inner.readline()
            if line != _PING:
                return line
            self.inner.write(_PONG)
            await self.inner.drain()

    async def connect(self, uri: ParseResult, buffer_size: int, connect_timeout: int) -> Any:
        return await self.inner.connect(uri, buffer_size, connect_timeout)

    async def connect_tls(
        self, uri: str | ParseResult, ssl_context: ssl.SSLContext, buffer_size: int, connect_timeout: int
    ) -> Any:
        return await self.inner.connect_tls(uri, ssl_context, buffer_size, connect_timeout)

    def write(self, payload: bytes) -> Any:
        return self.inner.write(payload)

    def writelines(self, payload: list[bytes]) -> Any:
        return self.inner.writelines(payload)

    async def read(self, buffer_size: int) -> bytes:
        data: bytes = await self.inner.read(buffer_size)
        return data

    async def drain(self) -> Any:
        return await self.inner.drain()

    async def wait_closed(self) -> Any:
        return await self.inner.wait_closed()

    def close(self) -> Any:
        return self.inner.close()

    def at_eof(self) -> bool:
        return bool(self.inner.at_eof())

    def __bool__(self) -> bool:
        return bool(self.inner)
