"""Start a program inside a cgroup and, optionally, new or existing PID and mount namespaces:
local mode's container runtime shim, and how a fault runs a tool inside its target.

Run as `python -S <this file> [options] -- argv...` (standard library only, so it starts fast and
needs no installed package). A process joins cgroups and namespaces itself, before it execs, so
nothing the program forks can escape them (moving a running process afterwards would race with
its first fork, and a `preexec_fn` is unsafe in a threaded parent such as the supervisor).

Options:
  --cgroup DIR       join this cgroup directory (repeat once per hierarchy)
  --new-pidns        the program is PID 1 of a new PID namespace
  --new-mountns      ... and of a new mount namespace with its own /proc (needs --new-pidns)
  --volume HOST:PATH bind-mount directory HOST over PATH in that mount namespace (repeatable; needs
                     --new-mountns; PATH is created when missing, as a kubelet creates a mount point)
  --pidns PATH       join an existing PID namespace (/proc/<pid>/ns/pid)
  --oom-score-adj N  set the program's oom_score_adj
  --status-fd FD     setup errors are written here; a clean EOF (the exec closed it) means started

With a PID namespace this process stays as the namespace's parent: it forwards SIGTERM/SIGINT,
dies with the same status, and its child dies with it (PR_SET_PDEATHSIG); without one it becomes
the program (exec), so its pid is the program's.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWPID = 0x20000000
PR_SET_PDEATHSIG = 1
MS_REC, MS_PRIVATE, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_BIND = 0x4000, 0x40000, 0x2, 0x4, 0x8, 0x1000
SETUP_FAILED = 127

# The running interpreter's own symbols include libc's (ctypes.util.find_library would spawn ldconfig:
# a child the supervisor could mistake for the pod's command).
_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def parse(args: list[str]) -> tuple[dict[str, list[str]], list[str]]:
    """(options, argv) from this helper's command line.

    Raises:
        ValueError: an unknown option, an option without its value, or no program.
    """
    opts: dict[str, list[str]] = {}
    flags = {"--new-pidns", "--new-mountns"}
    valued = {"--cgroup", "--pidns", "--oom-score-adj", "--status-fd", "--volume"}
    i = 0
    while i < len(args) and args[i] != "--":
        a = args[i]
        if a in flags:
            opts.setdefault(a, []).append("")
            i += 1
        elif a in valued and i + 1 < len(args):
            opts.setdefault(a, []).append(args[i + 1])
            i += 2
        else:
            raise ValueError(f"unknown option or missing value: {a}")
    argv = args[i + 1 :]
    if not argv:
        raise ValueError("no program after --")
    if "--volume" in opts and "--new-mountns" not in opts:
        raise ValueError("--volume needs --new-mountns (a volume is mounted in the pod's own mount namespace)")
    for v in opts.get("--volume", []):
        split_volume(v)
    return opts, argv


def split_volume(volume: str) -> tuple[str, str]:
    """(host directory, path in the pod) of a `HOST:PATH` volume, both absolute.

    Raises:
        ValueError: not two absolute paths separated by ':'.
    """
    host, sep, path = volume.partition(":")
    if not sep or not os.path.isabs(host) or not os.path.isabs(path):
        raise ValueError(f"volume {volume!r}: expected HOST:PATH, two absolute paths")
    return os.path.normpath(host), os.path.normpath(path)


def _setup(opts: dict[str, list[str]]) -> None:
    for d in opts.get("--cgroup", []):
        with open(os.path.join(d, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))
    for value in opts.get("--oom-score-adj", []):
        try:
            with open("/proc/self/oom_score_adj", "w") as f:
                f.write(value)
        except OSError as e:
            hint = " (lowering it needs CAP_SYS_RESOURCE)" if isinstance(e, PermissionError) else ""
            raise OSError(e.errno, f"oom_score_adj {value} refused by the kernel: {e.strerror}{hint}") from None
    for path in opts.get("--pidns", []):
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            _check(_libc.setns(fd, CLONE_NEWPID), f"entering PID namespace {path}")
        finally:
            os.close(fd)
    flags = (CLONE_NEWPID if "--new-pidns" in opts else 0) | (CLONE_NEWNS if "--new-mountns" in opts else 0)
    if flags:
        _check(_libc.unshare(flags), "unshare")
    if "--new-mountns" in opts:
        # Mount events stay inside the pod; its own /proc is mounted once it is PID 1 (in the child).
        _check(_libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "making / private")
        for volume in opts.get("--volume", []):
            host, path = split_volume(volume)
            if not os.path.isdir(host):
                raise OSError(2, f"volume {volume}: {host} is not a directory")
            os.makedirs(path, exist_ok=True)
            _check(_libc.mount(host.encode(), path.encode(), None, MS_BIND | MS_REC, None), f"mounting volume {volume}")


def _child(opts: dict[str, list[str]], argv: list[str]) -> None:
    _check(_libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl")
    if "--new-mountns" in opts:
        _check(_libc.mount(b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None), "mounting /proc")
    os.execvp(argv[0], argv)


def main(args: list[str]) -> int:
    status_fd = -1
    try:
        opts, argv = parse(args)
        status_fd = int(opts.get("--status-fd", ["-1"])[-1])
        if status_fd >= 0:
            os.set_inheritable(status_fd, False)
        _setup(opts)
        if "--new-pidns" not in opts and "--pidns" not in opts:
            os.execvp(argv[0], argv)
        pid = os.fork()
        if pid == 0:
            try:
                _child(opts, argv)
            except OSError as e:
                _report(status_fd, f"{argv[0]}: {e.strerror or e}")
            os._exit(SETUP_FAILED)
    except (OSError, ValueError) as e:
        _report(status_fd, str(e.strerror if isinstance(e, OSError) and e.strerror else e))
        return SETUP_FAILED
    if status_fd >= 0:
        os.close(status_fd)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda s, _f: os.kill(pid, s))
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except ChildProcessError:
            return SETUP_FAILED
        except InterruptedError:
            continue
    if os.WIFSIGNALED(status):
        died_of = os.WTERMSIG(status)
        if died_of not in (signal.SIGKILL, signal.SIGSTOP):  # their disposition cannot be set (EINVAL)
            signal.signal(died_of, signal.SIG_DFL)
        os.kill(os.getpid(), died_of)
    return os.waitstatus_to_exitcode(status)


def _report(fd: int, message: str) -> None:
    if fd >= 0:
        os.write(fd, message.encode()[:4000])
    else:
        sys.stderr.write(message + "\n")


def command(
    argv: list[str],
    *,
    cgroups: list[str] | tuple[str, ...] = (),
    new_pidns: bool = False,
    new_mountns: bool = False,
    pidns: str = "",
    oom_score_adj: int | None = None,
    status_fd: int = -1,
    volumes: list[str] | tuple[str, ...] = (),
) -> list[str]:
    """The argv that runs `argv` through this helper with these options."""
    out = [sys.executable, "-S", os.path.abspath(__file__)]
    for d in cgroups:
        out += ["--cgroup", d]
    if new_pidns:
        out.append("--new-pidns")
    if new_mountns:
        out.append("--new-mountns")
    for v in volumes:
        out += ["--volume", v]
    if pidns:
        out += ["--pidns", pidns]
    if oom_score_adj is not None:
        out += ["--oom-score-adj", str(oom_score_adj)]
    if status_fd >= 0:
        out += ["--status-fd", str(status_fd)]
    return [*out, "--", *argv]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
