"""A live local-mode system for end-to-end tests: `chaosbus up` (embedded nats-server and the
four services as processes), four process pods serving HTTP, and probes run from inside pods.
Skips with the reason when the machine cannot create network namespaces or nftables rules.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from chaosbus.cli import leftovers
from chaosbus.common import cgroups, natsauth, netns, processid

# Per-run names, so two test runs on one machine (developers in parallel) never share a bridge.
BRIDGE, SUBNET = f"cbte{os.getpid() % 10000}", f"10.216.{os.getpid() % 250}.0/24"
# Per run too: injectors sweep orphans by node name (stressors, skewed clocks), so two live
# systems under one name (pytest-xdist workers) would each sweep the other's faults.
NODE = f"node-e2e-{os.getpid() % 10000}"
PEERS = 4


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces, nftables)"
    for tool in ("nft", "nsenter"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    return None


@dataclass
class Pod:
    name: str
    ip: str
    netns_path: str
    pid: int


@dataclass
class System:
    env: dict[str, str]
    state: Path
    url: str
    pods: list[Pod] = field(default_factory=list)

    def cli(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "chaosbus.cli", *args],
            input=stdin,
            text=True,
            capture_output=True,
            env=self.env,
            timeout=60,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"chaosbus {' '.join(args)} -> {done.returncode}: {done.stdout}{done.stderr}")
        return done

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        done = self.cli("get", kind, name, "-o", "json", check=False)
        return json.loads(done.stdout) if done.returncode == 0 else None

    def pod(self, name: str) -> dict[str, Any]:
        obj = self.get("pod", name)
        assert obj is not None, name
        return obj

    def connects(self, src: int, dst: int, timeout: float = 0.3) -> bool:
        return netns.run_in_netns(self.pods[src].netns_path, _connect, self.pods[dst].ip, 8080, timeout)

    def blocked(self) -> set[tuple[int, int]]:
        """Every ordered pair (i, j) where pod i cannot open a TCP connection to pod j."""
        return {
            (i, j) for i in range(len(self.pods)) for j in range(len(self.pods)) if i != j and not self.connects(i, j)
        }

    def auth(self, user: str) -> natsauth.ClientAuth:
        """The credentials `chaosbus up` made for `user` (admin: may do anything, as a bug might)."""
        return natsauth.ClientAuth(natsauth.seed_file(user, self.state), admin=user == natsauth.ADMIN)

    def service_log(self, name: str) -> str:
        return (self.state / "logs" / f"{name}.log").read_text()

    def metrics_ports(self) -> dict[str, int]:
        """The /metrics port each running service logged (the last start wins: a restart rebinds)."""
        ports: dict[str, int] = {}
        for name in ("watcher", "scheduler", "recorder", "injector"):
            for line in self.service_log(name).splitlines():
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if isinstance(rec, dict) and rec.get("metrics_port"):
                    ports[name] = int(rec["metrics_port"])
        return ports

    def samples(self, service: str, metric: str, **labels: str) -> list[float]:
        """Values of `metric`'s series on `service`'s /metrics whose labels include `labels`."""
        port = self.metrics_ports()[service]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        return [
            s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == metric and all(s.labels.get(k) == v for k, v in labels.items())
        ]


def _connect(ip: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=timeout):
            return True
    except OSError:
        return False


def eventually(check: Callable[[], Any], *, timeout: float = 8.0, interval: float = 0.1) -> Any:
    """Poll until `check()` is truthy; fail with the last value."""
    deadline = time.monotonic() + timeout
    value = check()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = check()
    assert value, f"condition not met within {timeout}s (last value {value!r})"
    return value


def wait_blocked(system: System, expected: set[tuple[int, int]], timeout: float = 8.0) -> None:
    last: list[set[tuple[int, int]]] = []

    def matches() -> bool:
        last[:] = [system.blocked()]
        return last[0] == expected

    deadline = time.monotonic() + timeout
    while not matches():
        assert time.monotonic() < deadline, f"blocked pairs {sorted(last[0])}, expected {sorted(expected)}"
        time.sleep(0.1)


@pytest.fixture(scope="session")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    reason = _unavailable()
    if reason:
        pytest.skip(reason)
    state = tmp_path_factory.mktemp("chaosbus-state")
    env = {**os.environ, "CHAOSBUS_STATE_DIR": str(state), "CHAOSBUS_NODE": NODE}
    env.pop("CHAOSBUS_NATS_URL", None)
    own_netns: list[str] = []
    up = subprocess.Popen(
        [sys.executable, "-m", "chaosbus.cli", "up", "--port", "0", "--metrics-base-port", "0"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        url_file = state / "nats.url"
        # Generous: on two loaded cores a whole system starts slowly, and waiting costs nothing when it is up.
        eventually(lambda: url_file.exists() and url_file.read_text().strip(), timeout=60)
        sysm = System(env=env, state=state, url=url_file.read_text().strip())
        eventually(
            lambda: all("ready" in _read(state / "logs" / f"{s}.log") for s in ("scheduler", "recorder", "injector")),
            timeout=60,
        )
        for i in range(PEERS):
            group = "a" if i % 2 == 0 else "b"
            sysm.cli(
                "pod",
                "run",
                "--name",
                f"peer-{i}",
                "-l",
                f"app=peer,group={group},index={i}",
                "--bridge",
                BRIDGE,
                "--subnet",
                SUBNET,
                "--",
                sys.executable,
                "-m",
                "chaosbus.cli.demoapp",
                "serve",
                "--name",
                f"peer-{i}",
            )
            sysm.pods.append(_pod(sysm, f"peer-{i}"))
        eventually(lambda: not sysm.blocked(), timeout=30)
        yield sysm
        own_netns = _pod_netns_names(sysm)
        sysm.cli("pod", "rm", "--all", check=False)
    finally:
        up.terminate()
        try:
            up.wait(20)
        except subprocess.TimeoutExpired:
            up.kill()
    # Only what this system made: other pytest-xdist workers run live systems of their own at the
    # same moment. The session guard in tests/conftest.py looks at everything once all are done.
    left = [f"netns {n}" for n in own_netns if os.path.exists(leftovers.NETNS_DIR / n)]
    left += [f"bridge {BRIDGE}"] if os.path.exists(f"/sys/class/net/{BRIDGE}") else []
    left += [f"cgroup {d}" for d in cgroups.leftovers() if os.path.basename(d) in own_netns]
    left += [f"pod hold directory {n}" for n in own_netns if (state / "pods" / "holds" / n).exists()]
    left += [f"process {p}" for p in _processes_of(state)]
    assert not left, f"left behind: {left}"


def _pod_netns_names(system: System) -> list[str]:
    done = system.cli("pod", "list", "-A", "-o", "json", check=False)
    try:
        pods = json.loads(done.stdout) if done.returncode == 0 else []
    except json.JSONDecodeError:
        pods = []
    return [
        p["metadata"]["annotations"]["chaosbus.io/netns"]
        for p in pods
        if "chaosbus.io/netns" in p.get("metadata", {}).get("annotations", {})
    ]


def _processes_of(state: Path) -> list[str]:
    """Processes started for the system whose state dir is `state` (they inherit its environment)."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if proc.environ().get("CHAOSBUS_STATE_DIR") == str(state):
                found.append(f"pid {proc.pid}: {' '.join(proc.info['cmdline'] or [])[:120]}")
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def _pod(system: System, name: str) -> Pod:
    obj = system.pod(name)
    path = netns.netns_path(obj["metadata"]["annotations"]["chaosbus.io/netns"])
    ident = processid.parse(obj["status"]["containerStatuses"][0]["containerID"])
    assert ident is not None
    pid = ident.pid
    return Pod(name=name, ip=obj["status"]["podIP"], netns_path=path, pid=pid)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""
