"""The DNSChaos responder: one per target network namespace, inside it, on 127.0.0.1.

A DNSChaos table in the pod's netns redirects every IPv4 DNS query (UDP and TCP port 53, whatever
resolver it was sent to) to this responder's port. It answers the queries a live rule takes over
(dnsrules) and forwards every other one to the address the query was sent to, which it reads from
the namespace's conntrack table (the redirected flow's original destination, one ctnetlink
request). Its own forwarded
queries carry `MARK`, which the redirect rules let through. One thread per namespace, entered
with setns, runs a selector loop: no process is spawned and nothing in the target changes.
"""

from __future__ import annotations

import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import dns.exception
import dns.message

from chaosbus.common.netns import setns_net
from chaosbus.injector.backends import pernetns
from chaosbus.injector.backends._glue import ctnetlink
from chaosbus.injector.backends.dnsrules import DnsRule, answer

MARK = 0x0C4A05D5  # fwmark of the responder's own queries to real resolvers
FORWARD_TIMEOUT_S = 3.0
MAX_UDP = 4096
MAX_TCP = 65535
TCP_IDLE_S = 5.0
OWNER_CHECK_S = 1.0
_CONNTRACK = "/proc/thread-self/net/nf_conntrack"


def original_destination(table: str, proto: str, client: tuple[str, int], local_port: int) -> tuple[str, int] | None:
    """The original destination of the redirected flow from `client` to our `local_port`, read from
    conntrack text (`/proc/net/nf_conntrack` format: the original tuple, then the reply tuple).
    """
    for line in table.splitlines():
        fields = line.split()
        if len(fields) < 3 or fields[2] != proto:
            continue
        kv: dict[str, list[str]] = {}
        for f in fields:
            key, sep, value = f.partition("=")
            if sep:
                kv.setdefault(key, []).append(value)
        try:
            if (
                kv["dst"][1] == client[0]
                and kv["dport"][1] == str(client[1])
                and kv["sport"][1] == str(local_port)
                and kv["src"][0] == client[0]
            ):
                return kv["dst"][0], int(kv["dport"][0])
        except (KeyError, IndexError, ValueError):
            continue
    return None


@dataclass
class _Pending:
    client: tuple[str, int]
    sent_at: float
    reply_to: Callable[[bytes], object]


class Responder(pernetns.Rules[DnsRule]):
    """The responder of one netns; its rules are keyed by the experiment's table name."""

    def __init__(self, netns_path: str) -> None:
        super().__init__()
        self.netns_path = netns_path
        self.port = 0
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._conntrack: ctnetlink.Conntrack | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread = threading.Thread(target=self._run, name=f"dns-responder {netns_path}", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error
        if not self._ready.is_set():
            raise OSError(f"DNS responder in {netns_path} did not start")

    # --- control (any thread) ---

    def stop(self) -> None:
        """End the loop and close every socket (idempotent)."""
        with self._lock:
            if self._stop.is_set():
                return
            self._stop.set()
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass  # the loop already ended
        self._thread.join(5)
        self._wake_w.close()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # --- the loop (the responder's thread, inside the netns) ---

    def _run(self) -> None:
        try:
            setns_net(self.netns_path)
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.bind(("127.0.0.1", 0))
            self.port = udp.getsockname()[1]
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            tcp.bind(("127.0.0.1", self.port))
            tcp.listen(64)
            try:
                self._conntrack = ctnetlink.Conntrack()
            except OSError:
                self._conntrack = None  # no ctnetlink: the /proc table is read instead
        except BaseException as e:  # reported to the starter
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        sel = selectors.DefaultSelector()
        udp.setblocking(False)
        tcp.setblocking(False)
        sel.register(udp, selectors.EVENT_READ, "udp")
        sel.register(tcp, selectors.EVENT_READ, "tcp")
        sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        pending: dict[socket.socket, _Pending] = {}
        checked = time.monotonic()
        try:
            while not self._stop.is_set():
                for key, _ in sel.select(0.5):
                    if key.data == "udp":
                        self._on_udp(udp, sel, pending)
                    elif key.data == "tcp":
                        self._on_tcp_accept(tcp, sel, pending)
                    elif key.data == "wake":
                        self._wake_r.recv(64)
                    elif key.data == "fwd":
                        self._on_forward_reply(key.fileobj, sel, pending)  # type: ignore[arg-type]
                    elif isinstance(key.data, tuple):
                        self._on_tcp_query(key.fileobj, key.data, sel, pending)  # type: ignore[arg-type]
                now = time.monotonic()
                if now - checked > OWNER_CHECK_S:
                    checked = now
                    if self._drop_orphaned_rules():
                        break
                for sock in [s for s, p in pending.items() if now - p.sent_at > FORWARD_TIMEOUT_S]:
                    self._close_forward(sock, sel, pending)
        finally:
            for sock in list(pending):
                self._close_forward(sock, sel, pending)
            for key in list(sel.get_map().values()):
                if key.fileobj is not self._wake_r:
                    key.fileobj.close()  # type: ignore[union-attr]
            sel.close()
            self._wake_r.close()
            if self._conntrack is not None:
                self._conntrack.close()

    def _decide(self, wire: bytes) -> bytes | None:
        """Our answer to a query, or None to forward it."""
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None  # not ours to judge: the resolver answers it
        reply = answer(query, self.snapshot(), time.time())
        return None if reply is None else reply.to_wire()

    def _on_udp(self, udp: socket.socket, sel: selectors.BaseSelector, pending: dict[socket.socket, _Pending]) -> None:
        try:
            wire, client = udp.recvfrom(MAX_UDP)
        except OSError:
            return
        reply = self._decide(wire)
        if reply is not None:
            udp.sendto(reply, client)
            return
        self._forward(wire, "udp", client, lambda data: udp.sendto(data, client), sel, pending)

    def _forward(
        self,
        wire: bytes,
        proto: str,
        client: tuple[str, int],
        reply_to: Callable[[bytes], object],
        sel: selectors.BaseSelector,
        pending: dict[socket.socket, _Pending],
    ) -> None:
        dest = self._lookup(proto, client)
        if dest is None:
            return  # the client retries or times out, as with a lost packet
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, MARK)
            sock.setblocking(False)
            sock.connect(dest)
            sock.send(wire)
        except OSError:
            sock.close()
            return
        pending[sock] = _Pending(client, time.monotonic(), reply_to)
        sel.register(sock, selectors.EVENT_READ, "fwd")

    def _lookup(self, proto: str, client: tuple[str, int]) -> tuple[str, int] | None:
        if self._conntrack is not None:
            try:
                return self._conntrack.original_destination(proto, ("127.0.0.1", self.port), client)
            except OSError:
                pass
        try:
            with open(_CONNTRACK) as f:
                return original_destination(f.read(), proto, client, self.port)
        except OSError:
            return None

    def _on_forward_reply(
        self, sock: socket.socket, sel: selectors.BaseSelector, pending: dict[socket.socket, _Pending]
    ) -> None:
        entry = pending.get(sock)
        try:
            data = sock.recv(MAX_TCP)
        except OSError:
            data = b""
        self._close_forward(sock, sel, pending)
        if entry is not None and data:
            try:
                entry.reply_to(data)
            except OSError:
                pass

    @staticmethod
    def _close_forward(
        sock: socket.socket, sel: selectors.BaseSelector, pending: dict[socket.socket, _Pending]
    ) -> None:
        pending.pop(sock, None)
        try:
            sel.unregister(sock)
        except (KeyError, ValueError):
            pass
        sock.close()

    # TCP: length-prefixed messages (RFC 7766), answered on the client's connection.

    def _on_tcp_accept(
        self, tcp: socket.socket, sel: selectors.BaseSelector, pending: dict[socket.socket, _Pending]
    ) -> None:
        try:
            conn, client = tcp.accept()
        except OSError:
            return
        conn.setblocking(False)
        sel.register(conn, selectors.EVENT_READ, (client[0], client[1]))

    def _on_tcp_query(
        self,
        conn: socket.socket,
        client: tuple[str, int],
        sel: selectors.BaseSelector,
        pending: dict[socket.socket, _Pending],
    ) -> None:
        try:
            conn.settimeout(TCP_IDLE_S)
            head = _recv_exact(conn, 2)
            wire = _recv_exact(conn, struct.unpack("!H", head)[0])
        except OSError:
            sel.unregister(conn)
            conn.close()
            return
        finally:
            if conn.fileno() >= 0:
                conn.setblocking(False)

        def send(data: bytes) -> None:
            conn.setblocking(True)
            conn.settimeout(TCP_IDLE_S)
            conn.sendall(struct.pack("!H", len(data)) + data)
            conn.setblocking(False)

        reply = self._decide(wire)
        if reply is not None:
            try:
                send(reply)
            except OSError:
                sel.unregister(conn)
                conn.close()
            return
        dest = self._lookup("tcp", client)
        if dest is not None:
            # Upstream over TCP too: a client asks over TCP for answers too big for UDP. A short
            # thread (born here, so inside the netns) waits for it; the loop stays free.
            threading.Thread(target=_tcp_upstream, args=(dest, wire, send), daemon=True).start()


def _tcp_upstream(dest: tuple[str, int], wire: bytes, send: Callable[[bytes], None]) -> None:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as up:
            up.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, MARK)
            up.settimeout(FORWARD_TIMEOUT_S)
            up.connect(dest)
            up.sendall(struct.pack("!H", len(wire)) + wire)
            data = _recv_exact(up, struct.unpack("!H", _recv_exact(up, 2))[0])
        send(data)
    except OSError:
        pass  # the client times out, as with an unreachable resolver


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = conn.recv(n - len(out))
        if not chunk:
            raise OSError("connection closed")
        out += chunk
    return out


def servers() -> pernetns.Servers[Responder]:
    """An empty set of responders, one per namespace once started (each `Backends` owns one)."""
    return pernetns.Servers(Responder)
