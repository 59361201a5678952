"""Measured what-ifs (`python -m bench --what-if`): the same services, started through this module,
which patches in the fixes the benchmark proposes before handing over to the service's own main.
The services' files stay untouched; the figures of such a run show what each fix would buy, and
are labelled as a what-if in the output and the JSON. Never the default.

injector:
  * nft through libnftables with one context per target netns (created on a thread inside it, so
    its socket stays there), under a lock per context: no `nsenter`/`nft` process per operation.
    libnftables 1.0.6 select()s on its socket and aborts on an fd >= 1024, so contexts are kept
    for at most `MAX_CONTEXTS` netns (least recently used closed first).
  * `runtime._named_netns` answers from a (device, inode) -> /var/run/netns path map, rebuilt only
    on a miss, instead of stat()ing every named netns for every target.
scheduler:
  * `plan._side_ips` computed once per command batch (the same `everyone` list), not per target.

    python -m bench.whatif injector|scheduler ARGS...   (what the harness runs with --what-if)
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
from collections import OrderedDict
from typing import Any

MAX_CONTEXTS = 512


class _Contexts:
    def __init__(self) -> None:
        lib = ctypes.CDLL("libnftables.so.1", use_errno=True)
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
        self.lib = lib
        self.lock = threading.Lock()
        self.ctx: OrderedDict[tuple[str, int], tuple[int, threading.Lock]] = OrderedDict()

    def _new(self) -> int:
        ctx = int(self.lib.nft_ctx_new(0))
        self.lib.nft_ctx_buffer_error(ctx)
        self.lib.nft_ctx_buffer_output(ctx)
        self.lib.nft_run_cmd_from_buffer(ctx, b"list tables")  # the socket opens here, in the netns
        return ctx

    def get(self, path: str) -> tuple[int, threading.Lock]:
        from chaosbus.common import netns as nsu

        key = (path, os.stat(path).st_ino)
        with self.lock:
            found = self.ctx.get(key)
            if found is not None:
                self.ctx.move_to_end(key)
                return found
        ctx = nsu.run_in_netns(path, self._new)
        with self.lock:
            self.ctx[key] = found = (ctx, threading.Lock())
            while len(self.ctx) > MAX_CONTEXTS:
                _, (old, old_lock) = self.ctx.popitem(last=False)
                with old_lock:
                    self.lib.nft_ctx_free(old)
        return found

    def run(self, path: str, script: str) -> None:
        from chaosbus.injector.backends import nft

        ctx, lock = self.get(path)
        with lock:
            if self.lib.nft_run_cmd_from_buffer(ctx, script.encode()) != 0:
                raise nft.NftError(f"nft failed in {path}: {self.lib.nft_ctx_get_error_buffer(ctx)!r}")


def patch_injector() -> None:
    from chaosbus.common.netns import NETNS_RUN_DIR
    from chaosbus.injector import runtime
    from chaosbus.injector.backends import nft

    contexts = _Contexts()
    original = nft._nft

    def _nft(netns_path: str, args: list[str], stdin: str) -> str:
        if args != ["-f", "-"]:
            return str(original(netns_path, args, stdin))
        if not os.path.exists(netns_path):
            raise nft.NetnsGone(f"network namespace {netns_path} is gone")
        try:
            contexts.run(netns_path, stdin)
        except FileNotFoundError as e:
            raise nft.NetnsGone(f"network namespace {netns_path} is gone") from e
        return ""

    names: dict[tuple[int, int], str] = {}
    names_lock = threading.Lock()

    def _named_netns(proc_netns: str) -> str | None:
        try:
            want = os.stat(proc_netns)
        except FileNotFoundError:
            return None
        key = (want.st_dev, want.st_ino)
        with names_lock:
            path = names.get(key)
            if path is not None:
                try:
                    st = os.stat(path)
                    if (st.st_dev, st.st_ino) == key:
                        return path
                except FileNotFoundError:
                    pass
            names.clear()
            for name in sorted(os.listdir(NETNS_RUN_DIR)) if os.path.isdir(NETNS_RUN_DIR) else []:
                full = os.path.join(NETNS_RUN_DIR, name)
                try:
                    st = os.stat(full)
                except FileNotFoundError:
                    continue
                names.setdefault((st.st_dev, st.st_ino), full)
            return names.get(key)

    nft._nft = _nft
    runtime._named_netns = _named_netns


def patch_scheduler() -> None:
    from chaosbus.scheduler import plan

    original = plan._side_ips
    last: list[Any] = [None, None]  # (the `everyone` list, its result); holding it keeps its id unique

    def _side_ips(everyone: list[Any]) -> dict[str, list[str]]:
        if last[0] is not everyone:
            last[0], last[1] = everyone, original(everyone)
        return last[1]  # type: ignore[no-any-return]

    plan._side_ips = _side_ips


def main() -> None:
    service = sys.argv[1]
    sys.argv = [f"chaosbus-{service}", *sys.argv[2:]]
    if service == "injector":
        patch_injector()
        from chaosbus.injector.__main__ import main as run
    elif service == "scheduler":
        patch_scheduler()
        from chaosbus.scheduler.__main__ import main as run
    else:
        raise SystemExit(f"no what-if for {service}")
    run()


if __name__ == "__main__":
    main()
