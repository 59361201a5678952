"""The orphan sweeper and the io fault's state directory, against a real iofs mount: the files a
crash leaves (a rules write or a server start cut short, a volume whose target is gone, the rules of
an entry that was lost) are removed, what a live fault owns is kept, and once the fault's entry is
lost too its mount, its server and then its files go.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers.iofstarget import READ, Target, ctx_for, eventually, io, start_target
from helpers.ioprobe import probe

from chaosbus.common import netns as nsutil
from chaosbus.injector import faults
from chaosbus.injector import journal as jr
from chaosbus.injector.backends import iofs, kit
from chaosbus.injector.backends._glue.native import native_dir
from chaosbus.injector.journal import Entry, Identity, Journal, NetnsRef
from chaosbus.injector.locks import Gate
from chaosbus.injector.metrics import InjectorMetrics
from chaosbus.injector.sweeper import Sweeper, SweepReport

pytestmark = pytest.mark.privileged

if os.geteuid() != 0 or not os.path.exists("/dev/fuse") or not (native_dir() / "iofs").exists():
    pytest.skip("needs root, /dev/fuse and native/build/iofs (make install)", allow_module_level=True)

NODE = f"sweep-state-{os.getpid()}"
FAULT = faults.get("io")
WHAT = "iofs state file"


@dataclass
class Pod:
    target: Target
    netns: str  # its network namespace's path: the sweeper's scope comes from the journal


@pytest.fixture
def pod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Pod]:
    """A process pod with a volume in a network namespace of its own (a sweep of the namespace
    must not see other tests' iofs mounts)."""
    monkeypatch.setenv("CHAOSBUS_STATE_DIR", str(tmp_path / "state"))
    name = f"cbtss{os.getpid() % 100000}"
    path = nsutil.create_named_netns(name)
    shim, t = start_target(tmp_path, netns_path=path)
    (t.host / "b.txt").write_text("other file\n")
    try:
        yield Pod(t, path)
    finally:
        os.killpg(shim.pid, signal.SIGKILL)
        shim.wait()
        nsutil.remove_named_netns(name)


def sweep(journal: Journal, metrics: InjectorMetrics) -> SweepReport:
    return asyncio.run(Sweeper(journal, Gate(), NODE, tags=("io",), metrics=metrics).sweep())


def dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def bind_socket(d: Path, name: str) -> None:
    """A unix socket file left in `d` (bound through the directory: its path may be too long)."""
    fd = os.open(d, os.O_PATH | os.O_DIRECTORY)
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.bind(f"/proc/self/fd/{fd}/{name}")
    finally:
        os.close(fd)


def test_state_files_no_live_fault_owns_go_and_the_lost_faults_files_follow(pod: Pod, tmp_path: Path) -> None:
    t = pod.target
    spec = io(t, action="fault", methods=READ, errno=5)
    ctx = ctx_for(t, spec)
    entry = Entry(
        key=jr.entry_key(ctx.experiment_uid, ctx.action.selector_key, ctx.action.target_id),
        experiment_uid=ctx.experiment_uid,
        generation=1,
        kind="IOChaos",
        namespace="default",
        name="x",
        action=ctx.action,
        identity=Identity(netns=(NetnsRef(pod.netns, nsutil.netns_inode(pod.netns)),)),
        original=dict(ctx.original),
        deadline=None,
        lasting=True,
        state=jr.ACTIVE,
    )
    journal, metrics = Journal(tmp_path / "j.db"), InjectorMetrics()
    journal.write_intents([entry])
    start = iofs.start_ticks(t.pid) or 0
    vol = iofs.Volume(t.pid, start, t.vol)
    try:
        FAULT.apply(ctx, spec)
        d = iofs.rules_dir()
        ours = {vol.rules, vol.server_file, vol.control}
        # What crashes leave: a rules write and a server start of an injector killed -9 (their
        # writer gone), a volume whose target is gone, the rules of an entry that was lost.
        writer = dead_pid()
        (d / f".{vol.rules.name}.{writer}.1").write_text("# k\nfault 0 1 100 5 -\n")
        bind_socket(d, f".{vol.control.name}.{writer}.2")
        gone = iofs.Volume(t.pid, start + 1, t.vol)
        gone.rules.write_text("")
        gone.server_file.write_text(f"{writer} 1\n")
        lost = iofs.Volume(t.pid, start, "/elsewhere")
        lost.rules.write_text("# lost\nfault 0 1 100 5 -\n")
        alien = d / "notes.txt"  # no name of ours: never judged
        alien.write_text("x")
        # A write in flight (its writer alive: another injector applying at this moment) is kept.
        in_flight = d / f".{vol.rules.name}.{os.getpid()}.3"
        in_flight.write_text("# k\nfault 0 1 100 5 -\n")
        planted = set(d.iterdir()) - ours - {alien, in_flight}
        assert len(planted) == 5

        report = sweep(journal, metrics)
        assert set(d.iterdir()) == ours | {alien, in_flight}, report
        in_flight.unlink()
        assert sorted(report.removed) == sorted(f"{WHAT} {p}" for p in planted) and not report.errors
        assert report.counts == {WHAT: 5}
        assert metrics.registry.get_sample_value("chaosbus_injector_orphans_removed_total", {"what": WHAT}) == 5
        assert t.mounted() == 1 and probe(t.pid, [("read", f"{t.vol}/b.txt")])[0].errno == 5  # still in force

        # The entry is lost (closed with no recovery): the mount is detached, iofs ends, and a
        # later sweep takes its files.
        server = tuple(int(x) for x in vol.server_file.read_text().split())
        journal.commit([jr.Change(entry.key, jr.RECOVERED, "lost: test")])
        sweep(journal, metrics)
        assert t.mounted() == 0
        assert probe(t.pid, [("read", f"{t.vol}/b.txt")])[0].value == "other file\n"
        assert eventually(lambda: iofs.start_ticks(server[0]) != server[1]), "iofs outlived its mount"
        assert eventually(lambda: (sweep(journal, metrics), set(d.iterdir()))[1] == {alien}), set(d.iterdir())
        # Its rules at least (the server's record and socket may go with iofs's watcher thread).
        assert (metrics.registry.get_sample_value("chaosbus_injector_orphans_removed_total", {"what": WHAT}) or 0) >= 6
    finally:
        FAULT.recover(ctx, spec)
        journal.close()


def test_a_live_targets_files_outside_the_sweeps_scope_are_kept(pod: Pod, tmp_path: Path) -> None:
    # Another injector's volume on this machine: its target lives in a namespace this journal
    # never recorded, and its server may be starting right now.
    t = pod.target
    vol = iofs.Volume(t.pid, iofs.start_ticks(t.pid) or 0, t.vol)
    vol.rules.write_text("# other\nfault 0 1 100 5 -\n")
    journal, metrics = Journal(tmp_path / "j.db"), InjectorMetrics()
    try:
        report = sweep(journal, metrics)
        assert vol.rules.exists() and not report.removed
    finally:
        journal.close()


def test_tc_originals_of_namespaces_that_are_gone_go(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAOSBUS_STATE_DIR", str(tmp_path / "state"))
    name = f"cbtso{os.getpid() % 100000}"
    live = os.stat(nsutil.create_named_netns(name))
    b, journal, metrics = kit.build(), Journal(tmp_path / "j.db"), InjectorMetrics()
    try:
        store = b.tc.store.directory
        store.mkdir(parents=True)
        # A namespace that is gone: an inode past any the kernel hands out (a real one's may be
        # reused at once by a namespace of another test).
        kept = [store / f"{live.st_dev:x}-{live.st_ino}-eth0.json", store / f"{live.st_dev:x}-{live.st_ino}-eth0.tmp"]
        gone = [store / f"{live.st_dev:x}-{2**32 - 7}-eth0.json", store / f"{live.st_dev:x}-{2**32 - 7}-eth0.tmp"]
        alien = store / "notes.txt"
        for p in [*kept, *gone, alien]:
            p.write_text("{}")
        sweeper = Sweeper(journal, Gate(), NODE, tags=("network-shaping",), backends=b, metrics=metrics)
        report = asyncio.run(sweeper.sweep())  # the journal names no namespace: no tc sweep, files only
        assert set(store.iterdir()) == {*kept, alien}, report
        assert report.counts == {"tc original": 2} and not report.errors
        # In the sweep's scope a write cut short goes too; the original of a live namespace is the tc
        # sweep's to restore and drop.
        files = faults.state_files(tags=["network-shaping"])["network-shaping"]
        assert files.stale([str(p) for p in kept], [], {live.st_ino}) == [str(kept[1])]
    finally:
        b.close()
        journal.close()
        nsutil.remove_named_netns(name)


def test_a_sweep_makes_no_state_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAOSBUS_STATE_DIR", str(tmp_path / "state"))
    b, journal = kit.build(), Journal(tmp_path / "j.db")
    try:
        report = asyncio.run(Sweeper(journal, Gate(), NODE, tags=("io", "network-shaping"), backends=b).sweep())
        assert not (tmp_path / "state").exists() and not report.errors and not report.removed
    finally:
        b.close()
        journal.close()
