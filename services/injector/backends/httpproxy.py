"""The HTTPChaos proxy: one per target network namespace, inside it, on one port.

An HTTPChaos table in the pod's netns redirects TCP connections to the experiment's port, those
reaching the pod and those it opens, to this proxy. It reads each connection's original
destination (SO_ORIGINAL_DST), connects there itself (its own connections carry `MARK`, which the
redirect lets through, so they never loop back) and relays HTTP/1.x with h11 (httprelay): every
request and response the rules (httprules) select gets abort (a TCP reset), delay, replace and
patch; every other message passes unchanged, its body streamed. One thread per namespace, entered
with setns, runs an asyncio loop: no process is spawned and nothing in the target changes.

Why h11: it only parses and frames HTTP/1.1 (no I/O, no server or client policy of its own), so
a message the rules do not select leaves as it came (method, target, header order and case of
values, chunking), and it is small, pure Python and well kept (python-hyper, used under httpx).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading

import h11

from chaosbus.common.netns import setns_net
from chaosbus.injector.backends import httprelay, pernetns
from chaosbus.injector.backends.httprules import HttpRule

MARK = 0x0C4A0770  # fwmark of the proxy's own connections to the original destinations
SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h
CONNECT_TIMEOUT_S = 10.0
OWNER_CHECK_S = 1.0


def original_destination(sock: socket.socket) -> tuple[str, int] | None:
    """Where a redirected connection was going; None when it was not redirected."""
    try:
        raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    except OSError:
        return None
    port = struct.unpack("!H", raw[2:4])[0]
    return socket.inet_ntoa(raw[4:8]), port


class Proxy(pernetns.Rules[HttpRule]):
    """The proxy of one netns; its rules are keyed by the experiment's table name."""

    def __init__(self, netns_path: str) -> None:
        super().__init__()
        self.netns_path = netns_path
        self.port = 0
        self._stopping = False
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._conns: set[asyncio.Task[None]] = set()
        self._thread = threading.Thread(target=self._run, name=f"http-proxy {netns_path}", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error
        if not self._ready.is_set():
            raise OSError(f"HTTP proxy in {netns_path} did not start")

    # --- control (any thread) ---

    def stop(self) -> None:
        """End the loop and close every connection (idempotent)."""
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
        loop, event = self._loop, self._stop_event
        if loop is not None and event is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(event.set)
        self._thread.join(5)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # --- the loop (the proxy's thread, inside the netns) ---

    def _run(self) -> None:
        try:
            setns_net(self.netns_path)
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("0.0.0.0", 0))  # redirected from outside (the pod's address) and from inside (127.0.0.1)
            listener.listen(1024)
            listener.setblocking(False)
            self.port = listener.getsockname()[1]
        except BaseException as e:  # reported to the starter
            self._error = e
            self._ready.set()
            return
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main(listener))
        finally:
            loop.close()

    async def _main(self, listener: socket.socket) -> None:
        self._stop_event = asyncio.Event()
        server = await asyncio.start_server(self._serve, sock=listener, backlog=1024)
        self._ready.set()
        watcher = asyncio.create_task(self._watch_owners())
        try:
            await self._stop_event.wait()
        finally:
            watcher.cancel()
            server.close()
            for task in list(self._conns):
                task.cancel()
            await asyncio.gather(*self._conns, watcher, return_exceptions=True)

    async def _watch_owners(self) -> None:
        while True:
            await asyncio.sleep(OWNER_CHECK_S)
            if self._drop_orphaned_rules():
                assert self._stop_event is not None
                self._stop_event.set()
                return

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        upstream: asyncio.StreamWriter | None = None
        try:
            sock = writer.get_extra_info("socket")
            # asyncio sets TCP_NODELAY only on sockets made with proto=IPPROTO_TCP; without it a
            # response's head and body (two writes) wait ~40 ms for the client's delayed ACK.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            dest = original_destination(sock)
            if dest is None:
                return
            try:
                up_reader, upstream = await self._connect(dest)
            except (OSError, TimeoutError):
                httprelay.reset(writer)  # as the destination's own refusal would
                return
            await httprelay.relay(self.snapshot, dest[1], reader, writer, up_reader, upstream)
        except httprelay.Abort:
            httprelay.reset(writer)
        except (OSError, h11.ProtocolError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass  # the proxy stops: this connection ends with it (asyncio would log a cancelled handler)
        finally:
            for w in (writer, upstream):
                if w is not None:
                    w.close()
            self._conns.discard(task)

    async def _connect(self, dest: tuple[str, int]) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, MARK)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, dest), CONNECT_TIMEOUT_S)
            return await asyncio.open_connection(sock=sock)
        except BaseException:
            sock.close()
            raise


def servers() -> pernetns.Servers[Proxy]:
    """An empty set of proxies, one per namespace once started (each `Backends` owns one)."""
    return pernetns.Servers(Proxy)
