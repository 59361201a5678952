"""IOChaos's passthrough for the operations no rule matches, against a real target (as
test_iofs.py): the kernel reads files no data rule matches without iofs, a rule still reaches new
opens of a file held open that way, a replaced file is read anew, attributes the kernel held are
dropped before an attrOverride's apply returns, and iofs without passthrough (what a kernel without it gets)
still applies the rules and serves the data itself.
"""

from __future__ import annotations

import gzip
import os
import select
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.iofstarget import GETATTR, READ, Target, ctx_for, io, volume_target
from helpers.ioprobe import probe

from chaosbus.common.crd import iochaos
from chaosbus.injector import faults
from chaosbus.injector.backends import iofs
from chaosbus.injector.backends._glue.native import native_dir

pytestmark = pytest.mark.privileged

if os.geteuid() != 0 or not os.path.exists("/dev/fuse") or not (native_dir() / "iofs").exists():
    pytest.skip("needs root, /dev/fuse and native/build/iofs (make install)", allow_module_level=True)

FAULT = faults.get("io")


@pytest.fixture
def target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Target]:
    yield from volume_target(tmp_path, monkeypatch)


def test_attr_override_reaches_a_stat_right_after_apply_on_a_mounted_volume(target: Target) -> None:
    other = io(target, action="fault", path=f"{target.vol}/slow/**", methods=READ, errno=5)
    c1 = ctx_for(target, other)
    FAULT.apply(c1, other)  # mounted; the kernel may keep b.txt's attributes for a second
    try:
        b = f"{target.vol}/b.txt"
        mask, values = iochaos.attr_override(iochaos.AttrOverride(size=4242))
        spec = io(target, action="attrOverride", path=b, methods=GETATTR, attr_mask=mask, attr_values=values)
        c2 = ctx_for(target, spec)
        # One probe run: a stat that caches b.txt's attributes, the rule applied while they are
        # held (the probe waits on a file this test writes after apply), then one stat: apply
        # returns only once iofs has dropped the attributes the kernel held (for 1 s otherwise).
        go = target.host / "go"
        probe_run = subprocess.Popen(
            [
                "nsenter",
                "-t",
                str(target.pid),
                "-m",
                "--",
                sys.executable,
                "-S",
                "-c",
                STAT_WAIT_STAT,
                b,
                f"{target.vol}/go",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert probe_run.stdout is not None
        first = int(probe_run.stdout.readline())
        FAULT.apply(c2, spec)
        go.write_text("")
        second = int(probe_run.stdout.readline())
        probe_run.wait(30)
        assert (first, second) == (len("other file\n"), 4242)
        FAULT.recover(c2, spec)
        assert probe(target.pid, [("stat", b)])[0].value[0] == len("other file\n")
    finally:
        FAULT.recover(c1, other)


def test_attr_override_reaches_the_first_stat_also_past_the_paths_iofs_keeps(target: Target) -> None:
    other = io(target, action="fault", path=f"{target.vol}/slow/**", methods=READ, errno=5)
    c1 = ctx_for(target, other)
    many = target.host / "many"
    many.mkdir()
    for i in range(4200):  # more than iofs keeps track of (4096 a second)
        (many / f"{i:04d}").write_text("")
    FAULT.apply(c1, other)
    try:
        b = f"{target.vol}/b.txt"
        mask, values = iochaos.attr_override(iochaos.AttrOverride(size=4242))
        spec = io(target, action="attrOverride", path=b, methods=GETATTR, attr_mask=mask, attr_values=values)
        c2 = ctx_for(target, spec)
        # The probe stats every file of many/ and then b.txt, so b.txt's attributes are held by
        # the kernel with no room left to note them; apply must still have them gone.
        probe_run = subprocess.Popen(
            ["nsenter", "-t", str(target.pid), "-m", "--", sys.executable, "-S", "-c", STAT_WAIT_STAT, b]
            + [f"{target.vol}/go", f"{target.vol}/many"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert probe_run.stdout is not None
        first = int(probe_run.stdout.readline())
        FAULT.apply(c2, spec)
        (target.host / "go").write_text("")
        second = int(probe_run.stdout.readline())
        probe_run.wait(30)
        assert (first, second) == (len("other file\n"), 4242)
        FAULT.recover(c2, spec)
    finally:
        FAULT.recover(c1, other)


# Inside the target's mount namespace: stat (after every file of an optional directory), wait for a
# file to appear, stat again.
STAT_WAIT_STAT = textwrap.dedent("""
    import os, sys, time
    if len(sys.argv) > 3:
        for name in sorted(os.listdir(sys.argv[3])):
            os.stat(os.path.join(sys.argv[3], name))
    first = os.stat(sys.argv[1]).st_size
    print(first, flush=True)
    while not os.path.exists(sys.argv[2]):
        time.sleep(0.001)
    print(os.stat(sys.argv[1]).st_size, flush=True)
""")


def _kernel_has_fuse_passthrough() -> bool | None:
    """Whether this kernel was built with FUSE passthrough (None: its configuration is unknown)."""
    try:
        with gzip.open("/proc/config.gz", "rt") as f:
            return "CONFIG_FUSE_PASSTHROUGH=y\n" in f.read()
    except OSError:
        return None


def _iofs_pid(t: Target) -> int:
    vol = iofs.Volume(t.pid, iofs.start_ticks(t.pid) or 0, t.vol)
    return int(vol.server_file.read_text().split()[0])


# Inside the target's mount namespace: open a file; on a line from stdin, read it to its end and
# print how many bytes it gave; on the next line, close it.
OPEN_THEN_READ = textwrap.dedent("""
    import os, sys
    fd = os.open(sys.argv[1], os.O_RDONLY)
    print("open", flush=True)
    sys.stdin.readline()
    n = 0
    while chunk := os.read(fd, 1 << 16):
        n += len(chunk)
    print(n, flush=True)
    sys.stdin.readline()
    os.close(fd)
""")


def _read_while_iofs_stopped(t: Target, path: str, server: int, wait_s: float) -> tuple[int | None, int]:
    """What a file opened before iofs was stopped (SIGSTOP) gives when read to its end while iofs
    stays stopped for `wait_s` (None: the read waited on iofs all that time), and what the read
    gave in the end, once iofs ran again. A read the kernel serves needs no iofs; one iofs serves
    cannot end while it is stopped.
    """
    holder = subprocess.Popen(
        ["nsenter", "-t", str(t.pid), "-m", "--", sys.executable, "-S", "-c", OPEN_THEN_READ, path],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdin is not None and holder.stdout is not None
    try:
        assert holder.stdout.readline() == "open\n"
        os.kill(server, signal.SIGSTOP)
        try:
            holder.stdin.write("\n")
            holder.stdin.flush()
            ready, _, _ = select.select([holder.stdout], [], [], wait_s)
            during = int(holder.stdout.readline()) if ready else None
        finally:
            os.kill(server, signal.SIGCONT)
        total = during if during is not None else int(holder.stdout.readline())
        holder.stdin.write("\n")  # closed only now: a close waits on iofs (its flush)
        holder.stdin.flush()
        assert holder.wait(30) == 0
        return during, total
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def test_files_no_data_rule_matches_are_read_by_the_kernel_not_through_iofs(target: Target) -> None:
    if not _kernel_has_fuse_passthrough():
        pytest.skip(
            "this kernel has no FUSE passthrough (CONFIG_FUSE_PASSTHROUGH, Linux 6.9 on) or no /proc/config.gz "
            "to tell: iofs serves every read itself there"
        )
    data = os.urandom(8 << 20)
    (target.host / "free.bin").write_bytes(data)
    (target.host / "ruled.bin").write_bytes(data)
    spec = io(target, action="latency", path=f"{target.vol}/ruled.bin", methods=READ, delay_ns=0)
    ctx = ctx_for(target, spec)
    assert "(kernel passthrough)" in FAULT.apply(ctx, spec)
    try:
        server = _iofs_pid(target)
        # The free file's reads reach the covered file in the kernel: they end with iofs stopped.
        # The ruled file's reads (direct I/O) each wait on iofs: they cannot.
        free = _read_while_iofs_stopped(target, f"{target.vol}/free.bin", server, wait_s=30)
        ruled = _read_while_iofs_stopped(target, f"{target.vol}/ruled.bin", server, wait_s=1)
    finally:
        FAULT.recover(ctx, spec)
    assert (free, ruled) == ((len(data), len(data)), (None, len(data)))
    assert (target.host / "free.bin").read_bytes() == data


def test_a_rule_reaches_new_opens_of_a_file_held_open_through_passthrough(target: Target) -> None:
    first = io(target, action="fault", path=f"{target.vol}/slow/**", methods=READ, errno=5)
    c1 = ctx_for(target, first)
    FAULT.apply(c1, first)
    hold = (
        f"import os, time; fd = os.open('{target.vol}/b.txt', os.O_RDONLY)\n"
        "print(os.pread(fd, 64, 0).decode(), end='', flush=True)\n"
        "time.sleep(300)\n"
    )
    holder = subprocess.Popen(
        ["nsenter", "-t", str(target.pid), "-m", "--", sys.executable, "-S", "-c", hold],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "other file\n"
        second = io(target, action="fault", path=f"{target.vol}/b.txt", methods=READ, errno=61)
        c2 = ctx_for(target, second)
        FAULT.apply(c2, second)
        try:
            # The kernel refuses an open of an inode open passthrough unless it names the same
            # backing file: iofs does, with direct I/O, so the new open's reads meet the rule.
            during = probe(target.pid, [("read", f"{target.vol}/b.txt"), ("open", f"{target.vol}/b.txt")])
            assert [r.errno for r in during] == [61, 0]
        finally:
            FAULT.recover(c2, second)
        assert probe(target.pid, [("read", f"{target.vol}/b.txt")])[0].value == "other file\n"
    finally:
        holder.kill()
        holder.wait()
        FAULT.recover(c1, first)
    assert target.mounted() == 0


def test_a_file_replaced_on_the_volume_is_read_anew_not_through_its_predecessor(target: Target) -> None:
    spec = io(target, action="fault", path=f"{target.vol}/slow/**", methods=READ, errno=5)
    ctx = ctx_for(target, spec)
    FAULT.apply(ctx, spec)
    try:
        b = f"{target.vol}/b.txt"
        assert probe(target.pid, [("read", b)])[0].value == "other file\n"
        # Replaced under the same name within the second iofs keeps a released file's backing.
        (target.host / "b.new").write_text("new content\n")
        os.replace(target.host / "b.new", target.host / "b.txt")
        assert probe(target.pid, [("read", b)])[0].value == "new content\n"
        (target.host / "b.txt").unlink()
        (target.host / "b.txt").write_text("third\n")
        assert probe(target.pid, [("read", b)])[0].value == "third\n"
    finally:
        FAULT.recover(ctx, spec)


def test_without_passthrough_iofs_serves_every_file_and_the_rules_still_apply(target: Target) -> None:
    """What a kernel without FUSE passthrough gets: the page cache for files no rule matches."""
    data = os.urandom(4 << 20)
    (target.host / "free.bin").write_bytes(data)
    vol = iofs.Volume(target.pid, iofs.start_ticks(target.pid) or 0, target.vol)
    spec = io(target, action="fault", path=f"{target.vol}/b.txt", methods=READ, errno=5)
    iofs.write_rules(vol.rules, {"k": iofs.rule_line(spec, 0)})
    proc, passthrough = iofs.start(vol, passthrough=False)
    try:
        assert not passthrough and target.mounted() == 1
        # Without passthrough even the free file's data comes from iofs: its read waits on it.
        assert _read_while_iofs_stopped(target, f"{target.vol}/free.bin", proc.pid, wait_s=1) == (None, len(data))
        got = probe(
            target.pid,
            [("read", f"{target.vol}/b.txt"), ("read", f"{target.vol}/slow/a.txt")],
        )
        assert [r.errno for r in got] == [5, 0] and got[1].value == "slow file\n"
    finally:
        iofs.umount(vol)
        proc.wait(10)
        vol.rules.unlink(missing_ok=True)
    assert target.mounted() == 0
