"""nftables transactions through libnftables (ctypes), without a process per operation.

Spawning `nsenter … nft -f -` cost 8-22 ms and ~4 ms of CPU per transaction; a libnftables
context whose netlink socket was opened inside the target netns does the same transaction in
well under a millisecond. Each context belongs to one netns (keyed by its (device, inode)
identity), is created by a visitor thread that entered the netns (`netns.visit_netns`), and is
used under its own lock from any thread afterwards.

Making a context costs more than the transaction it is made for (a thread entering the netns,
`nft_ctx_new`, a first command to open its socket: 0.4 ms idle, 2-3 ms on a loaded node, against
0.1-0.3 ms for the transaction), so a context outlives our last table in its netns by
`IDLE_KEEP_S`: a fault applied again soon (the next run of a schedule, a paused experiment
resumed, a recover followed by a new experiment on the same pod) finds it ready. A context's
socket keeps its netns alive, so a reaper thread frees, every `REAP_EVERY_S`, the contexts whose
netns path is gone (a deleted pod's netns is let go within that) and those idle for longer than
`IDLE_KEEP_S`. Two limits of libnftables 1.0.6 shape the cache: it `select()`s on its socket and
aborts the process on a descriptor >= 1024, so no context is created while the process holds
many descriptors (`Unavailable`: the caller spawns `nft` instead); and a context costs about
0.9 MB, so at most `MAX_CONTEXTS` are kept, least recently used freed first.

Freeing a context is slow and never on the caller's path: closing its netlink socket after a
transaction waits 8-30 ms in the kernel (measured), so a recover that freed the netns's context
inline left every other recovery queued behind it (100 expiring targets on one node took 1.3 s
serially, against 0.2 ms per delete). A context is marked freed at once, so nobody uses it again,
and a few `nft-free` threads close it in the background; `close()` waits for them.
"""

from __future__ import annotations

import ctypes
import os
import queue
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from chaosbus.common.netns import visit_netns
from chaosbus.injector.backends._glue import nfnl

LIBRARY = "libnftables.so.1"
MAX_CONTEXTS = 128  # a node's pods (kubelet default max 110) each keep theirs; ~0.9 MB each
FREE_THREADS = 4  # the kernel's waits on close overlap; they cost no CPU
FD_HEADROOM = 900  # below select()'s FD_SETSIZE (1024), with room for descriptors opened meanwhile
IDLE_KEEP_S = 10.0  # a context with none of our tables left is kept this long after its last use
REAP_EVERY_S = 0.5  # how often the reaper looks for gone netns and idle contexts
FD_RECOUNT_S = 0.5
FD_SLACK = 50  # recount whenever the estimate comes this close (twice over) to the headroom


class Unavailable(Exception):
    """libnftables cannot be used here (missing, or too many descriptors open): spawn nft instead."""


class TransactionFailed(Exception):
    """libnftables refused the transaction; nothing changed. The message is nft's error text."""


class NetnsGone(Exception):
    """The target network namespace does not exist (any more)."""


@dataclass
class _Context:
    handle: int
    path: str
    raw: socket.socket | None = None  # for deletes (nfnl): no cache fetch, no parse
    lock: threading.Lock = field(default_factory=threading.Lock)
    tables: set[str] = field(default_factory=set)
    freed: bool = False
    last_used: float = field(default_factory=time.monotonic)


def load_library(name: str = LIBRARY) -> ctypes.CDLL:
    """libnftables with the signatures we call declared.

    Raises:
        Unavailable: it cannot be loaded.
    """
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError as e:
        raise Unavailable(f"{name} cannot be loaded: {e}") from e
    lib.nft_ctx_new.restype = ctypes.c_void_p
    lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
    lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
    lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
    lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
    lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_set_dry_run.argtypes = [ctypes.c_void_p, ctypes.c_bool]
    return lib


def new_context(lib: ctypes.CDLL) -> int:
    """A context with buffered output and error, its netlink socket opened in the calling
    thread's netns (so call it from a thread inside the target netns).

    Raises:
        Unavailable: libnftables could not make one.
    """
    handle = lib.nft_ctx_new(0)
    if not handle:
        raise Unavailable("nft_ctx_new failed")
    lib.nft_ctx_buffer_error(handle)
    lib.nft_ctx_buffer_output(handle)
    # The socket is opened by the first command: run one here, inside the netns.
    lib.nft_run_cmd_from_buffer(handle, b"list tables")
    lib.nft_ctx_get_output_buffer(handle)
    return int(handle)


def netns_key(path: str) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError) as e:
        raise NetnsGone(f"network namespace {path} is gone") from e
    return (st.st_dev, st.st_ino)


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


class NftContexts:
    """libnftables contexts by netns identity; thread-safe."""

    def __init__(
        self, library: str = LIBRARY, max_contexts: int = MAX_CONTEXTS, *, idle_keep_s: float = IDLE_KEEP_S
    ) -> None:
        self.lib = load_library(library)
        self.max_contexts, self.idle_keep_s = max_contexts, idle_keep_s
        self._lock = threading.Lock()
        self._contexts: OrderedDict[tuple[int, int], _Context] = OrderedDict()
        self._closer = _Closer(FREE_THREADS)
        self._fd_estimate, self._fd_counted_at = 0, -FD_RECOUNT_S
        self._stop = threading.Event()
        self._reaper = threading.Thread(target=self._reap_forever, name="nft-reaper", daemon=True)
        self._reaper.start()

    def __len__(self) -> int:
        return len(self._contexts)

    def apply(self, path: str, table: str, definition: str) -> None:
        """Make `table` exactly `definition` (a `table inet <table> {...}` block, or any script that
        leaves `table` in place) in the netns at `path`, in one transaction: an existing table is
        replaced atomically, a missing one just defined, which spares libnftables the replace's
        cache fetch (about 0.4 instead of 0.8 ms for a first apply, measured).
        """
        self._run(path, table, definition, keep=True)

    def delete(self, path: str, table: str) -> None:
        """Delete `table` (absent is fine) with one raw nfnetlink batch; the netns's context stays
        for `IDLE_KEEP_S` after our last table. Without a context (evicted, or made by an earlier
        injector) a bare socket is opened in the netns for it: far cheaper than a context.
        """
        key = netns_key(path)
        with self._lock:
            ctx = self._contexts.get(key)
        if ctx is None:
            sock = visit_netns(path, nfnl.open_socket)
            try:
                _raw_delete(sock, table)
            finally:
                self._close_later(sock)
            return
        with ctx.lock:
            if ctx.freed:  # evicted meanwhile: go without it
                return self.delete(path, table)
            assert ctx.raw is not None
            _raw_delete(ctx.raw, table)
            ctx.tables.discard(table)
            ctx.last_used = time.monotonic()
        return None

    def list_table(self, path: str, table: str) -> str:
        """`table` as nft prints it (text), read through the netns's context: no process spawned.

        Raises:
            TransactionFailed: no such table (or nft refused the listing).
        """
        key = netns_key(path)
        ctx = self._get(key, path)
        with ctx.lock:
            if ctx.freed:  # evicted between _get and here: take a fresh one
                return self.list_table(path, table)
            rc = self.lib.nft_run_cmd_from_buffer(ctx.handle, f"list table inet {table}".encode())
            out = (self.lib.nft_ctx_get_output_buffer(ctx.handle) or b"").decode(errors="replace")
            error = "" if rc == 0 else (self.lib.nft_ctx_get_error_buffer(ctx.handle) or b"").decode(errors="replace")
        if rc != 0:
            raise TransactionFailed(error.strip() or f"nft list failed ({rc})")
        return out

    def check(self, script: str) -> str | None:
        """None if the kernel accepts `script` as one transaction in the calling thread's netns, else
        nft's error. As `nft --check`: the kernel runs the whole transaction, then it is aborted, so
        nothing changes; through a context made for it and freed in the background, not a process
        (a spawned nft cost 7 ms of CPU; the kernel's abort waits 8-25 ms either way, measured).

        Raises:
            Unavailable: no context can be made (too many descriptors, or libnftables refused).
        """
        if self._descriptors() >= FD_HEADROOM:
            raise Unavailable("too many open descriptors for libnftables' select()")
        handle = self.lib.nft_ctx_new(0)
        if not handle:
            raise Unavailable("nft_ctx_new failed")
        try:
            self.lib.nft_ctx_buffer_error(handle)
            self.lib.nft_ctx_buffer_output(handle)
            self.lib.nft_ctx_set_dry_run(handle, True)
            rc = self.lib.nft_run_cmd_from_buffer(handle, script.encode())
            error = "" if rc == 0 else (self.lib.nft_ctx_get_error_buffer(handle) or b"").decode(errors="replace")
        finally:
            self._later(self.lib.nft_ctx_free, handle)
        return None if rc == 0 else (error.strip() or f"nft check failed ({rc})")

    def _run(self, path: str, table: str, script: str, *, keep: bool) -> None:
        key = netns_key(path)
        ctx = self._get(key, path)
        with ctx.lock:
            if ctx.freed:  # evicted between _get and here: take a fresh one
                return self._run(path, table, script, keep=keep)
            if keep and (table in ctx.tables or ctx.raw is None or _raw_exists(ctx.raw, table)):
                script = f"add table inet {table}\ndelete table inet {table}\n{script}"
            rc = self.lib.nft_run_cmd_from_buffer(ctx.handle, script.encode())
            self.lib.nft_ctx_get_output_buffer(ctx.handle)  # drain: the buffer would only grow
            if rc != 0:
                error = (self.lib.nft_ctx_get_error_buffer(ctx.handle) or b"").decode(errors="replace")
                raise TransactionFailed(error.strip() or f"nft transaction failed ({rc})")
            if keep:
                ctx.tables.add(table)
            else:
                ctx.tables.discard(table)
            ctx.last_used = time.monotonic()
        return None

    def _get(self, key: tuple[int, int], path: str) -> _Context:
        with self._lock:
            ctx = self._contexts.get(key)
            if ctx is not None and ctx.freed:  # on its way out: a fresh one instead
                del self._contexts[key]
                ctx = None
            if ctx is not None:
                self._contexts.move_to_end(key)
                ctx.last_used = time.monotonic()  # not reaped as idle while in use
                return ctx
        if self._descriptors() >= FD_HEADROOM:
            raise Unavailable("too many open descriptors for libnftables' select()")
        handle, raw = visit_netns(path, self._new)
        fresh = _Context(handle=handle, path=path, raw=raw)
        with self._lock:
            ctx = self._contexts.setdefault(key, fresh)
            evicted = self._over_cap()
        if ctx is not fresh:  # another thread made one meanwhile
            self._release(fresh)
        for old in evicted:
            self._release(old)
        return ctx

    def _descriptors(self) -> int:
        """Open descriptors, counted (a /proc listing, 0.16 ms) at most every FD_RECOUNT_S or when
        near the headroom; in between, each new context is assumed to open two.
        """
        now = time.monotonic()
        with self._lock:
            if now - self._fd_counted_at < FD_RECOUNT_S and self._fd_estimate < FD_HEADROOM - 2 * FD_SLACK:
                self._fd_estimate += 2
                return self._fd_estimate
        count = open_descriptors()
        with self._lock:
            self._fd_estimate, self._fd_counted_at = count, now
        return count

    def _over_cap(self) -> list[_Context]:
        evicted = []
        while len(self._contexts) > self.max_contexts:
            evicted.append(self._contexts.popitem(last=False)[1])
        return evicted

    def _new(self) -> tuple[int, socket.socket]:
        raw = nfnl.open_socket()
        try:
            return new_context(self.lib), raw
        except BaseException:
            raw.close()
            raise

    def _free(self, key: tuple[int, int], ctx: _Context) -> None:
        # Its close queued before it leaves the map: whoever sees it gone can settle() on it.
        self._release(ctx)
        self._forget(key, ctx)

    def _forget(self, key: tuple[int, int], ctx: _Context) -> None:
        with self._lock:
            if self._contexts.get(key) is ctx:
                del self._contexts[key]

    def _release(self, ctx: _Context) -> None:
        with ctx.lock:
            self._release_held(ctx)

    def _release_held(self, ctx: _Context) -> None:
        """Mark `ctx` freed and queue its close; the caller holds `ctx.lock`."""
        if not ctx.freed:
            ctx.freed = True
            self._later(self.lib.nft_ctx_free, ctx.handle)
            if ctx.raw is not None:
                self._close_later(ctx.raw)

    def _close_later(self, sock: socket.socket) -> None:
        self._later(sock.close)

    def _later(self, fn: Callable[..., object], *args: object) -> None:
        self._closer.put(fn, *args)

    def settle(self) -> None:
        """Wait until every released context is closed (its socket, and the netns it held, let go)."""
        self._closer.wait()

    def forget_gone(self) -> int:
        """Free the contexts whose netns path is gone or now names another netns. Returns how many
        were freed.
        """
        with self._lock:
            entries = list(self._contexts.items())
        gone = []
        for key, ctx in entries:
            try:
                alive = netns_key(ctx.path) == key
            except NetnsGone:
                alive = False
            if not alive:
                gone.append((key, ctx))
        for key, ctx in gone:
            self._free(key, ctx)
        return len(gone)

    def forget_idle(self, now: float | None = None) -> int:
        """Free the contexts holding none of our tables and unused for `idle_keep_s`. Returns how
        many were freed.
        """
        now = time.monotonic() if now is None else now
        with self._lock:
            entries = list(self._contexts.items())
        freed = 0
        for key, ctx in entries:
            with ctx.lock:  # decided under the context's lock: a transaction may be picking it up
                if ctx.freed or ctx.tables or now - ctx.last_used < self.idle_keep_s:
                    continue
                self._release_held(ctx)
            self._forget(key, ctx)
            freed += 1
        return freed

    def _reap_forever(self) -> None:
        while not self._stop.wait(REAP_EVERY_S):
            try:
                self.forget_gone()
                self.forget_idle()
            except Exception:  # the reaper must outlive a failed stat or close
                pass

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            entries = list(self._contexts.values())
            self._contexts.clear()
        for ctx in entries:
            self._release(ctx)
        self.settle()
        self._closer.stop()


class _Closer:
    """Threads that run the slow closes, started before they are needed: a burst of releases at
    a deadline costs a queue put each, not a thread start.
    """

    def __init__(self, threads: int) -> None:
        self._queue: queue.SimpleQueue[tuple[Callable[..., object], tuple[object, ...]] | None] = queue.SimpleQueue()
        self._idle = threading.Condition()
        self._pending = 0
        self._threads = threads
        for i in range(threads):
            threading.Thread(target=self._loop, name=f"nft-free-{i}", daemon=True).start()

    def stop(self) -> None:
        """End the threads once the closes queued before are done."""
        for _ in range(self._threads):
            self._queue.put(None)

    def put(self, fn: Callable[..., object], *args: object) -> None:
        with self._idle:
            self._pending += 1
        self._queue.put((fn, args))

    def wait(self) -> None:
        with self._idle:
            self._idle.wait_for(lambda: self._pending == 0)

    def _loop(self) -> None:
        while (item := self._queue.get()) is not None:
            fn, args = item
            try:
                fn(*args)
            except Exception:  # a close that fails leaves nothing to retry
                pass
            finally:
                with self._idle:
                    self._pending -= 1
                    if not self._pending:
                        self._idle.notify_all()


def _raw_exists(sock: socket.socket, table: str) -> bool:
    try:
        return nfnl.table_exists(sock, table)
    except OSError as e:
        raise TransactionFailed(str(e)) from e


def _raw_delete(sock: socket.socket, table: str) -> None:
    try:
        nfnl.delete_table(sock, table)
    except OSError as e:
        raise TransactionFailed(str(e)) from e
