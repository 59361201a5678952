"""Shared fixtures: a real nats-server (port 0, JetStream in a temp dir) and a bus on it; a real
Kubernetes API server for the session when one can be had; and a session guard that fails the run
if chaosbus left a netns, veth, nftables table or process behind.

Under pytest-xdist (`make test` runs `-n auto --dist loadgroup`) each worker has its own session
fixtures, so the expensive ones are grouped onto one worker: every test on the real API server
shares one control plane, and each end-to-end file runs on one worker's live system. The guard
runs once, in the controller, after every worker has finished.
"""

from __future__ import annotations

import compileall
import os
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from chaosbus.common import bus as busmod
from chaosbus.common import natsserver, settings

if TYPE_CHECKING:
    from kube.controlplane import ControlPlane

ROOT = Path(__file__).resolve().parents[1]

# Property tests check what comes out, never how fast: a per-example deadline only measures the
# machine's load (2 cores shared by several test workers and services).
hypothesis_settings.register_profile("chaosbus", deadline=None, suppress_health_check=[HealthCheck.too_slow])
hypothesis_settings.load_profile("chaosbus")


def pytest_sessionstart(session: pytest.Session) -> None:
    # Tests start hundreds of service and CLI processes; with PYTHONDONTWRITEBYTECODE set, each
    # would compile chaosbus from source again (~1 s per process on a busy 2-core machine).
    if sys.dont_write_bytecode and not _is_worker(session.config):
        for folder in ("libs", "services", "cli", "bench"):
            compileall.compile_dir(ROOT / folder, quiet=1)
    # An interrupted earlier run's real node can leave kubelet's volume mounts in its temporary
    # folder; pytest fails this run at its end when it deletes that folder (helpers/tmpmounts.py).
    if os.geteuid() == 0 and not _is_worker(session.config):
        from helpers import tmpmounts

        released = tmpmounts.release()
        if released:
            print(f"\nreleased {len(released)} mounts an interrupted earlier run left under {tmpmounts.temp_root()}")


# First: pytest-xdist's own hook (not `trylast` in 3.8) turns the groups into node ids, and a group
# added after it is ignored, spreading a group's tests, and their session fixtures, over workers.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        group = _worker_group(item)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))


def pytest_collection_finish(session: pytest.Session) -> None:
    """Fail a run whose groups did not take: pytest-xdist marks a grouped test by suffixing its node
    id, and a pytest it cannot do that with would spread one group's session fixtures (a control
    plane, a kubelet, a live system) over every worker.
    """
    if not getattr(session.config.option, "loadgroup", False):  # set on xdist workers only
        return
    ungrouped = [i.nodeid for i in session.items if i.get_closest_marker("xdist_group") and "@" not in i.nodeid]
    if ungrouped:
        raise pytest.UsageError(
            f"pytest-xdist's loadgroup did not group {len(ungrouped)} tests (pytest {pytest.__version__}): "
            f"{ungrouped[0]}"
        )


def _worker_group(item: pytest.Item) -> str | None:
    """Tests that must share one worker's session fixture (see the module docstring)."""
    callspec = getattr(item, "callspec", None)
    # One kubelet per host (it owns /var/lib/kubelet): the real node's tests share one worker,
    # with a control plane of their own.
    if "real_node" in getattr(item, "fixturenames", ()):
        return "real-node"
    if "real_kube" in getattr(item, "fixturenames", ()) or (
        callspec is not None and callspec.params.get("kube") == "real"
    ):
        return "real-kube"
    if item.path.parent.name == "e2e" and "system" in getattr(item, "fixturenames", ()):
        return f"live-system-{item.path.stem}"
    return None


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


@pytest.fixture(autouse=True)
def fresh_settings() -> Iterator[None]:
    """Each test reads the settings of the environment it sets up (a process reads them once)."""
    settings.reset()
    yield
    settings.reset()


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[natsserver.EmbeddedServer]:
    server = natsserver.start(tmp_path / "nats", port=0)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def bus(nats_server: natsserver.EmbeddedServer) -> AsyncIterator[busmod.Bus]:
    b = await busmod.connect(nats_server.url, "test")
    await b.ensure()
    try:
        yield b
    finally:
        await b.close()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # CHAOSBUS_SKIP_LEFTOVER_GUARD=1 when several test runs share a machine: each would see the
    # others' pods. CI runs alone and never sets it.
    if os.geteuid() != 0 or os.environ.get("CHAOSBUS_SKIP_LEFTOVER_GUARD") == "1" or _is_worker(session.config):
        return
    from chaosbus.cli import leftovers

    found = leftovers.scan(netns_prefix="cb", link_prefixes=("cbv", "cbt"))
    if found:
        print("\nchaosbus left these behind after the test session:\n  " + "\n  ".join(found))
        session.exitstatus = 1


@pytest.fixture(scope="session")
def real_kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealKube]:
    """A real API server for the whole session: the cluster CHAOSBUS_TEST_KUBECONFIG names, else a
    control plane started from KUBEBUILDER_ASSETS (tests/kube/controlplane.py); skips saying why
    when there is neither.
    """
    from kube.controlplane import ControlPlane, assets

    named = os.environ.get("CHAOSBUS_TEST_KUBECONFIG", "")
    if named:
        yield RealKube(Path(named), None)
        return
    folder, why = assets()
    if folder is None:
        pytest.skip(f"no real API server: {why}; or set CHAOSBUS_TEST_KUBECONFIG")
    plane = ControlPlane(folder, tmp_path_factory.mktemp("controlplane")).start()
    try:
        yield RealKube(plane.kubeconfig, plane)
    finally:
        plane.stop()


@dataclass
class RealKube:
    kubeconfig: Path
    plane: ControlPlane | None  # None: an existing cluster, not ours to restart
