"""A TCP forwarder between a NATS client and a real nats-server that can cut the connection right
after the server has had the client's next write and before its answer reaches the client: a write
that landed while its acknowledgement was lost with the connection. New connections (the client's
reconnect) are forwarded as usual.
"""

from __future__ import annotations

import asyncio
import contextlib

LANDING_S = 0.3  # how long the server has to carry the write out before the cut


class CutProxy:
    def __init__(self, server_port: int) -> None:
        self.server_port = server_port
        self.cuts = 0
        self._armed = False
        self._listener: asyncio.Server | None = None
        self._pairs: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        assert self._listener is not None
        port = self._listener.sockets[0].getsockname()[1]
        return f"nats://127.0.0.1:{port}"

    async def start(self) -> CutProxy:
        self._listener = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    def cut_after_next_write(self) -> None:
        self._armed = True

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for client, server in self._pairs:
            client.close()
            server.close()

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self.server_port)
        self._pairs.append((client_w, server_w))
        answering = [True]  # False once cut: the server's answers no longer reach the client
        for pump in (self._up(client_r, server_w, client_w, answering), self._down(server_r, client_w, answering)):
            task = asyncio.ensure_future(pump)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _up(
        self,
        client_r: asyncio.StreamReader,
        server_w: asyncio.StreamWriter,
        client_w: asyncio.StreamWriter,
        answering: list[bool],
    ) -> None:
        while data := await client_r.read(65536):
            cut = self._armed
            if cut:
                self._armed, answering[0] = False, False
            server_w.write(data)
            await server_w.drain()
            if cut:
                await asyncio.sleep(LANDING_S)
                self.cuts += 1
                client_w.transport.abort()
                server_w.close()
                return

    async def _down(
        self, server_r: asyncio.StreamReader, client_w: asyncio.StreamWriter, answering: list[bool]
    ) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await server_r.read(65536):
                if not answering[0]:
                    return
                client_w.write(data)
                await client_w.drain()
