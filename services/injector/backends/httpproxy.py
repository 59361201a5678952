"""The HTTPChaos proxy: one per target network namespace, inside it, on one port.

An HTTPChaos table in the pod's netns redirects TCP connections to the experiment's port, those
reaching the pod and those it opens, to this proxy. It reads each connection's original
destination (SO_ORIGINAL_DST), connects there itself (its own connections carry `MARK`, which the
redirect lets through, so they never loop back) and relays HTTP/1.x with h11: every request and
response the rules (httprules) select gets abort (a TCP reset), delay, replace and patch; every
other message passes unchanged, its body streamed. A connection whose first bytes are not HTTP is
relayed as plain TCP. One thread per namespace, entered with setns, runs an asyncio loop: no
process is spawned and nothing in the target changes.

Why h11: it only parses and frames HTTP/1.1 (no I/O, no server or client policy of its own), so
a message the rules do not select leaves as it came (method, target, header order and case of
values, chunking), and it is small, pure Python and well kept (python-hyper, used under httpx).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import threading
import time
from dataclasses import replace

import h11

from chaosbus.common.netns import setns_net
from chaosbus.injector.backends.httprules import (
    HttpRule,
    Request,
    Response,
    needs_body,
    request_rules,
    response_rules,
    rewrite_request,
    rewrite_response,
)

MARK = 0x0C4A0770  # fwmark of the proxy's own connections to the original destinations
SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h
READ = 65536
CONNECT_TIMEOUT_S = 10.0
OWNER_CHECK_S = 1.0
MAX_REWRITE_BODY = 64 * 1024 * 1024  # a body a rule replaces or patches is held whole in the injector


class _Abort(Exception):
    """A rule aborts the exchange: the client's connection is reset."""


def original_destination(sock: socket.socket) -> tuple[str, int] | None:
    """Where a redirected connection was going; None when it was not redirected."""
    try:
        raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    except OSError:
        return None
    port = struct.unpack("!H", raw[2:4])[0]
    return socket.inet_ntoa(raw[4:8]), port


class Proxy:
    """The proxy of one netns; `rules` maps an experiment's table name to its rule, in the order
    they were added (the order they act in)."""

    def __init__(self, netns_path: str) -> None:
        self.netns_path = netns_path
        self.rules: dict[str, HttpRule] = {}
        self._owners: dict[str, tuple[int, ...]] = {}
        self.port = 0
        self._lock = threading.Lock()
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

    def set_rule(self, key: str, rule: HttpRule, pids: tuple[int, ...] = ()) -> None:
        """Add or replace a rule; `pids`: the target's processes, whose end drops the rule (our
        thread keeps the namespace alive, so a pod that is gone must not leave us running).
        """
        with self._lock:
            self.rules[key] = rule
            self._owners[key] = pids

    def drop_rule(self, key: str) -> bool:
        """Remove a rule; True when none is left."""
        with self._lock:
            self.rules.pop(key, None)
            self._owners.pop(key, None)
            return not self.rules

    def snapshot(self) -> list[HttpRule]:
        with self._lock:
            return list(self.rules.values())

    def _drop_orphaned_rules(self) -> bool:
        with self._lock:
            for key, pids in list(self._owners.items()):
                if pids and not any(os.path.exists(f"/proc/{pid}") for pid in pids):
                    self.rules.pop(key, None)
                    self._owners.pop(key, None)
            return not self.rules

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
                _reset(writer)  # as the destination's own refusal would
                return
            await self._relay(dest[1], reader, writer, up_reader, upstream)
        except _Abort:
            _reset(writer)
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

    async def _relay(self, port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     up_reader: asyncio.StreamReader, upstream: asyncio.StreamWriter) -> None:
        client, server = h11.Connection(h11.SERVER), h11.Connection(h11.CLIENT)
        first: list[bytes] | None = []  # the bytes before the first request: relayed as they are if not HTTP
        while True:
            try:
                event = await _next(client, reader, first)
            except h11.RemoteProtocolError:
                if first is None:
                    raise
                await _pipe(b"".join(first), reader, writer, up_reader, upstream)
                return
            first = None
            if not isinstance(event, h11.Request):
                return  # the client closed
            if not await self._exchange(port, event, client, reader, writer, server, up_reader, upstream):
                return
            try:
                client.start_next_cycle()
                server.start_next_cycle()
            except h11.LocalProtocolError:
                return  # one side will not reuse the connection

    async def _exchange(self, port: int, event: h11.Request, client: h11.Connection, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter, server: h11.Connection, up_reader: asyncio.StreamReader,
                        upstream: asyncio.StreamWriter) -> bool:
        """One request and its response; False when the connection ends with it."""
        rules = self.snapshot()
        req = Request(method=event.method, target=event.target, headers=list(event.headers))
        matched = request_rules(rules, port, req, time.time())
        if client.they_are_waiting_for_100_continue:
            # We read the body ourselves, so we say go on; the server gets no Expect.
            writer.write(client.send(h11.InformationalResponse(status_code=100, headers=[])) or b"")
            req = replace(req, headers=[(k, v) for k, v in req.headers if k != b"expect"])
        await _act(matched)
        if needs_body(matched):
            req = replace(req, body=await _read_body(client, reader, keep=_patches_body(matched)))
        for rule in matched:
            req = rewrite_request(rule.spec, req)
        head = server.send(h11.Request(method=req.method, target=req.target, headers=req.headers)) or b""
        if req.body is not None:
            upstream.write(head + _whole_body(server, req.body))
        else:
            await _stream(client, reader, server, upstream, head)
        await upstream.drain()

        answer = await _next(server, up_reader)
        while isinstance(answer, h11.InformationalResponse):
            writer.write(client.send(answer) or b"")
            if server.their_state is h11.SWITCHED_PROTOCOL:  # 101: an Upgrade (a WebSocket...)
                await _switch(client, reader, writer, server, up_reader, upstream)
                return False
            answer = await _next(server, up_reader)
        if not isinstance(answer, h11.Response):
            return False  # the server closed without answering: so do we
        resp = Response(status=answer.status_code, reason=answer.reason, headers=list(answer.headers))
        rmatched = response_rules(rules, port, req, resp, time.time())
        await _act(rmatched)
        if needs_body(rmatched):
            resp = replace(resp, body=await _read_body(server, up_reader, keep=_patches_body(rmatched)))
        for rule in rmatched:
            resp = rewrite_response(rule.spec, resp)
        headers = resp.headers
        if answer.http_version != b"1.1" and not _has_token(headers, b"connection", b"keep-alive"):
            # The server closes after this response: the client learns it from us.
            headers = [*headers, (b"connection", b"close")]
        head = client.send(h11.Response(status_code=resp.status, reason=resp.reason, headers=headers)) or b""
        if server.their_state is h11.SWITCHED_PROTOCOL:  # a CONNECT tunnel
            writer.write(head)
            await _switch(client, reader, writer, server, up_reader, upstream)
            return False
        if resp.body is not None:
            writer.write(head + _whole_body(client, resp.body))
            if server.their_state is h11.SEND_BODY:
                await _read_body(server, up_reader, keep=False)  # the replaced body, drained
        else:
            await _stream(server, up_reader, client, writer, head)
        await writer.drain()
        return client.our_state is h11.DONE and server.their_state is h11.DONE


def _patches_body(rules: list[HttpRule]) -> bool:
    """Whether the original body matters (a patch merges into it); a body only replaced is drained."""
    return any(r.spec.patch is not None and r.spec.patch.body_json is not None for r in rules)


async def _act(rules: list[HttpRule]) -> None:
    """Abort and delay, rule after rule (each rule's replace and patch come after)."""
    for rule in rules:
        if rule.spec.abort:
            raise _Abort()
        if rule.spec.delay_ns:
            await asyncio.sleep(rule.spec.delay_ns / 1e9)


async def _next(conn: h11.Connection, reader: asyncio.StreamReader, raw: list[bytes] | None = None) -> object:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        data = await reader.read(READ)
        if raw is not None:
            raw.append(data)
        conn.receive_data(data)


async def _read_body(conn: h11.Connection, reader: asyncio.StreamReader, keep: bool = True) -> bytes:
    """A message's whole body (a rule rewrites it); more than MAX_REWRITE_BODY ends the connection
    rather than the injector's memory. `keep=False` drains it."""
    parts: list[bytes] = []
    size = 0
    while True:
        event = await _next(conn, reader)
        if isinstance(event, h11.Data):
            size += len(event.data)
            if keep:
                if size > MAX_REWRITE_BODY:
                    raise OSError(f"a body over {MAX_REWRITE_BODY} bytes is not rewritten")
                parts.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage):
            return b"".join(parts)
        else:
            raise OSError("connection closed in the middle of a message")


def _whole_body(conn: h11.Connection, body: bytes) -> bytes:
    data = (conn.send(h11.Data(data=body)) or b"") if body else b""
    return data + (conn.send(h11.EndOfMessage()) or b"")


async def _stream(src: h11.Connection, reader: asyncio.StreamReader, dst: h11.Connection,
                  writer: asyncio.StreamWriter, head: bytes) -> None:
    """Relay a message's body as it comes, after `head` (its encoded head). What is already at
    hand leaves in one write with the head: a small message costs one send, not three.
    """
    out = bytearray(head)
    while True:
        event = src.next_event()
        if event is h11.NEED_DATA:
            if out:
                writer.write(bytes(out))
                out.clear()
                await writer.drain()
            src.receive_data(await reader.read(READ))
        elif isinstance(event, h11.Data):
            out += dst.send(h11.Data(data=event.data)) or b""
            if len(out) >= READ:
                writer.write(bytes(out))
                out.clear()
                await writer.drain()
        elif isinstance(event, h11.EndOfMessage):
            out += dst.send(h11.EndOfMessage(headers=event.headers)) or b""
            writer.write(bytes(out))
            return
        else:
            raise OSError("connection closed in the middle of a message")


async def _switch(client: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                  server: h11.Connection, up_reader: asyncio.StreamReader, upstream: asyncio.StreamWriter) -> None:
    """The connection left HTTP (an accepted Upgrade or CONNECT): relay its bytes as they are,
    starting with what either side had already sent past the switch."""
    if down := server.trailing_data[0]:
        writer.write(down)
    await _pipe(client.trailing_data[0], reader, writer, up_reader, upstream)


async def _pipe(first: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                up_reader: asyncio.StreamReader, upstream: asyncio.StreamWriter) -> None:
    """Relay bytes both ways until both sides are done (not HTTP: nothing to select)."""
    async def one_way(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        while data := await src.read(READ):
            dst.write(data)
            await dst.drain()
        with contextlib.suppress(OSError):
            dst.write_eof()

    if first:
        upstream.write(first)
    await asyncio.gather(one_way(reader, upstream), one_way(up_reader, writer))


def _has_token(headers: list[tuple[bytes, bytes]], name: bytes, token: bytes) -> bool:
    return any(k == name and token in (t.strip().lower() for t in v.split(b",")) for k, v in headers)


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


_proxies: dict[str, Proxy] = {}
_proxies_lock = threading.Lock()


def _key(netns_path: str) -> str:
    # A pod's containers reach one netns by different /proc paths: one proxy per namespace.
    try:
        st = os.stat(netns_path)
    except OSError:
        return netns_path
    return f"{st.st_dev}:{st.st_ino}"


def ensure(netns_path: str) -> Proxy:
    """The namespace's proxy, started if there is none (or it ended)."""
    with _proxies_lock:
        key = _key(netns_path)
        p = _proxies.get(key)
        if p is None or not p.alive:
            p = Proxy(netns_path)
            _proxies[key] = p
        return p


def release(netns_path: str, rule_key: str) -> None:
    """Drop one experiment's rule; the proxy stops when it has none left."""
    with _proxies_lock:
        key = _key(netns_path)
        p = _proxies.get(key)
        if p is None:
            key, p = next(((k, x) for k, x in _proxies.items() if x.netns_path == netns_path), (key, None))
        if p is None:
            return
        if p.drop_rule(rule_key):
            del _proxies[key]
            p.stop()


def running() -> dict[str, Proxy]:
    """The live proxies by namespace (those that stopped on their own are forgotten)."""
    with _proxies_lock:
        for key in [k for k, p in _proxies.items() if not p.alive]:
            del _proxies[key]
        return dict(_proxies)
