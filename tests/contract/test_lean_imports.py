"""Idle memory (issue 7: each service <= 80 MB RSS idle) depends on what a service imports at start:
the heavy client libraries load only in the role that needs them (kubernetes_asyncio ~70 MB for the
kube edges and the cluster injector, grpcio ~20 MB for a node that meets a CRI container ID).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("kubernetes_asyncio", "grpc")
PROBE = ("import importlib, json, sys; importlib.import_module(sys.argv[1]); "
         "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in sys.argv[2:])))")


@pytest.mark.parametrize("module", ["chaosbus.injector.app", "chaosbus.scheduler.app", "chaosbus.watcher.app",
                                    "chaosbus.recorder.app"])
def test_a_local_mode_service_loads_no_heavy_client(module: str) -> None:
    out = subprocess.run([sys.executable, "-c", PROBE, module, *HEAVY], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
