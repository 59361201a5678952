"""IOChaos end to end on process pods with volumes (`chaosbus pod run -v HOST:PATH`): through the
CLI with status records, and across a kill -9 of the injector. What the pods see is probed from
inside their mount namespaces (helpers/ioprobe.py); the mounts are read back from
/proc/<pid>/mountinfo.
"""

from __future__ import annotations

import os
import signal
import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml
from helpers.ioprobe import probe
from helpers.live import System, eventually

from chaosbus.common import processid
from chaosbus.injector.backends import iofs
from chaosbus.injector.backends._glue.native import native_dir

# 300 s: the first test of a worker pays for the live system's start and the pods' (54-71 s of
# setup and 16-24 s of teardown measured at load average 20-22, past the default 120 s with the call).
pytestmark = [pytest.mark.privileged, pytest.mark.timeout(300)]

VOLUME = "/data"
UNAFFECTED = 0.07  # median seconds of a read no rule delays, on a loaded machine (the delay here is 100 ms)


def doc(name: str, spec: dict[str, Any]) -> str:
    return yaml.safe_dump(
        {"apiVersion": "chaos-mesh.org/v1alpha1", "kind": "IOChaos", "metadata": {"name": name}, "spec": spec}
    )


class VolumePod:
    def __init__(self, system: System, tmp: Path, name: str, label: str) -> None:
        self.name = name
        self.host = tmp / name
        (self.host / "slow").mkdir(parents=True)
        (self.host / "slow" / "a.txt").write_text("slow file\n")
        (self.host / "b.txt").write_text("other file\n")
        # The pod keeps one file open from its start and reads it back every 0.2 s: it must see
        # the content intact whatever happens to the volume.
        script = (
            "import os, time\nf = open('/data/b.txt')\nwhile True:\n    f.seek(0)\n"
            "    assert f.read() == 'other file\\n'\n    time.sleep(0.2)\n"
        )
        system.cli(
            "pod",
            "run",
            "--name",
            name,
            "-l",
            f"app={label}",
            "-v",
            f"{self.host}:{VOLUME}",
            "--",
            "python3",
            "-c",
            script,
        )
        ident = processid.parse(system.pod(name)["status"]["containerStatuses"][0]["containerID"])
        assert ident is not None
        self.pid = ident.pid

    def mounts(self) -> int:
        return iofs.mounts_at(self.pid, VOLUME)

    def reads(self, path: str, n: int = 5) -> list[Any]:
        return probe(self.pid, [("read", f"{VOLUME}/{path}")] * n)


@pytest.fixture(scope="module")
def pods(system: System, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[VolumePod, VolumePod]]:
    """Made once for the module: starting a pod takes seconds on a loaded machine."""
    if not (native_dir() / "iofs").exists() or not os.path.exists("/dev/fuse"):
        pytest.skip("native/build/iofs is not built (make install, with libfuse3-dev) or no /dev/fuse")
    tmp = tmp_path_factory.mktemp("iochaos")
    made = (VolumePod(system, tmp, "io-target", "io"), VolumePod(system, tmp, "io-other", "io-other"))
    yield made
    for p in made:
        system.cli("pod", "rm", p.name, check=False)


def records(system: System, name: str) -> list[dict[str, Any]]:
    obj = system.get("iochaos", name) or {}
    return ((obj.get("status") or {}).get("experiment") or {}).get("containerRecords") or []


def injected(system: System, name: str) -> list[dict[str, Any]]:
    recs = records(system, name)
    return recs if recs and all(r["phase"] == "Injected" for r in recs) else []


def median(results: list[Any]) -> float:
    return statistics.median(r.seconds for r in results)


def test_iochaos_latency_on_one_pod_through_the_cli(system: System, pods: tuple[VolumePod, VolumePod]) -> None:
    target, other = pods
    system.cli(
        "apply",
        "-f",
        "-",
        stdin=doc(
            "io-latency",
            {
                "action": "latency",
                "mode": "all",
                "selector": {"labelSelectors": {"app": "io"}},
                "volumePath": VOLUME,
                "path": f"{VOLUME}/slow/**",
                "delay": "100ms",
                "methods": ["read"],
                "duration": "60s",
            },
        ),
    )
    [rec] = eventually(lambda: injected(system, "io-latency"), timeout=20)
    assert rec["id"] == "default/io-target/io-target" and "latency on /data" in rec["events"][-1]["message"]
    assert target.mounts() == 1 and other.mounts() == 0
    slow, fast = target.reads("slow/a.txt", 8), target.reads("b.txt")
    assert {r.value for r in slow} == {"slow file\n"}
    # 100 ms +- 20 ms; load only makes a sleep longer, so the least disturbed read is compared.
    assert 0.08 <= min(r.seconds for r in slow) - median(fast) <= 0.12, ([r.seconds for r in slow], median(fast))
    assert median(other.reads("slow/a.txt")) < UNAFFECTED  # the other pod's volume is not touched

    system.cli("delete", "iochaos", "io-latency")
    eventually(lambda: target.mounts() == 0, timeout=20)
    assert median(target.reads("slow/a.txt")) < UNAFFECTED
    assert all(psutil.pid_exists(p.pid) for p in pods)  # the long-open reader never failed


def _injector_pids(system: System) -> list[int]:
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "chaosbus.injector" in cmd and system.url in cmd:
            found.append(p.info["pid"])
    return found


def test_injector_kill9_mid_fault_leaves_working_files_and_the_restart_recovers(
    system: System, pods: tuple[VolumePod, VolumePod]
) -> None:
    target, _ = pods
    system.cli(
        "apply",
        "-f",
        "-",
        stdin=doc(
            "io-eio",
            {
                "action": "fault",
                "mode": "all",
                "selector": {"labelSelectors": {"app": "io"}},
                "volumePath": VOLUME,
                "path": f"{VOLUME}/slow/*",
                "errno": 5,
                "methods": ["read"],
                "duration": "120s",
            },
        ),
    )
    eventually(lambda: injected(system, "io-eio"), timeout=20)
    killed = _injector_pids(system)
    assert killed
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    # The filesystem outlives the injector: matched reads still fail with EIO, the rest work (no
    # "Transport endpoint is not connected" anywhere).
    res = probe(
        target.pid, [("read", f"{VOLUME}/slow/a.txt"), ("read", f"{VOLUME}/b.txt"), ("write", f"{VOLUME}/new.txt", "x")]
    )
    assert [r.errno for r in res] == [5, 0, 0]
    eventually(lambda: [p for p in _injector_pids(system) if p not in killed], timeout=30)
    system.cli("delete", "iochaos", "io-eio")
    eventually(lambda: target.mounts() == 0, timeout=30)
    assert [r.errno for r in target.reads("slow/a.txt", 2)] == [0, 0]
    assert (target.host / "new.txt").read_text() == "x"


def test_kill9_of_the_injector_and_iofs_mid_fault_leaves_the_node_as_it_was(
    system: System, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHAOSBUS_STATE_DIR", str(system.state))  # iofs.Volume's files: the system's
    if not (native_dir() / "iofs").exists() or not os.path.exists("/dev/fuse"):
        pytest.skip("native/build/iofs is not built (make install, with libfuse3-dev) or no /dev/fuse")
    # A pod of its own that keeps no file open: its volume is without a server for a while.
    host = tmp_path_factory.mktemp("iocrash")
    (host / "a.txt").write_text("a file\n")
    system.cli("pod", "run", "--name", "io-crash", "-l", "app=io-crash", "-v", f"{host}:{VOLUME}", "--", "sleep", "600")
    try:
        ident = processid.parse(system.pod("io-crash")["status"]["containerStatuses"][0]["containerID"])
        assert ident is not None
        pid, state = ident.pid, system.state / "iochaos"
        spec = {"action": "fault", "mode": "all", "selector": {"labelSelectors": {"app": "io-crash"}}}
        spec |= {"volumePath": VOLUME, "errno": 5, "methods": ["read"], "duration": "120s"}
        system.cli("apply", "-f", "-", stdin=doc("io-crash", spec))
        eventually(lambda: injected(system, "io-crash"), timeout=20)
        vol = iofs.Volume(pid, iofs.start_ticks(pid) or 0, VOLUME)
        server = tuple(int(x) for x in vol.server_file.read_text().split())

        killed = _injector_pids(system)
        assert killed
        # What a kill -9 in the middle of another apply leaves (a rules file half written, a
        # control socket not yet renamed, named by the injector about to be killed), and the rules
        # of an entry this node no longer has.
        planted = [state / f".{vol.rules.name}.{killed[0]}.7", state / f".{vol.control.name}.{killed[0]}.7"]
        planted.append(iofs.Volume(pid, vol.start, "/elsewhere").rules)
        for path in planted:
            path.write_text("# lost\nfault 0 1 100 5 -\n")
        for p in [*killed, server[0]]:
            os.kill(p, signal.SIGKILL)

        # The restart re-asserts the fault on a new server and its sweep removes the leftovers.
        eventually(lambda: [p for p in _injector_pids(system) if p not in killed], timeout=60)
        eventually(lambda: not any(p.exists() for p in planted), timeout=30)
        eventually(lambda: iofs.mounts_at(pid, VOLUME) == 1 and _read_errno(pid) == 5, timeout=30)
        assert iofs.start_ticks(server[0]) != server[1]
        # The state directory holds what the live fault owns, and nothing else of this target.
        owned = sorted(p.name for p in (vol.rules, vol.server_file, vol.control))
        assert eventually(lambda: _state_files_of(state, pid) == owned, timeout=15)
        # Counted by the new injector (the temporary files at least: the old one kept them, their
        # writer being alive).
        eventually(lambda: _removed_files(system) >= 2, timeout=15)

        system.cli("delete", "iochaos", "io-crash")
        eventually(lambda: iofs.mounts_at(pid, VOLUME) == 0, timeout=30)
        assert _read_errno(pid) == 0
        # Nothing of the fault is left: no file of the volume, no iofs process, no mount.
        assert eventually(lambda: not _state_files_of(state, pid), timeout=15), _state_files_of(state, pid)
        assert eventually(lambda: not _iofs_processes(pid), timeout=15), _iofs_processes(pid)
        with open(f"/proc/{pid}/mountinfo") as f:
            assert iofs.mount_points(f.read().splitlines()) == []
    finally:
        system.cli("delete", "iochaos", "io-crash", check=False)
        system.cli("pod", "rm", "io-crash", check=False)


def _removed_files(system: System) -> float:
    try:
        return sum(system.samples("injector", "chaosbus_injector_orphans_removed_total", what="iofs state file"))
    except (OSError, KeyError):  # not serving yet
        return 0.0


def _read_errno(pid: int) -> int:
    return int(probe(pid, [("read", f"{VOLUME}/a.txt")])[0].errno)


def _state_files_of(state: Path, pid: int) -> list[str]:
    return sorted(p.name for p in state.iterdir() if (f := iofs.state_file(p)) is not None and f.pid == pid)


def _iofs_processes(pid: int) -> list[int]:
    """iofs servers serving a volume of process `pid`."""
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = p.info["cmdline"] or []
        if cmd[:1] and cmd[0].endswith("iofs") and "--pid" in cmd and cmd[cmd.index("--pid") + 1 :][:1] == [str(pid)]:
            found.append(p.info["pid"])
    return found
