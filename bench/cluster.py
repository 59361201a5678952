"""The system under test, started the way `chaosbus up` starts it but with several injectors: an
embedded nats-server (port 0, JetStream in a temp dir) and the real service entry points
(`python -m chaosbus.watcher|scheduler|recorder|injector --nats URL --metrics-port 0`), each
injector with its own `--node node-i` and journal. Also a sampler of every process's RSS and CPU.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from chaosbus.common import natsauth, natsserver, signing

SERVICES = ("watcher", "scheduler", "recorder")
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Service:
    name: str  # watcher, scheduler, recorder, injector/node-0, nats-server
    proc: subprocess.Popen[bytes]
    ps: psutil.Process
    log: Path
    extra: list[str] = field(default_factory=list)
    log_offset: int = 0  # where this process's lines start in `log` (a restart appends)

    @property
    def kind(self) -> str:
        return self.name.split("/", 1)[0]


@dataclass
class Sample:
    t: float
    rss: int  # bytes
    cpu: float  # seconds, self + waited-for children (an injector's nsenter/nft spawns)


@dataclass
class Cluster:
    workdir: Path
    nodes: list[str]
    server: natsserver.EmbeddedServer | None = None
    services: list[Service] = field(default_factory=list)
    auth: bool = True  # as `chaosbus up` runs: an nkey per component, allow-lists enforced
    unsigned: bool = False  # CHAOSBUS_UNSIGNED for the scheduler and injectors: what signing costs

    @property
    def creds(self) -> Path:
        return natsauth.creds_dir(self.workdir / "state")

    @property
    def keys(self) -> Path:
        return self.workdir / "keys"

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.url)

    def start(self, log_level: str = "info") -> None:
        logs = self.workdir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        signing.ensure_keys(self.keys)  # as `chaosbus up` does at first start
        os.environ["CHAOSBUS_KEYS_DIR"] = str(self.keys)  # the harness's own `chaosbus halt` signs with them
        conf = natsauth.prepare_local(self.workdir / "state", self.nodes) if self.auth else None
        self.server = natsserver.start(
            self.workdir / "nats", port=0, log_file=logs / "nats-server.log", config_file=conf
        )
        self.services.append(
            Service(
                "nats-server", self.server.process, psutil.Process(self.server.process.pid), logs / "nats-server.log"
            )
        )
        if self.auth:
            self._declare()
        for svc in SERVICES:
            self._spawn(svc, self._creds(svc), log_level)
        for node in self.nodes:
            self._spawn(
                "injector",
                [
                    "--node",
                    node,
                    "--journal",
                    str(self.workdir / "journal" / f"{node}.db"),
                    *self._creds(natsauth.user_name("injector", node)),
                    *os.environ.get("BENCH_INJECTOR_ARGS", "").split(),
                ],
                log_level,
                label=f"injector/{node}",
            )

    def _creds(self, user: str) -> list[str]:
        return ["--nats-creds", str(self.creds / f"{user}.nk")] if self.auth else []

    def _declare(self) -> None:
        """The admin step `chaosbus up` takes; then this process (the harness's own connections)
        acts as admin, and the `chaosbus` commands it times as the CLI identity."""
        admin = self.creds / f"{natsauth.ADMIN}.nk"
        subprocess.run(
            [sys.executable, "-m", "chaosbus.cli", "--nats", self.url, "--nats-creds", str(admin), "declare"],
            check=True,
            capture_output=True,
            timeout=60,
            cwd=ROOT,
        )
        natsauth.use(natsauth.ClientAuth(admin, admin=True))
        os.environ["CHAOSBUS_NATS_CREDS"] = str(self.creds / "cli.nk")

    def _spawn(self, svc: str, extra: list[str], log_level: str, label: str | None = None) -> None:
        name = label or svc
        log = self.workdir / "logs" / f"{name.replace('/', '-')}.log"
        argv = [
            sys.executable,
            "-m",
            f"chaosbus.{svc}",
            "--nats",
            self.url,
            "--metrics-port",
            "0",
            "--log-level",
            log_level,
            *extra,
        ]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "CHAOSBUS_KEYS_DIR": str(self.keys)}
        env.pop("CHAOSBUS_UNSIGNED", None)
        if self.unsigned:
            env["CHAOSBUS_UNSIGNED"] = "1"
        offset = log.stat().st_size if log.exists() else 0
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                cwd=ROOT,
                preexec_fn=_die_with_parent,
            )  # before any thread exists
        self.services.append(Service(name, proc, psutil.Process(proc.pid), log, extra, offset))

    def restart_signing(self, *, unsigned: bool, log_level: str = "info") -> None:
        """The scheduler and every injector again, signing (and verifying) or not; then ready."""
        self.unsigned = unsigned
        again = [s for s in self.services if s.kind in ("scheduler", "injector")]
        for s in again:
            s.proc.terminate()
        for s in again:
            try:
                s.proc.wait(10)
            except subprocess.TimeoutExpired:
                s.proc.kill()
                s.proc.wait()
            self.services.remove(s)
            self._spawn(s.kind, s.extra, log_level, label=s.name)
        self.wait_ready()

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until every service logged that it is ready (or one died)."""
        marks = {
            "watcher": "initial snapshot",
            "scheduler": "scheduler ready",
            "recorder": "recorder ready",
            "injector": "injector ready",
        }
        deadline = time.monotonic() + timeout
        pending = [s for s in self.services if s.kind in marks]
        while pending:
            for s in list(pending):
                if s.proc.poll() is not None:
                    raise RuntimeError(f"{s.name} exited with {s.proc.returncode}; see {s.log}")
                if marks[s.kind].encode() in s.log.read_bytes()[s.log_offset :]:
                    pending.remove(s)
            if time.monotonic() > deadline:
                raise RuntimeError(f"not ready after {timeout:.0f}s: {[s.name for s in pending]}")
            time.sleep(0.05)

    def find(self, name: str) -> Service:
        return next(s for s in self.services if s.name == name)

    def dead(self) -> list[str]:
        return [f"{s.name} (exit {s.proc.returncode})" for s in self.services if s.proc.poll() is not None]

    def stop(self) -> list[str]:
        """SIGTERM every service (then SIGKILL), then the server; returns processes that survived."""
        ours = [s for s in self.services if s.name != "nats-server"]
        for s in ours:
            if s.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    s.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for s in ours:
            try:
                s.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                s.proc.kill()
                s.proc.wait()
        if self.server is not None:
            self.server.stop()
        return [s.name for s in self.services if s.proc.poll() is None]


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the harness dies, however it dies (PR_SET_PDEATHSIG)."""
    ctypes.CDLL(None).prctl(1, signal.SIGTERM, 0, 0, 0)


WORKDIR_PREFIX = "chaosbus-bench-"
_WORKDIR = re.compile(rf"{WORKDIR_PREFIX}(\d+)-")


def remove_stale() -> list[str]:
    """Processes and temp dirs of harness runs whose process is gone (a SIGKILLed run)."""
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        match = _WORKDIR.search(" ".join(p.info["cmdline"] or []))
        if match and not _alive(int(match.group(1))):
            with contextlib.suppress(psutil.Error):
                p.terminate()
                found.append(f"process {p.info['pid']}")
    tmp = Path(tempfile.gettempdir())
    for d in tmp.glob(f"{WORKDIR_PREFIX}*"):
        match = _WORKDIR.search(d.name + "-")
        if match and not _alive(int(match.group(1))):
            shutil.rmtree(d, ignore_errors=True)
            found.append(f"dir {d}")
    return found


def _alive(pid: int) -> bool:
    return psutil.pid_exists(pid)


class Sampler:
    """RSS and CPU of every service process, every `interval` seconds, on a thread."""

    def __init__(self, cluster: Cluster, interval: float = 0.25) -> None:
        self.cluster, self.interval = cluster, interval
        self.samples: dict[str, list[Sample]] = {s.name: [] for s in cluster.services}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)

    def sample_now(self) -> None:
        now = time.time()
        for s in self.cluster.services:
            try:
                with s.ps.oneshot():
                    cpu = s.ps.cpu_times()
                    rss = s.ps.memory_info().rss
            except psutil.Error:
                continue
            total = cpu.user + cpu.system + cpu.children_user + cpu.children_system
            self.samples[s.name].append(Sample(now, rss, total))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample_now()
            self._stop.wait(self.interval)

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds so far of every service process (self + waited-for children)."""
        out = {}
        for s in self.cluster.services:
            try:
                c = s.ps.cpu_times()
            except psutil.Error:
                continue
            out[s.name] = c.user + c.system + c.children_user + c.children_system
        return out

    def window(self, name: str, start: float, end: float) -> dict[str, float]:
        """CPU % of one core, and last/peak RSS (MB), of `name` between two wall-clock times."""
        inside = sorted((x for x in self.samples[name] if start <= x.t <= end), key=lambda x: x.t)
        if len(inside) < 2:
            return {"cpu_pct": float("nan"), "rss_mb": float("nan"), "rss_peak_mb": float("nan"), "cpu_s": 0.0}
        cpu_s = inside[-1].cpu - inside[0].cpu
        wall = inside[-1].t - inside[0].t
        return {
            "cpu_pct": 100.0 * cpu_s / wall if wall > 0 else float("nan"),
            "cpu_s": cpu_s,
            "rss_mb": inside[-1].rss / 2**20,
            "rss_peak_mb": max(x.rss for x in inside) / 2**20,
        }
