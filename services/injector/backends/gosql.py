"""Go `database/sql` error backend (GolangChaos): makes `(*DB).Query` and `(*DB).QueryContext`
of a running Go program return `(nil, error)`, through native/codepatch.

The only module of the injector that rewrites a Go program's code. Three steps, so the caller can
journal before anything changes:

- `plan(pid)` reads the program's ELF symbol table (through /proc/PID/exe), or its pclntab when
  it has none (`go build -ldflags=-s`), finds the functions and the itab of `*errors.errorString`
  as `error` (by symbol, or among the binary's itabs by its method), and reads each function's
  first bytes from the running process. Nothing is written.
- `inject(plan, deadline_s)` builds the payload (`build_payload`, pure) and has codepatch place
  it: each function's first 14 bytes become `jmp *0(%rip)` to a stub in the zero padding after
  the binary's headers, which the loader maps executable (Go's linker leaves about 2 KiB there),
  else in a fresh page the target maps (one remote mmap). The stub asks the kernel for the time
  (`time(2)`; the registers the syscall clobbers are saved on the goroutine stack, within the
  space Go guarantees below any function's entry) and,
  before the deadline, returns `(nil, &errorString{MESSAGE})` in Go's register ABI (ABIInternal
  on amd64: results in RAX, then RBX:RCX for the interface); from the deadline on it runs the
  function's relocated prologue and jumps back into it, so queries work again even with no
  chaosbus process left.
- `restore(pid, sites)` writes the original bytes back (codepatch restore). The payload stays (a
  goroutine may be inside it at that moment) and is never entered again, until the next inject
  writes it again at the same place.

The pure parts: goelf.py (the binary) and gostub.py (the payload).
x86-64, Go 1.18 on for binaries without a symbol table; other programs are refused with the reason.
"""

from __future__ import annotations

import mmap
import os
import struct
import subprocess
import threading
from dataclasses import dataclass

from chaosbus.injector.backends._glue.native import native_dir
from chaosbus.injector.backends.goelf import ElfInfo, NotElf, parse_elf
from chaosbus.injector.backends.gostub import (
    JUMP_LEN,
    MAGIC,
    MESSAGE,
    NO_DEADLINE,
    UnknownPrologue,
    build_payload,
    looks_patched,
    relocate_prologue,
)

FUNCTIONS = ("database/sql.(*DB).QueryContext", "database/sql.(*DB).Query")
# The itab that makes *errors.errorString an `error` (errors.New's result); Go 1.20 renamed the
# symbol prefix from "go." to "go:".
ITABS = ("go:itab.*errors.errorString,error", "go.itab.*errors.errorString,error")
ERROR_METHOD = "errors.(*errorString).Error"
PROLOGUE_READ = 32
HELPER_TIMEOUT_S = 10.0
EXIT_GONE = 3
EXIT_CHANGED = 4


class GoSqlError(Exception):
    """The backend failed; `gone` when the process no longer exists, `unsupported` when it is not a
    Go program with database/sql (nothing to patch, a retry cannot help), `changed` when the code
    is not what was planned (already patched)."""

    def __init__(self, message: str, *, gone: bool = False, unsupported: bool = False, changed: bool = False) -> None:
        super().__init__(message)
        self.gone = gone
        self.unsupported = unsupported
        self.changed = changed


# --- the running process ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Site:
    """One function to redirect: its name, runtime address, the original bytes the jump replaces
    (from the binary's file) and the first bytes of its prologue, for relocation."""

    name: str
    address: int
    original: bytes
    prologue: bytes


@dataclass(frozen=True, slots=True)
class Plan:
    pid: int
    exe: str
    itab: int
    sites: tuple[Site, ...]
    already: bool = False  # the functions are redirected already (another experiment's patch)
    cave: tuple[int, int] | None = None  # (address, length) the payload may go to instead of a new page


MAX_CACHED = 256


class ElfCache:
    """Parsed binaries by file (device, inode, mtime): a node's pods run few distinct programs, and
    the sweeper looks at every process of a namespace. Each `Backends` keeps one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_file: dict[tuple[int, int, int], ElfInfo] = {}

    def get(self, key: tuple[int, int, int]) -> ElfInfo | None:
        with self._lock:
            return self._by_file.get(key)

    def put(self, key: tuple[int, int, int], info: ElfInfo) -> None:
        with self._lock:
            if len(self._by_file) >= MAX_CACHED:
                self._by_file.clear()
            self._by_file[key] = info


def elf_of(pid: int, cache: ElfCache | None = None) -> tuple[ElfInfo, mmap.mmap, str]:
    """The process's binary: parsed (through `cache`, when given), mapped (the caller closes it)
    and its path as the process sees it.

    Raises:
        GoSqlError: gone, or not a readable ELF file.
    """
    exe = f"/proc/{int(pid)}/exe"
    try:
        path = os.readlink(exe)
        with open(exe, "rb") as f:
            st = os.fstat(f.fileno())
            if st.st_size < 64:
                raise GoSqlError(f"{path} is not an ELF executable", unsupported=True)
            data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except (FileNotFoundError, ProcessLookupError) as e:
        raise GoSqlError(f"process {pid} is gone", gone=True) from e
    except PermissionError as e:
        raise GoSqlError(f"cannot read {exe}: {e}") from e
    key = (st.st_dev, st.st_ino, st.st_mtime_ns)
    info = cache.get(key) if cache is not None else None
    if info is None:
        try:
            info = parse_elf(data, (*FUNCTIONS, *ITABS, ERROR_METHOD))
        except NotElf as e:
            data.close()
            raise GoSqlError(f"{path} is {e}", unsupported=True) from e
        except (struct.error, IndexError, ValueError) as e:
            data.close()
            raise GoSqlError(f"{path}: unreadable ELF file ({e})", unsupported=True) from e
        if cache is not None:
            cache.put(key, info)
    return info, data, path


def load_bias(pid: int, info: ElfInfo) -> int:
    """How far the process's binary is mapped from its link-time addresses (0 unless PIE)."""
    if info.e_type != 3:
        return 0
    inode = os.stat(f"/proc/{int(pid)}/exe").st_ino
    with open(f"/proc/{int(pid)}/maps") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 6 and int(parts[4]) == inode and int(parts[2], 16) == 0:
                return int(parts[0].split("-", 1)[0], 16) - info.first_load
    raise GoSqlError(f"process {pid}: its binary is not in its memory map")


def read_bytes(pid: int, address: int, length: int) -> bytes:
    """The bytes at `address` in `pid`, read from /proc/<pid>/mem."""
    with open(f"/proc/{int(pid)}/mem", "rb", buffering=0) as mem:
        mem.seek(address)
        return mem.read(length)


def _itab_in_memory(pid: int, info: ElfInfo, bias: int) -> int | None:
    """The itab of *errors.errorString as error without a symbol table (`-ldflags=-s`): of the itabs
    the binary's .itablink lists (read from memory, where a PIE's are relocated), the one whose
    first method is errors.(*errorString).Error. An itab is (interface type, type, hash and padding,
    methods...), so that method's address is its fourth word."""
    method = info.symbols.get(ERROR_METHOD)
    if info.itablink is None or method is None:
        return None
    at, size = info.itablink
    table = read_bytes(pid, at + bias, size)
    for (itab,) in struct.iter_unpack("<Q", table[: size - size % 8]):
        if struct.unpack("<Q", read_bytes(pid, itab + 24, 8))[0] == method + bias:
            return int(itab)
    return None


def plan(pid: int, cache: ElfCache | None = None) -> Plan:
    """What `inject` would change in `pid` (nothing is written); `cache`: parsed binaries to reuse.

    Raises:
        GoSqlError: `unsupported` naming why (not Go, no database/sql, nothing naming its functions),
            `gone`.
    """
    info, data, path = elf_of(pid, cache)
    try:
        return _plan(pid, info, data, path)
    finally:
        data.close()


def _plan(pid: int, info: ElfInfo, data: mmap.mmap, path: str) -> Plan:
    if not info.go:
        raise GoSqlError(f"{path} is not a Go program", unsupported=True)
    found = [name for name in FUNCTIONS if name in info.symbols]
    if not found:
        if ERROR_METHOD not in info.symbols:  # every Go program has it, unless nothing names functions
            raise GoSqlError(
                f"{path} is a Go program without a symbol table or a pclntab this patch can read", unsupported=True
            )
        raise GoSqlError(f"{path} is a Go program without database/sql", unsupported=True)
    bias = load_bias(pid, info)
    itab = next((info.symbols[n] + bias for n in ITABS if n in info.symbols), None)
    if itab is None:
        itab = _itab_in_memory(pid, info, bias)
    if itab is None:
        raise GoSqlError(f"{path}: no itab of *errors.errorString as error", unsupported=True)
    sites = []
    already = False
    try:
        for name in found:
            vaddr = info.symbols[name]
            off = info.file_offset(vaddr)
            if off is None:
                raise GoSqlError(f"{path}: {name} is outside its loadable segments", unsupported=True)
            from_file = data[off : off + PROLOGUE_READ]
            now = read_bytes(pid, vaddr + bias, JUMP_LEN)
            if now != from_file[:JUMP_LEN]:
                if not looks_patched(now):
                    raise GoSqlError(f"{path}: {name} in memory differs from the binary", unsupported=True)
                already = True
            try:
                relocate_prologue(vaddr + bias, from_file)  # refuse now what inject could not relocate
            except UnknownPrologue as e:
                raise GoSqlError(f"{path}: {name}: {e}", unsupported=True) from e
            sites.append(Site(name, vaddr + bias, from_file[:JUMP_LEN], from_file))
    except (FileNotFoundError, ProcessLookupError) as e:
        raise GoSqlError(f"process {pid} is gone", gone=True) from e
    cave = None
    if info.cave is not None:
        at, length = info.cave[0] + bias, info.cave[1]
        now = read_bytes(pid, at, length)
        if not any(now) or now.startswith(MAGIC):  # untouched, or an earlier payload of ours
            cave = (at, length)
    return Plan(pid, path, itab, tuple(sites), already, cave)


def _run(args: list[str]) -> str:
    helper = native_dir() / "codepatch"
    try:
        proc = subprocess.run(
            [str(helper), *args], capture_output=True, text=True, timeout=HELPER_TIMEOUT_S, check=False
        )
    except FileNotFoundError as e:
        raise GoSqlError(f"{helper} is missing (built by `make install`)") from e
    except subprocess.TimeoutExpired as e:
        raise GoSqlError(f"codepatch {args[0]} timed out after {HELPER_TIMEOUT_S}s") from e
    if proc.returncode != 0:
        raise GoSqlError(
            proc.stderr.strip() or f"codepatch {args[0]} exited {proc.returncode}",
            gone=proc.returncode == EXIT_GONE,
            changed=proc.returncode == EXIT_CHANGED,
        )
    return proc.stdout


def _values(out: str) -> dict[str, int]:
    values = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "page":
            values["page"] = int(parts[1], 16)
        elif len(parts) == 2 and parts[0] == "stopped_us":
            values["stopped_us"] = int(parts[1])
    return values


@dataclass(frozen=True, slots=True)
class Injected:
    page: int
    stopped_us: int


def inject(p: Plan, deadline_s: int = NO_DEADLINE, message: str = MESSAGE) -> Injected:
    """Redirect the plan's functions until `deadline_s` (unix seconds).

    Raises:
        GoSqlError: `changed` when the code is no longer what `plan` read (already patched).
    """
    try:
        payload = build_payload([(s.address, s.prologue) for s in p.sites], p.itab, deadline_s, message)
    except UnknownPrologue as e:
        raise GoSqlError(f"{p.exe}: {e}", unsupported=True) from e
    sites = [f"{s.address:x}:{s.original.hex()}:{entry}" for s, entry in zip(p.sites, payload.entries, strict=True)]
    at = f"{p.cave[0]:x}" if p.cave is not None and len(payload.code) <= p.cave[1] else "-"
    values = _values(
        _run(["inject", str(p.pid), payload.code.hex(), ",".join(map(str, payload.relocs)) or "-", at, *sites])
    )
    return Injected(values.get("page", 0), values.get("stopped_us", 0))


def restore(pid: int, sites: list[tuple[int, bytes]]) -> int:
    """Write the original bytes back at each (address, original); returns how long the process
    was stopped (µs).

    Raises:
        GoSqlError: with `gone` set when the process has exited (nothing left to restore).
    """
    values = _values(_run(["restore", str(int(pid)), *(f"{a:x}:{o.hex()}" for a, o in sites)]))
    return values.get("stopped_us", 0)


__all__ = [
    "MESSAGE",
    "NO_DEADLINE",
    "ElfCache",
    "GoSqlError",
    "Injected",
    "Plan",
    "Site",
    "build_payload",
    "elf_of",
    "inject",
    "looks_patched",
    "plan",
    "read_bytes",
    "restore",
]
