"""Files unlinked or replaced while open on an iofs mount, against a real target (as test_iofs.py):
the name is gone from the volume at once (its directory can be removed, nothing is left behind
after recovery), the open descriptor keeps its data, its attributes and the rules of its name.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.iofstarget import GETATTR, READ, Target, ctx_for, eventually, io, volume_target

from chaosbus.injector import faults
from chaosbus.injector.backends._glue.native import native_dir

pytestmark = pytest.mark.privileged

if os.geteuid() != 0 or not os.path.exists("/dev/fuse") or not (native_dir() / "iofs").exists():
    pytest.skip("needs root, /dev/fuse and native/build/iofs (make install)", allow_module_level=True)

FAULT = faults.get("io")


@pytest.fixture
def target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Target]:
    yield from volume_target(tmp_path, monkeypatch)


# Inside the target's mount namespace: open DIR/f.txt, DIR/g.txt and DIR2/h.txt, then run the
# commands on stdin, one JSON line out for each. "remove": unlink f.txt, replace g.txt by a new file
# (renamed over it), fstat both, set and get an xattr of f.txt by its descriptor, list DIR, remove
# the new g.txt, rmdir DIR and fstat f.txt again; "move": unlink h.txt, rename DIR2 and fstat h.txt; "read": read the
# descriptors of f and g; "close".
HOLDER = textwrap.dedent("""
    import json, os, sys
    d, d2 = sys.argv[1], sys.argv[2]
    f = os.open(d + "/f.txt", os.O_RDWR)
    g = os.open(d + "/g.txt", os.O_RDONLY)
    h = os.open(d2 + "/h.txt", os.O_RDONLY)
    def remove():
        os.unlink(d + "/f.txt")
        with open(d + "/g.new", "w") as new:
            new.write("replacement\\n")
        os.rename(d + "/g.new", d + "/g.txt")
        sf, sg = os.fstat(f), os.fstat(g)
        try:
            os.setxattr(f, "user.kept", b"yes")
            xattr = os.getxattr(f, "user.kept").decode()
        except OSError as e:
            xattr = e.errno
        listed = sorted(os.listdir(d))
        os.unlink(d + "/g.txt")
        os.rmdir(d)
        gone = os.fstat(f)
        return {
            "f": [sf.st_size, sf.st_nlink, xattr],
            "g": [sg.st_size, sg.st_nlink],
            "listed": listed,
            "after_rmdir": [gone.st_size, gone.st_nlink],
        }
    def move():
        os.unlink(d2 + "/h.txt")
        os.rename(d2, d2 + "-moved")
        st = os.fstat(h)
        return {"h": [st.st_size, st.st_nlink], "listed": os.listdir(d2 + "-moved")}
    def read():
        out = {}
        for name, fd in (("f", f), ("g", g)):
            try:
                out[name] = os.pread(fd, 64, 0).decode()
            except OSError as e:
                out[name] = e.errno
        return out
    def close():
        os.close(f)
        os.close(g)
        os.close(h)
        return "closed"
    for line in sys.stdin:
        try:
            out = {"remove": remove, "move": move, "read": read, "close": close}[line.strip()]()
        except OSError as e:
            out = {"errno": e.errno}
        print(json.dumps(out), flush=True)
""")


def test_a_file_unlinked_while_open_leaves_nothing_behind_and_its_descriptor_works(target: Target) -> None:
    d = target.host / "d"
    d.mkdir()
    (d / "f.txt").write_text("kept f\n")
    (d / "g.txt").write_text("kept g\n")
    try:  # what an xattr of a file on the volume gives where the host's filesystem has none
        os.setxattr(d / "g.txt", "user.probe", b"")
        xattr: object = "yes"
    except OSError as e:
        xattr = e.errno
    (target.host / "d2").mkdir()
    (target.host / "d2" / "h.txt").write_text("kept h\n")
    # Mounted with a rule on f.txt's reads (f.txt is opened with its reads through iofs), and one
    # failing stat of the directory's dotfiles: the names libfuse hides open files under are such,
    # yet its check that one is free is no call of the target's and must not fail the unlink (and
    # with a stat rule in force the kernel keeps no attributes: every fstat reaches iofs).
    spec = io(target, action="fault", path=f"{target.vol}/d/f.txt", methods=READ, errno=5)
    ctx = ctx_for(target, spec)
    FAULT.apply(ctx, spec)
    dotfiles = io(target, action="fault", path=f"{target.vol}/d/.*", methods=GETATTR, errno=5)
    dot_ctx = ctx_for(target, dotfiles)
    FAULT.apply(dot_ctx, dotfiles)
    holder = subprocess.Popen(
        [
            "nsenter",
            "-t",
            str(target.pid),
            "-m",
            "--",
            sys.executable,
            "-S",
            "-c",
            HOLDER,
            f"{target.vol}/d",
            f"{target.vol}/d2",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdin is not None and holder.stdout is not None

    def step(command: str) -> object:
        assert holder.stdin is not None and holder.stdout is not None
        holder.stdin.write(command + "\n")
        holder.stdin.flush()
        return json.loads(holder.stdout.readline())

    try:
        removed = step("remove")
        # Both old names are gone from the directory as the target sees it, and it could be removed.
        assert removed == {"f": [7, 0, xattr], "g": [7, 0], "listed": ["g.txt"], "after_rmdir": [7, 0]}, removed
        assert not d.exists() and not list(target.host.rglob(".fuse_hidden*"))
        # A file unlinked while open is still found after its directory is renamed.
        assert step("move") == {"h": [7, 0], "listed": []}
        # The rule on f.txt's name still applies to its open descriptor; g's reads its old data.
        assert step("read") == {"f": 5, "g": "kept g\n"}
        FAULT.recover(dot_ctx, dotfiles)
        FAULT.recover(ctx, spec)
        assert target.mounted() == 0
        # Recovery returns once iofs, still serving the open files, has dropped the rule.
        assert step("read") == {"f": "kept f\n", "g": "kept g\n"}
        assert step("close") == "closed"
        holder.stdin.close()
        assert holder.wait(30) == 0
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        FAULT.recover(dot_ctx, dotfiles)
        FAULT.recover(ctx, spec)
    assert eventually(lambda: not list(target.host.rglob(".fuse_hidden*")) and not d.exists())
