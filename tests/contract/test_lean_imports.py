"""Idle memory (each service <= 80 MB RSS idle) depends on what a service imports at start:
the heavy client libraries load only in the role that needs them (kubernetes_asyncio ~70 MB for the
kube edges and the cluster injector, grpcio ~20 MB for a node that meets a CRI container ID).
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

HEAVY = ("kubernetes_asyncio", "grpc")
PROBE = (
    "import importlib, json, sys; importlib.import_module(sys.argv[1]); "
    "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in sys.argv[2:])))"
)


@pytest.mark.parametrize(
    "module", ["chaosbus.injector.app", "chaosbus.scheduler.app", "chaosbus.watcher.app", "chaosbus.recorder.app"]
)
def test_a_local_mode_service_loads_no_heavy_client(module: str) -> None:
    out = subprocess.run([sys.executable, "-c", PROBE, module, *HEAVY], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


# What `chaosbus get` and `chaosbus halt` must never import: each is tens of milliseconds of start-up
# (pyroute2 ~0.1 s, nats-py's websocket transport via aiohttp ~0.1 s, structlog with rich ~35 ms).
CLI_HEAVY = (
    "kubernetes_asyncio",
    "grpc",
    "pyroute2",
    "aiohttp",
    "yarl",
    "multidict",
    "structlog",
    "rich",
    "prometheus_client",
    "psutil",
    "croniter",
)
# Runs the real entry point against a real nats-server, then lists the heavy modules loaded by exit.
# A short command ends through os._exit (cli/main.py exit_now), which runs no atexit handler.
CLI_PROBE = (
    "import atexit, json, os, sys\n"
    "heavy = set(sys.argv[1].split(','))\n"
    "def report(): print('LOADED ' + json.dumps(sorted({m.split('.')[0] for m in sys.modules} & heavy)), flush=True)\n"
    "atexit.register(report)\n"
    "real_exit = os._exit\n"
    "os._exit = lambda code: (report(), real_exit(code))\n"
    "from chaosbus.cli.main import main\n"
    "main(sys.argv[2:])\n"
)


@pytest.mark.integration
@pytest.mark.parametrize(
    "command",
    [
        ["get", "networkchaos", "-A"],
        ["get", "networkchaos", "gone"],
        ["get", "podchaos", "-o", "yaml"],
        ["halt", "--reason", "test"],
        ["resume"],
    ],
    ids=" ".join,
)
def test_a_quick_cli_command_loads_no_heavy_module(command: list[str], nats_server: Any) -> None:
    done = subprocess.run(
        [sys.executable, "-c", CLI_PROBE, ",".join(CLI_HEAVY), "--nats", nats_server.url, *command],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode in (0, 1), done.stderr  # 1: `get` of an object that does not exist
    [loaded] = [line for line in done.stdout.splitlines() if line.startswith("LOADED ")]
    assert json.loads(loaded.removeprefix("LOADED ")) == [], done.stdout + done.stderr
