"""Reading the kernel: when does a `chaosbus_*` nftables table appear in, or vanish from, a target's
network namespace, and what do single kernel operations cost (the floors).

`TableMonitor` holds one raw nfnetlink socket per target netns, created inside that netns and
subscribed to the `NFNLGRP_NFTABLES` multicast group: the kernel itself announces every committed
nftables transaction there (what `nft monitor` shows). A thread waits on all sockets with epoll and
stamps each transaction with the wall clock at the moment its closing NEWGEN message is read, so
1,000 targets are watched at the cost of reading their events, with no polling. `readback` then
confirms the final state by asking the kernel directly (pyroute2 `get_tables` inside the netns),
off the timed path, so every timed figure is also verified.

Floors: one nft transaction the way the injector runs it (`nsenter ... nft -f -`, through the
injector's own backend), the same transaction through libnftables with a context kept per netns
(no process, the socket stays in the netns), one netlink request on a cached socket in the netns,
and one pyroute2 readback from a fresh thread (what `readback` costs per target).
"""

from __future__ import annotations

import ctypes
import errno
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from chaosbus.common import netns as nsu
from chaosbus.injector.backends._glue import libnft

NETLINK_NETFILTER = 12
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
NFNLGRP_NFTABLES = 7
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_NEWTABLE, NFT_MSG_DELTABLE, NFT_MSG_NEWGEN, NFT_MSG_GETGEN = 0, 2, 15, 16
NFTA_TABLE_NAME = 1
NLMSG_ERROR = 2
NLM_F_REQUEST = 1
TABLE_PREFIX = "chaosbus_"
_HDR = struct.Struct("=IHHII")
_RCVBUF = 1 << 20


def _nft_socket(groups: bool) -> socket.socket:
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_NETFILTER)
    s.bind((0, 0))
    if groups:
        s.setsockopt(socket.SOL_SOCKET, 33, _RCVBUF)  # SO_RCVBUFFORCE (root): no lost events
        s.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, NFNLGRP_NFTABLES)
    return s


def parse_table_events(data: bytes) -> list[tuple[int, str]]:
    """(message type, table name) for each nftables table/gen message in one netlink read."""
    out: list[tuple[int, str]] = []
    off = 0
    while off + _HDR.size <= len(data):
        length, typ, _flags, _seq, _pid = _HDR.unpack_from(data, off)
        if length < _HDR.size:
            break
        if typ >> 8 == NFNL_SUBSYS_NFTABLES:
            msg = typ & 0xFF
            if msg in (NFT_MSG_NEWTABLE, NFT_MSG_DELTABLE):
                out.append((msg, _table_name(data[off + _HDR.size + 4 : off + length])))
            elif msg == NFT_MSG_NEWGEN:
                out.append((msg, ""))
        off += (length + 3) & ~3
    return out


def _table_name(attrs: bytes) -> str:
    p = 0
    while p + 4 <= len(attrs):
        alen, atyp = struct.unpack_from("=HH", attrs, p)
        if alen < 4:
            break
        if atyp & 0x7FFF == NFTA_TABLE_NAME:
            return attrs[p + 4 : p + alen].rstrip(b"\0").decode(errors="replace")
        p += (alen + 3) & ~3
    return ""


@dataclass
class _Watched:
    path: str
    sock: socket.socket
    tables: dict[str, tuple[bool, float]] = field(default_factory=dict)  # name -> (present, since)
    pending: dict[str, bool] = field(default_factory=dict)  # seen in the current transaction


class TableMonitor:
    """Committed `chaosbus_*` table changes per watched netns, stamped when the kernel announced them."""

    def __init__(self) -> None:
        self._by_fd: dict[int, _Watched] = {}
        self._by_path: dict[str, _Watched] = {}
        self._epoll = select.epoll()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.overflows = 0
        self.lock = threading.Lock()
        self.changes: list[tuple[str, str, bool, float]] = []  # (path, table, present, at), in order

    def watch(self, path: str) -> None:
        sock = nsu.run_in_netns(path, _nft_socket, True)
        sock.setblocking(False)
        w = _Watched(path, sock)
        with self.lock:
            self._by_fd[sock.fileno()] = w
            self._by_path[path] = w
        self._epoll.register(sock.fileno(), select.EPOLLIN)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="nft-monitor", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        for w in list(self._by_fd.values()):
            w.sock.close()
        self._by_fd.clear()
        self._by_path.clear()
        self._epoll.close()

    def state(self, path: str, table: str) -> tuple[bool, float]:
        """(present, since when) of `table` in the netns at `path`, as last committed."""
        return self._by_path[path].tables.get(table, (False, 0.0))

    def _set(self, w: _Watched, table: str, present: bool, now: float) -> None:
        if w.tables.get(table, (False, 0.0))[0] != present:
            w.tables[table] = (present, now)
            self.changes.append((w.path, table, present, now))

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                ready = self._epoll.poll(0.2)
            except OSError:
                return
            for fd, _ in ready:
                w = self._by_fd.get(fd)
                if w is not None:
                    self._drain(w)

    def _drain(self, w: _Watched) -> None:
        while True:
            try:
                data = w.sock.recv(65536)
            except BlockingIOError:
                return
            except OSError as e:
                if e.errno == errno.ENOBUFS:  # events lost: take the kernel's word for the state
                    self.overflows += 1
                    now = time.time()
                    current = set(list_tables(w.path))
                    with self.lock:
                        for name in set(w.tables) | current:
                            self._set(w, name, name in current, now)
                    continue
                return
            now = time.time()
            for msg, name in parse_table_events(data):
                if msg == NFT_MSG_NEWGEN:  # the transaction is committed: its final states hold now
                    with self.lock:
                        for table, present in w.pending.items():
                            self._set(w, table, present, now)
                    w.pending.clear()
                elif name.startswith(TABLE_PREFIX):
                    w.pending[name] = msg == NFT_MSG_NEWTABLE


def list_tables(path: str) -> list[str]:
    """Table names in the netns at `path`, read from the kernel (pyroute2 from a thread inside it)."""

    def read() -> list[str]:
        from pyroute2.nftables.main import NFTables

        nft = NFTables(nfgen_family=1)  # NFPROTO_INET
        try:
            return [str(t.get_attr("NFTA_TABLE_NAME")) for t in nft.get_tables()]
        finally:
            nft.close()

    try:
        return list(nsu.run_in_netns(path, read))
    except FileNotFoundError:
        return []


def readback(paths: Iterable[str], table: str, want_present: bool, workers: int = 4) -> list[str]:
    """Paths whose kernel state disagrees with `want_present` for `table` (empty: all verified)."""
    paths = list(paths)
    with ThreadPoolExecutor(workers) as pool:
        found = list(pool.map(lambda p: table in list_tables(p), paths))
    return [p for p, has in zip(paths, found, strict=True) if has != want_present]


# --- floors -------------------------------------------------------------------------------------


def timed(fn: Callable[[], object], runs: int) -> list[float]:
    """Wall seconds of `runs` calls of `fn`."""
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


class LibNft:
    """libnftables through ctypes with one context per netns, created on a thread inside it (its
    netlink socket stays there): an nft transaction without spawning a process.
    """

    def __init__(self) -> None:
        self.lib = libnft.load_library()
        self._ctx: dict[str, int] = {}

    def _new(self) -> int:
        return libnft.new_context(self.lib)

    def open(self, path: str) -> None:
        """The context for the netns at `path` (created once)."""
        if path not in self._ctx:
            self._ctx[path] = nsu.run_in_netns(path, self._new)

    def run(self, path: str, script: str) -> None:
        self.open(path)
        ctx = self._ctx[path]
        if self.lib.nft_run_cmd_from_buffer(ctx, script.encode()) != 0:
            raise RuntimeError(f"libnftables: {self.lib.nft_ctx_get_error_buffer(ctx)!r}")

    def close(self) -> None:
        for ctx in self._ctx.values():
            self.lib.nft_ctx_free(ctx)
        self._ctx.clear()


def libnftables_available() -> bool:
    try:
        ctypes.CDLL("libnftables.so.1")
    except OSError:
        return False
    return True


class NetlinkPing:
    """One nfnetlink request (NFT_MSG_GETGEN) and its reply on a socket kept inside the netns."""

    def __init__(self, path: str) -> None:
        self.sock = nsu.run_in_netns(path, _nft_socket, False)
        self.seq = 0

    def ping(self) -> None:
        self.seq += 1
        typ = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN
        body = struct.pack("=BBH", socket.AF_UNSPEC, 0, 0)
        self.sock.send(_HDR.pack(_HDR.size + len(body), typ, NLM_F_REQUEST, self.seq, 0) + body)
        data = self.sock.recv(65536)
        _length, rtyp, _f, _s, _p = _HDR.unpack_from(data, 0)
        if rtyp == NLMSG_ERROR and struct.unpack_from("=i", data, _HDR.size)[0] != 0:
            raise OSError(-struct.unpack_from("=i", data, _HDR.size)[0], "GETGEN failed")

    def close(self) -> None:
        self.sock.close()
