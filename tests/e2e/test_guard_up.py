"""`chaosbus up` starts the SLO guard when a guard configuration exists: the guard runs as its own
NATS identity with its own key (made by `up`, 0600), and its halt is accepted by the injector.
Its objective here is a Prometheus nobody serves, which counts as not met: it halts by itself, the
operator resumes, and a guard (re-armed only once its objective holds again) does not fight that.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import prom
from helpers.live import eventually
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.privileged


@dataclass
class Up:
    env: dict[str, str]
    state: Path

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "chaosbus.cli", *args], env=self.env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def metric(self, service: str, name: str) -> float | None:
        port = None
        for line in (self.state / "logs" / f"{service}.log").read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and rec.get("metrics_port"):
                port = int(rec["metrics_port"])
        if port is None:
            return None
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        values = [s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name]
        return values[0] if values else None


@pytest.fixture
def up_with_guard(tmp_path: Path) -> Iterator[Up]:
    if os.geteuid() != 0:
        pytest.skip("needs root (the injector `chaosbus up` starts)")
    state = tmp_path / "state"
    state.mkdir()
    (state / "guard.yaml").write_text(
        f"name: up-guard\nprometheus: http://127.0.0.1:{prom.free_port()}\nquery: vector(1)\n"
        "criteria: '=='\nvalue: 1\ninterval: 0.5\ntimeout: 1\nfailures: 2\n"
    )
    env = {**os.environ, "CHAOSBUS_STATE_DIR": str(state), "CHAOSBUS_NODE": f"node-guard-{os.getpid() % 10000}"}
    env.pop("CHAOSBUS_NATS_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "chaosbus.cli", "up", "--port", "0", "--metrics-base-port", "0"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        eventually(lambda: (state / "nats.url").exists() and (state / "nats.url").read_text().strip(), timeout=60)
        yield Up(env, state)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_up_starts_the_guard_whose_own_key_halts_and_the_operator_resumes(up_with_guard: Up) -> None:
    up = up_with_guard

    def status() -> str:
        return up.cli("status")

    engaged = eventually(lambda: "ENGAGED" in (s := status()) and s, timeout=90, interval=0.5)
    assert "guard up-guard@" in engaged and "SLO guard up-guard" in engaged, engaged
    # The injector verified the guard key's signature and halted.
    eventually(lambda: up.metric("injector", "chaosbus_injector_halted") == 1.0, timeout=60, interval=0.5)
    keys, creds = up.state / "keys", up.state / "creds"
    for secret in (keys / "guard.key", creds / "guard.nk"):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600, secret
    assert up.metric("guard", "chaosbus_guard_halts_total") == 1.0

    up.cli("resume")  # the operator's key releases it
    eventually(lambda: up.metric("injector", "chaosbus_injector_halted") == 0.0, timeout=60, interval=0.5)
    # Still breached, but the guard re-arms only once its objective holds again: no fight.
    eventually(lambda: up.metric("guard", "chaosbus_guard_objective_met") == 0.0, timeout=30, interval=0.5)
    assert status().strip() == "kill switch: not engaged"
    assert up.metric("guard", "chaosbus_guard_halts_total") == 1.0
