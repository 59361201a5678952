"""`chaosbus demo` (`make demo`): the whole system live on one machine in under a minute.

Starts `chaosbus up` (embedded NATS + four services) in a private state directory, three web
process pods and a client probing them, applies a NetworkChaos partition with `duration: 10s`
between the client and web-1, shows the probes fail and recover, prints the recorded status,
then tears everything down and checks that nothing is left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from chaosbus.cli import leftovers
from chaosbus.common import settings

BRIDGE, SUBNET = "cbdemo0", "10.215.0.0/24"
EXPERIMENT = """\
apiVersion: chaos-mesh.org/v1alpha1
kind: NetworkChaos
metadata:
  name: web-1-partition
  namespace: default
spec:
  action: partition
  mode: all
  selector:
    labelSelectors: {app: web}
    fieldSelectors: {metadata.name: web-1}
  direction: both
  target:
    mode: all
    selector:
      labelSelectors: {app: client}
  duration: 10s
"""


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def cli(*args: str, check: bool = True, quiet: bool = False, stdin: str | None = None) -> str:
    """Run the real `chaosbus` CLI, showing the command and its output."""
    if not quiet:
        print(f"$ chaosbus {' '.join(args)}", flush=True)
    done = subprocess.run(
        [sys.executable, "-m", "chaosbus.cli", *args],
        input=stdin,
        text=True,
        capture_output=True,
        env=os.environ.copy(),
    )
    out = (done.stdout + done.stderr).rstrip()
    if out and not quiet:
        print(out, flush=True)
    if check and done.returncode != 0:
        raise RuntimeError(f"chaosbus {' '.join(args)} failed: {out}")
    return done.stdout


def preflight() -> str | None:
    if os.geteuid() != 0:
        return "the demo creates network namespaces and nftables rules: run it as root"
    for tool in ("nft", "ip", "nsenter"):
        if shutil.which(tool) is None:
            return f"{tool} is missing (make demo installs it: nftables, iproute2, util-linux)"
    return None


async def run() -> int:
    problem = preflight()
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    state = Path(tempfile.mkdtemp(prefix="chaosbus-demo-"))
    os.environ["CHAOSBUS_STATE_DIR"] = str(state)
    os.environ.pop("CHAOSBUS_NATS_URL", None)
    settings.reset()  # the demo's own state dir, for this process too
    up = subprocess.Popen(
        [sys.executable, "-m", "chaosbus.cli", "up", "--port", "0", "--metrics-base-port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    started = time.monotonic()
    try:
        say("chaosbus up: embedded nats-server (JetStream) + watcher, scheduler, recorder, injector")
        print(await asyncio.to_thread(_first_line, up), flush=True)
        return await _scenario(state)
    finally:
        say("teardown")
        cli("pod", "rm", "--all", check=False)
        up.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            up.wait(15)
        if up.poll() is None:
            up.kill()
        found = leftovers.scan(bridge=BRIDGE)
        print(
            "nothing left behind: no network namespace, nftables table, veth or process of ours"
            if not found
            else "LEFT BEHIND:\n  " + "\n  ".join(found),
            flush=True,
        )
        shutil.rmtree(state, ignore_errors=True)
        print(f"demo took {time.monotonic() - started:.1f}s", flush=True)


def _first_line(up: subprocess.Popen[str]) -> str:
    assert up.stdout is not None
    return up.stdout.readline().rstrip()


async def _scenario(state: Path) -> int:
    say("three web pods (app=web) and a client, each a process in its own network namespace")
    ips = {}
    for i in range(3):
        out = cli(
            "pod",
            "run",
            "--name",
            f"web-{i}",
            "-l",
            "app=web",
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
            f"web-{i}",
        )
        ips[f"web-{i}"] = out.split("(ip ")[1].split(",")[0]
    targets = [f"{n}={ip}:8080" for n, ip in ips.items()]
    cli(
        "pod",
        "run",
        "--name",
        "client",
        "-l",
        "app=client",
        "--bridge",
        BRIDGE,
        "--subnet",
        SUBNET,
        "--",
        sys.executable,
        "-m",
        "chaosbus.cli.demoapp",
        "probe",
        *targets,
    )
    cli("pod", "list")
    client_log = state / "pods" / "default_client.log"
    say("the client's probes before any fault (✓ = HTTP 200 within 0.3 s)")
    await _follow(client_log, seconds=1.6)
    say("apply a NetworkChaos partition between the client and web-1, duration 10s")
    print(EXPERIMENT, flush=True)
    cli("apply", "-f", "-", stdin=EXPERIMENT)
    applied = time.monotonic()
    say("live: web-1 is cut off from the client; the others still answer")
    await _follow(client_log, seconds=5.0, status_every=2.5)
    cli("describe", "networkchaos", "web-1-partition", quiet=True)
    say("... until the 10s duration ends and chaosbus recovers it")
    await _follow(client_log, seconds=max(0.0, 12.5 - (time.monotonic() - applied)), status_every=2.5)
    say("after recovery every pod answers again")
    await _follow(client_log, seconds=1.5)
    say("the recorded status (Chaos Mesh's shape)")
    cli("get", "networkchaos")
    print(_status_yaml(cli("get", "networkchaos", "web-1-partition", "-o", "yaml", quiet=True)), flush=True)
    cli("delete", "networkchaos", "web-1-partition")
    return 0


async def _follow(log: Path, *, seconds: float, status_every: float = 0.0) -> None:
    """Print the client's new lines for `seconds`, with the experiment's phase now and then."""
    deadline = time.monotonic() + seconds
    next_status = time.monotonic() + status_every if status_every else float("inf")
    with open(log, encoding="utf-8", errors="replace") as f:
        f.seek(0, os.SEEK_END)
        while time.monotonic() < deadline:
            line = f.readline()
            if line:
                print("  client  " + line.rstrip(), flush=True)
                continue
            if time.monotonic() >= next_status:
                out = cli("get", "networkchaos", "web-1-partition", quiet=True, check=False)
                print("  status  " + " ".join(out.splitlines()[-1].split()), flush=True)
                next_status += status_every
            await asyncio.sleep(0.05)


def _status_yaml(doc: str) -> str:
    lines = doc.splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.startswith("status:")), len(lines))
    return "\n".join(lines[start:])
