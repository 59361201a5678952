"""Time-skew backend: drives native/timeskew (ptrace + vDSO patch) and parses what it prints.

The only module of the injector that shifts a process's clocks. `plan` reads the bytes a patch
would replace without touching the process, so the caller can journal them first; `inject`
patches; `restore` writes the journaled bytes back. See native/README.md for how the patch works.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass

from chaosbus.injector.backends._glue.native import native_dir

HELPER_TIMEOUT_S = 10.0
EXIT_GONE = 3
EXIT_ALREADY = 4


class TimeSkewError(Exception):
    """The helper failed; `gone` when the process no longer exists (a recovered target)."""

    def __init__(self, message: str, *, gone: bool = False, already: bool = False) -> None:
        super().__init__(message)
        self.gone = gone
        self.already = already


@dataclass(frozen=True, slots=True)
class Patch:
    """One vDSO entry: its address in the target and the bytes a patch replaces there."""

    address: int
    original: bytes

    def arg(self) -> str:
        return f"{self.address:x}:{self.original.hex()}"


@dataclass(frozen=True, slots=True)
class Injected:
    patches: tuple[Patch, ...]
    payload_address: int
    stopped_us: int


def _run(args: list[str]) -> str:
    helper = native_dir() / "timeskew"
    try:
        proc = subprocess.run(
            [str(helper), *args],
            capture_output=True,
            text=True,
            timeout=HELPER_TIMEOUT_S,
            check=False,
        )
    except FileNotFoundError as e:
        raise TimeSkewError(f"{helper} is missing (built by `make install`)") from e
    except subprocess.TimeoutExpired as e:
        raise TimeSkewError(f"timeskew {args[0]} timed out after {HELPER_TIMEOUT_S}s") from e
    if proc.returncode != 0:
        raise TimeSkewError(
            proc.stderr.strip() or f"timeskew {args[0]} exited {proc.returncode}",
            gone=proc.returncode == EXIT_GONE,
            already=proc.returncode == EXIT_ALREADY,
        )
    return proc.stdout


def _parse(out: str) -> tuple[list[Patch], dict[str, int]]:
    patches: list[Patch] = []
    values: dict[str, int] = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "patch":
            patches.append(Patch(int(parts[1], 16), bytes.fromhex(parts[2])))
        elif len(parts) == 2 and parts[0] == "payload":
            values["payload"] = int(parts[1], 16)
        elif len(parts) == 2 and parts[0] == "stopped_us":
            values["stopped_us"] = int(parts[1])
    return patches, values


def plan(pid: int) -> tuple[Patch, ...]:
    """The entries `inject` would patch in `pid` and their current bytes (nothing is written)."""
    patches, _ = _parse(_run(["plan", str(int(pid))]))
    if not patches:
        raise TimeSkewError(f"timeskew found no vDSO entries in {pid}")
    return tuple(patches)


def inject(pid: int, offset_ns: int, clock_mask: int, deadline_ns: int) -> Injected:
    """Skew the selected clocks of every thread of `pid` by `offset_ns` until `deadline_ns`
    (CLOCK_REALTIME nanoseconds; 0 for none)."""
    payload = native_dir() / "skew_payload.bin"
    out = _run(
        ["inject", str(int(pid)), str(int(offset_ns)), str(int(clock_mask)), str(int(deadline_ns)), str(payload)]
    )
    patches, values = _parse(out)
    return Injected(tuple(patches), values.get("payload", 0), values.get("stopped_us", 0))


def restore(pid: int, patches: tuple[Patch, ...] | list[Patch]) -> int:
    """Write the original bytes back; returns how long the process was stopped (µs).

    Raises:
        TimeSkewError: with `gone` set when the process has exited (nothing left to restore).
    """
    _, values = _parse(_run(["restore", str(int(pid)), *(p.arg() for p in patches)]))
    return values.get("stopped_us", 0)


__all__ = [
    "Injected",
    "Patch",
    "TimeSkewError",
    "inject",
    "looks_patched",
    "native_dir",
    "plan",
    "read_bytes",
    "read_many",
    "restore",
    "start_ticks",
]


def looks_patched(original: bytes) -> bool:
    """Whether these entry bytes are a timeskew jump (movabs $addr, %rax; jmp *%rax)."""
    return len(original) == 12 and original[:2] == b"\x48\xb8" and original[10:] == b"\xff\xe0"


def start_ticks(pid: int) -> int | None:
    """The process's start time (clock ticks since boot, /proc/<pid>/stat field 22); None if gone.

    With the pid it names one process for good: a pid reused after an exit has another start time.
    """
    try:
        with open(f"/proc/{int(pid)}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may contain spaces and parentheses: fields resume after the last ')'.
    fields = stat[stat.rindex(b")") + 2 :].split()
    return int(fields[19])


def vdso_base(pid: int) -> int | None:
    """Where the vDSO is mapped in `pid` (/proc/<pid>/maps); None if gone or without one."""
    try:
        with open(f"/proc/{int(pid)}/maps") as f:
            for line in f:
                if line.rstrip().endswith("[vdso]"):
                    return int(line.split("-", 1)[0], 16)
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def read_bytes(pid: int, address: int, length: int) -> bytes:
    """The bytes at `address` in `pid`, read back from /proc/<pid>/mem."""
    return read_many(pid, [(address, length)])[0]


def read_many(pid: int, spans: list[tuple[int, int]]) -> list[bytes]:
    """The bytes of each (address, length) in `pid`, through one open of /proc/<pid>/mem."""
    with open(f"/proc/{int(pid)}/mem", "rb", buffering=0) as mem:
        return [os.pread(mem.fileno(), length, address) for address, length in spans]
