"""`chaosbus up`: an embedded nats-server with JetStream and the four services as child
processes, plus the SLO guard when a guard configuration exists (`<state dir>/guard.yaml`, or
`--guard-config`), restarted with backoff when they die (as Kubernetes restarts a pod), stopped
cleanly on Ctrl-C or SIGTERM. A nats-server that dies is restarted too, on the same port with the same
store; the services reconnect and their followers resume on their own (natsclient.resume_on_reconnect).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from chaosbus.common import bus as busmod
from chaosbus.common import config, natsauth, natsserver, settings, signing, subjects, webtokens
from chaosbus.common.store import ObjectStore

SERVICES = ("watcher", "scheduler", "recorder", "injector")
METRICS_PORTS = {"watcher": 9101, "scheduler": 9102, "injector": 9103, "recorder": 9104}
GUARD_METRICS_PORT = 9106  # with --metrics-base-port N: N+4, after the four services


@dataclass
class Child:
    name: str
    argv: list[str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    backoff: float = 0.5
    started: float = field(default=0.0)

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
            )
        self.started = time.monotonic()

    def terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def service_argv(
    name: str, url: str, metrics_port: int, node: str, journal: Path | None = None, creds: Path | None = None
) -> list[str]:
    argv = [sys.executable, "-m", f"chaosbus.{name}", "--nats", url, "--metrics-port", str(metrics_port)]
    if creds is not None:
        argv += ["--nats-creds", str(creds / f"{natsauth.user_name(name, node if name == 'injector' else '')}.nk")]
    if name != "injector":
        return argv
    return argv + ["--node", node] + (["--journal", str(journal)] if journal else [])


def guard_argv(url: str, config_file: Path, metrics_port: int, creds: Path) -> list[str]:
    """`chaosbus guard` on the configuration file, as its own identity with its own key."""
    return [
        *(sys.executable, "-m", "chaosbus.cli", "--nats", url, "--nats-creds", str(creds / "guard.nk")),
        *("guard", "--config", str(config_file), "--metrics-port", str(metrics_port)),
    ]


def guard_metrics_port(base: int | None) -> int:
    if base is None:
        return GUARD_METRICS_PORT
    return 0 if base == 0 else base + len(SERVICES)


@dataclass
class Nats:
    """The embedded server, restarted on the same port and store when it dies."""

    server: natsserver.EmbeddedServer
    log: Path
    config_file: Path | None = None
    restarts: int = 0
    down_since: float | None = None

    def check(self, now: float) -> bool:
        """Restart a dead server (retrying every 0.5 s); True when it was just restarted."""
        if self.server.process.poll() is None:
            return False
        if self.down_since is None:
            self.down_since = now
            print(f"chaosbus up: nats-server exited ({self.server.process.returncode}); restarting", flush=True)
        try:
            self.server = natsserver.start(
                self.server.store_dir, port=self.server.port, log_file=self.log, config_file=self.config_file
            )
        except natsserver.ServerError as e:
            print(f"chaosbus up: nats-server restart failed ({e}); retrying", flush=True)
            return False
        self.restarts += 1
        self.down_since = None
        return True


async def register_node(url: str, node: str, admin: natsauth.ClientAuth | None = None) -> None:
    """The one admin step: streams and buckets declared as the subject table says, and local
    mode's node registration (a kubelet's job): a Node object selectors can match.
    """
    bus = await busmod.connect(url, "chaosbus-up", auth=admin)
    try:
        await bus.ensure()
        store = ObjectStore(await bus.bucket(subjects.OBJECT_STORE))
        await store.apply(
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": node, "labels": {"kubernetes.io/hostname": node}},
            },
            immutable_spec=False,
        )
    finally:
        await bus.close()


async def up(
    *,
    port: int,
    store_dir: Path | None,
    metrics_base: int | None,
    node: str,
    quiet: bool = False,
    guard_config: Path | None = None,
) -> int:
    state = config.state_dir()
    state.mkdir(parents=True, exist_ok=True)
    # Credentials and keys are made at first start and reused (0600 files in a 0700 directory):
    # whoever cannot read them cannot connect to this server, let alone command a fault.
    conf = natsauth.prepare_local(state, node)
    admin = natsauth.ClientAuth(natsauth.seed_file(natsauth.ADMIN, state), admin=True)
    if config.url_file().exists():
        existing = config.url_file().read_text().strip()
        with contextlib.suppress(Exception):
            bus = await busmod.connect(existing, "chaosbus-up-probe", connect_timeout=0.5, auth=admin)
            await bus.close()
            print(f"error: chaosbus is already up at {existing}", file=sys.stderr)
            return 1
    logs = state / "logs"
    logs.mkdir(exist_ok=True)
    signing.ensure_keys(signing.keys_dir())  # first start: the scheduler's, the operator's and the guard's key pairs
    webtokens.ensure_tokens(webtokens.tokens_dir(state))  # for `chaosbus dashboard`
    server = natsserver.start(
        store_dir or state / "nats", port=port, log_file=logs / "nats-server.log", config_file=conf
    )
    nats = Nats(server, logs / "nats-server.log", conf)
    journal = None if settings.current().journal else state / "journal" / f"injector-{subjects.token(node)}.db"
    creds = natsauth.creds_dir(state)
    children = [
        Child(
            name,
            service_argv(name, server.url, _metrics_port(name, metrics_base), node, journal, creds),
            logs / f"{name}.log",
        )
        for name in SERVICES
    ]
    guard_file = guard_config or state / "guard.yaml"
    if guard_file.exists():
        argv = guard_argv(server.url, guard_file, guard_metrics_port(metrics_base), creds)
        children.append(Child("guard", argv, logs / "guard.log"))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        config.url_file().write_text(server.url + "\n")
        await register_node(server.url, node, admin)
        for c in children:
            c.start()
        guarded = f"; SLO guard from {guard_file}" if any(c.name == "guard" for c in children) else ""
        print(f"chaosbus up: NATS at {server.url} (node {node}); logs in {logs}{guarded}", flush=True)
        if not quiet:
            print("export CHAOSBUS_NATS_URL=" + server.url, flush=True)
        await _keep_alive(children, stop, nats)
    finally:
        for c in children:
            c.terminate()
        for c in children:
            c.stop()
        nats.server.stop()
        with contextlib.suppress(FileNotFoundError):
            config.url_file().unlink()
        print("chaosbus up: stopped", flush=True)
    return 0


def _metrics_port(name: str, base: int | None) -> int:
    if base is None:
        return METRICS_PORTS[name]
    return 0 if base == 0 else base + SERVICES.index(name)


async def _keep_alive(children: list[Child], stop: asyncio.Event, nats: Nats | None = None) -> None:
    """Restart a dead service with exponential backoff (reset after a healthy minute), and a dead
    nats-server at once.
    """
    due: dict[str, float] = {}
    while not stop.is_set():
        now = time.monotonic()
        if nats is not None:
            nats.check(now)
        for c in children:
            if c.proc is None or c.proc.poll() is None:
                continue
            if c.name not in due:
                c.backoff = 0.5 if now - c.started > 60 else min(30.0, c.backoff * 2)
                due[c.name] = now + c.backoff
                print(f"chaosbus up: {c.name} exited ({c.proc.returncode}); restarting in {c.backoff:.1f}s", flush=True)
            elif now >= due[c.name]:
                del due[c.name]
                c.restarts += 1
                c.start()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=0.2)
