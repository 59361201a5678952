"""`process://` container IDs: a local process pod's container is a process, named by its pid and,
since a pid is reused once its process is gone, by the process's start time too:
`process://<pid>@<start>` (start = field 22 of /proc/<pid>/stat, clock ticks since boot). A bare
`process://<pid>` (older pods, hand-written tests) is still accepted without that check.
"""

from __future__ import annotations

from dataclasses import dataclass

SCHEME = "process://"
# A process pod's supervisor starts the pod's process with its Pod's uid and namespace in these
# environment variables, so an injector can tell which pod a pid belongs to from the process itself.
POD_UID_ENV = "CHAOSBUS_POD_UID"
POD_NAMESPACE_ENV = "CHAOSBUS_POD_NAMESPACE"


@dataclass(frozen=True)
class ProcessId:
    pid: int
    start: int | None = None  # None: not recorded, so a reused pid cannot be told apart

    def __str__(self) -> str:
        return f"{SCHEME}{self.pid}" if self.start is None else f"{SCHEME}{self.pid}@{self.start}"


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot; None if it does not exist."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may hold spaces and parentheses: fields are counted after its last ')'.
    fields = stat[stat.rfind(b")") + 2 :].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def of_process(pid: int) -> ProcessId:
    """The ID of a running process, with its start time."""
    return ProcessId(pid, start_time(pid))


def parse(container_id: str) -> ProcessId | None:
    """The ProcessId in `process://<pid>[@<start>]`; None if it is not one (another scheme, malformed)."""
    if not container_id.startswith(SCHEME):
        return None
    pid_text, sep, start_text = container_id[len(SCHEME) :].partition("@")
    if not pid_text.isdigit() or (sep and not start_text.isdigit()):
        return None
    return ProcessId(int(pid_text), int(start_text) if sep else None)


def is_running(ident: ProcessId) -> bool:
    """The process named by `ident` runs: its pid exists and, when recorded, started when it says."""
    now = start_time(ident.pid)
    return now is not None and (ident.start is None or ident.start == now)
