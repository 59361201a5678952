"""IOChaos backend: drives native/iofs, the FUSE filesystem mounted over a volume inside a
target's mount namespace, and keeps its rules file.

One filesystem serves one volume of one container and applies the rules of every experiment on
that volume, one line each in a file of `rules_dir()`; iofs re-reads
the file when asked on its control socket (`reload`, answered once the rules are in force), on
SIGUSR1, and whenever it changes. See native/README.md for the rule format and how the
mount is made.
"""

from __future__ import annotations

import hashlib
import os
import select
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from chaosbus.common import config, settings
from chaosbus.common.messages import IO
from chaosbus.injector.backends._glue.native import helper

FSTYPE = "fuse.chaosbus-iofs"
START_TIMEOUT_S = 10.0
UMOUNT_TIMEOUT_S = 10.0
RELOAD_TIMEOUT_S = 10.0
EXIT_ALREADY = 3
EXIT_GONE = 3  # fdswitch: the process is gone
KINDS = {"latency", "fault", "mistake", "attrOverride"}


class IofsError(Exception):
    """iofs could not do it; `already`: an iofs is mounted there already."""

    def __init__(self, message: str, *, already: bool = False) -> None:
        super().__init__(message)
        self.already = already


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks (field 22 of /proc/PID/stat); None: no such process."""
    try:
        with open(f"/proc/{int(pid)}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return int(data[data.rindex(b")") + 2 :].split()[19])


@dataclass(frozen=True)
class Volume:
    """One volume of one target process (pid and start time: a recycled pid is another target)."""

    pid: int
    start: int
    path: str

    @property
    def rules(self) -> Path:
        digest = hashlib.sha256(self.path.encode()).hexdigest()[:16]
        return rules_dir() / f"{self.pid}-{self.start}-{digest}.rules"

    @property
    def server_file(self) -> Path:
        return self.rules.with_suffix(".server")

    @property
    def control(self) -> Path:
        """The server's control socket (see `reload`)."""
        return self.rules.with_suffix(".sock")

    def target_alive(self) -> bool:
        return start_ticks(self.pid) == self.start


@dataclass(frozen=True)
class StateFile:
    """A file of `rules_dir()` as its name tells: a volume's rules, server record and control
    socket share the stem `<target pid>-<start>-<path digest>`; a rules file being written or a
    control socket not yet serving is `.<its name>.<writer pid>.<thread>` until renamed."""

    path: Path
    stem: str
    pid: int  # the target's
    start: int
    writer: int | None  # the process writing it (a temporary file); None: the volume's own file

    @property
    def server_file(self) -> Path:
        return self.path.with_name(f"{self.stem}.server")

    @property
    def rules(self) -> Path:
        return self.path.with_name(f"{self.stem}.rules")


def state_file(path: Path) -> StateFile | None:
    """What the file at `path` is; None: no name iofs's backend gives."""
    name, writer = path.name, None
    if name.startswith("."):
        parts = name[1:].rsplit(".", 2)
        if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
            return None
        name, writer = parts[0], int(parts[1])
    stem, _, suffix = name.partition(".")
    fields = stem.split("-")
    if suffix not in ("rules", "server", "sock") or len(fields) != 3 or not all(f.isdigit() for f in fields[:2]):
        return None
    return StateFile(path, stem, int(fields[0]), int(fields[1]), writer)


class Volumes:
    """One injector's hold on the volumes it serves: a lock per volume (by its rules file), held
    while its rules and server change, and the servers a watcher thread follows. Each `Backends`
    keeps one."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._watched: set[tuple[int, int]] = set()  # (server pid, start)

    def lock(self, vol: Volume) -> threading.Lock:
        return self.lock_rules(vol.rules)

    def lock_rules(self, rules: Path) -> threading.Lock:
        """The lock of the volume whose rules file is `rules`."""
        with self._guard:
            return self._locks.setdefault(str(rules), threading.Lock())

    def watch(self, server: tuple[int, int]) -> bool:
        """Mark the server as watched; False when it already was."""
        with self._guard:
            if server in self._watched:
                return False
            self._watched.add(server)
            return True

    def unwatch(self, server: tuple[int, int]) -> None:
        with self._guard:
            self._watched.discard(server)


def rules_dir(*, create: bool = True) -> Path:
    """Where rules files and server records live: `$CHAOSBUS_IOCHAOS_DIR`, else `<state dir>/iochaos`
    (either must outlive the injector: a restarted one finds its servers there); `create` False:
    as it is (a sweep does not make it)."""
    env = settings.current().iochaos_dir
    d = Path(env) if env else config.state_dir() / "iochaos"
    if create:
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
    return d


def rule_line(spec: IO, deadline_ns: int) -> str:
    """The rule of `spec` as native/iofs reads it (the path glob last; "-": every path)."""
    head = f"{deadline_ns} {spec.methods} {spec.percent}"
    glob = spec.path or "-"
    if spec.action == "latency":
        return f"latency {head} {spec.delay_ns} {glob}"
    if spec.action == "fault":
        return f"fault {head} {spec.errno} {glob}"
    if spec.action == "mistake":
        return f"mistake {head} {spec.mistake_filling} {spec.mistake_max_occurrences} {spec.mistake_max_length} {glob}"
    values = list(spec.attr_values) + [0] * (15 - len(spec.attr_values))
    return f"attr {head} {spec.attr_mask} {' '.join(str(int(v)) for v in values[:15])} {glob}"


def read_rules(path: Path) -> dict[str, str]:
    """key -> rule line, as `write_rules` left them ({} when there is no file)."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return {}
    out: dict[str, str] = {}
    for tag, line in zip(lines[::2], lines[1::2], strict=False):
        if tag.startswith("# "):
            out[tag[2:]] = line
    return out


def write_rules(path: Path, rules: dict[str, str]) -> None:
    """Replace the file in one rename (iofs never reads half a file)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    tmp.write_text("".join(f"# {k}\n{line}\n" for k, line in rules.items()))
    os.replace(tmp, path)


def mount_points(mountinfo: list[str]) -> list[str]:
    """The mount points of the iofs mounts in these /proc/<pid>/mountinfo lines (one per mount)."""
    out = []
    for line in mountinfo:
        left, _, right = line.partition(" - ")
        fields = left.split()
        if len(fields) > 4 and right.split()[:1] == [FSTYPE]:
            out.append(_unescape(fields[4]))
    return out


def mount_ids(pid: int, path: str) -> list[int]:
    """The mount ids of the iofs mounts at `path` in process `pid`'s mount namespace."""
    try:
        with open(f"/proc/{int(pid)}/mountinfo") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    return [int(line.split()[0]) for line in lines if mount_points([line]) == [path]]


def fdswitch(pid: int, path: str, from_mounts: list[int] | None = None) -> int:
    """Move the files that process `pid` and its descendants have open under `path` onto what is
    mounted there now (native/fdswitch, one run for the whole tree, and none when a look at the
    tree's open files finds nothing to move; a process with nothing to move is never stopped);
    with `from_mounts`, their files open on those mounts (also ones already detached). How many
    moved; a target that is gone moved none.

    Raises:
        IofsError: a file could not be moved (the reasons from fdswitch; the others were moved).
    """
    if from_mounts == [] or not _tree_has_files(pid, path, from_mounts):
        return 0  # nothing to move: no helper started, no process stopped
    argv = [helper("fdswitch"), str(pid), path]
    if from_mounts is not None:
        argv += ["--from-mnt", ",".join(str(m) for m in from_mounts)]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=UMOUNT_TIMEOUT_S, check=False)
    except (FileNotFoundError, subprocess.TimeoutExpired) as e:
        raise IofsError(str(e)) from None
    if proc.returncode == EXIT_GONE:
        return 0
    if proc.returncode != 0:
        raise IofsError(proc.stderr.strip() or f"fdswitch exited with status {proc.returncode}")
    return int(proc.stdout.strip() or 0)


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants, as /proc/P/task/T/children lists them (gone ones left out)."""
    out, i = [pid], 0
    while i < len(out):
        try:
            tids = os.listdir(f"/proc/{out[i]}/task")
        except OSError:
            tids = []
        for tid in tids:
            try:
                with open(f"/proc/{out[i]}/task/{tid}/children") as f:
                    out += [int(c) for c in f.read().split() if int(c) not in out]
            except OSError:
                continue
        i += 1
    return out


def _tree_has_files(pid: int, path: str, mounts: list[int] | None) -> bool:
    """Whether a process of the tree may have a file for fdswitch: one open under `path`, or with
    `mounts`, one open on them (a file of a detached mount shows a path relative to its root)."""
    under = path.rstrip("/") + "/"
    wanted = {f"mnt_id:\t{m}\n" for m in mounts or []}
    for p in process_tree(pid):
        try:
            names = os.listdir(f"/proc/{p}/fd")
        except OSError:
            continue
        for name in names:
            try:
                target = os.readlink(f"/proc/{p}/fd/{name}")
                if mounts is None:
                    if target == path or target.startswith(under):
                        return True
                elif target.startswith("/"):
                    with open(f"/proc/{p}/fdinfo/{name}") as f:
                        if any(w in f.read() for w in wanted):
                            return True
            except OSError:
                continue
    return False


def mounts_at(pid: int, path: str) -> int:
    """How many iofs mounts sit at `path` in the mount namespace of process `pid` (0 when it is gone)."""
    try:
        with open(f"/proc/{int(pid)}/mountinfo") as f:
            lines = f.read().splitlines()
    except OSError:
        return 0
    return mount_points(lines).count(path)


def _unescape(s: str) -> str:
    return s.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def _unix_path(path: Path, dir_fd: int) -> str:
    """`path` as a unix socket address short enough for any state directory (a socket's path is
    limited to 107 bytes): through the directory's descriptor."""
    return f"/proc/self/fd/{dir_fd}/{path.name}"


def reload(vol: Volume) -> int | None:
    """Have the volume's server re-read its rules file now; returns once they are in force (and the
    file attributes the kernel held that they may change are dropped): how many rules it has.
    None: the server has no control socket (it is gone, or predates them); it still reads a changed
    file within 200 ms, and on SIGUSR1.

    Raises:
        IofsError: the server did not answer in time, or could not read the file.
    """
    dir_fd = os.open(vol.control.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(RELOAD_TIMEOUT_S)
            try:
                s.connect(_unix_path(vol.control, dir_fd))
            except (FileNotFoundError, ConnectionRefusedError):
                return None
            try:
                s.sendall(b"reload\n")
                reply = s.recv(64).decode(errors="replace").split()
            except OSError as e:
                raise IofsError(f"iofs did not reload its rules: {e}") from None
    finally:
        os.close(dir_fd)
    if reply[:1] != ["ok"] or len(reply) != 2:
        raise IofsError(f"iofs could not reload its rules: {' '.join(reply) or 'no answer'}")
    return int(reply[1])


def start(vol: Volume, passthrough: bool = True) -> tuple[subprocess.Popen[bytes], bool]:
    """Mount iofs over the volume and serve it (the server runs on in its own session); whether
    the kernel's FUSE passthrough serves the files no data rule matches (never asked for with
    `passthrough` False: iofs then serves them as on a kernel without it). Its control socket
    (`reload`) takes the place of a dead server's once it serves.

    Raises:
        IofsError: not mounted (the reason from iofs), `already` if an iofs is mounted there.
    """
    r, w = os.pipe()
    dir_fd = os.open(vol.control.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    # Bound under a name of its own until the server serves: one that finds the volume mounted
    # already must not take the live server's place.
    pending = vol.control.with_name(f".{vol.control.name}.{os.getpid()}.{threading.get_ident()}")
    control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        pending.unlink(missing_ok=True)
        control.bind(_unix_path(pending, dir_fd))
        control.listen(16)
        argv = [
            helper("iofs"),
            "mount",
            "--pid",
            str(vol.pid),
            "--path",
            vol.path,
            "--rules",
            str(vol.rules),
            "--status-fd",
            str(w),
            "--control-fd",
            str(control.fileno()),
        ] + ([] if passthrough else ["--passthrough", "no"])
        proc = subprocess.Popen(
            argv,
            pass_fds=(w, control.fileno()),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        os.close(w)
        w = -1
        status = _read_status(r, START_TIMEOUT_S)
        if status in ("ok", "ok passthrough"):
            pending.rename(vol.control)
    except FileNotFoundError as e:
        raise IofsError(str(e)) from None
    finally:
        control.close()
        pending.unlink(missing_ok=True)
        os.close(dir_fd)
        os.close(r)
        if w >= 0:
            os.close(w)
    if status not in ("ok", "ok passthrough"):
        try:
            code = proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        raise IofsError(status or f"iofs exited with status {code}", already=code == EXIT_ALREADY)
    return proc, status == "ok passthrough"


def _read_status(fd: int, timeout: float) -> str:
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            data = os.read(fd, 4096)
            if not data:
                break
            chunks.append(data)
            if (got := b"".join(chunks).strip()) in (b"ok", b"ok passthrough"):
                return got.decode()
    else:
        return f"iofs did not mount within {timeout:.0f}s"
    return b"".join(chunks).decode(errors="replace").strip()


def umount(vol: Volume) -> int:
    """Detach every iofs mount at the volume in the target's mount namespace (a target that is
    gone has none); how many were detached.

    Raises:
        IofsError: one could not be detached.
    """
    if not vol.target_alive():
        return 0
    try:
        proc = subprocess.run(
            [helper("iofs"), "umount", "--pid", str(vol.pid), "--path", vol.path],
            capture_output=True,
            text=True,
            timeout=UMOUNT_TIMEOUT_S,
            check=False,
        )
    except (FileNotFoundError, subprocess.TimeoutExpired) as e:
        raise IofsError(str(e)) from None
    if proc.returncode != 0:
        raise IofsError(proc.stderr.strip() or f"iofs umount exited with status {proc.returncode}")
    return int(proc.stdout.strip() or 0)
