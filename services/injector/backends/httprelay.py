"""The HTTP/1.x relay of one connection the HTTPChaos proxy accepted (backends/httpproxy): h11
on both sides, the rules (httprules) acting on each request and response they select, everything
else streamed through as it came; bytes that are not HTTP, and a connection switched away from
HTTP (an accepted Upgrade or CONNECT), relayed as they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import replace

import h11

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

READ = 65536
MAX_REWRITE_BODY = 64 * 1024 * 1024  # a body a rule patches is held whole in the injector


class Abort(Exception):
    """A rule aborts the exchange: the client's connection is reset."""


Snapshot = Callable[[], list[HttpRule]]  # the proxy's live rules, read once per request


async def relay(
    snapshot: Snapshot,
    port: int,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    up_reader: asyncio.StreamReader,
    upstream: asyncio.StreamWriter,
) -> None:
    """Relay one redirected connection to `port` until either side ends it; raises `Abort` when a
    rule aborts (the caller resets the client)."""
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
        if not await _exchange(snapshot, port, event, client, reader, writer, server, up_reader, upstream):
            return
        try:
            client.start_next_cycle()
            server.start_next_cycle()
        except h11.LocalProtocolError:
            return  # one side will not reuse the connection


async def _exchange(
    snapshot: Snapshot,
    port: int,
    event: h11.Request,
    client: h11.Connection,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    server: h11.Connection,
    up_reader: asyncio.StreamReader,
    upstream: asyncio.StreamWriter,
) -> bool:
    """One request and its response; False when the connection ends with it."""
    rules = snapshot()
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
            raise Abort()
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


async def _stream(
    src: h11.Connection, reader: asyncio.StreamReader, dst: h11.Connection, writer: asyncio.StreamWriter, head: bytes
) -> None:
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


async def _switch(
    client: h11.Connection,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    server: h11.Connection,
    up_reader: asyncio.StreamReader,
    upstream: asyncio.StreamWriter,
) -> None:
    """The connection left HTTP (an accepted Upgrade or CONNECT): relay its bytes as they are,
    starting with what either side had already sent past the switch."""
    if down := server.trailing_data[0]:
        writer.write(down)
    await _pipe(client.trailing_data[0], reader, writer, up_reader, upstream)


async def _pipe(
    first: bytes,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    up_reader: asyncio.StreamReader,
    upstream: asyncio.StreamWriter,
) -> None:
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


def reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
