"""Apply → in effect through a Kubernetes API server (the cluster-mode figure): create a
NetworkChaos partition of one pod through the API (what `kubectl create` does) and time it until the
kernel commits the partition table in the pod's netns; then delete it and time until the table is
gone. The floor, measured in the same run, is one API round trip (GET of the target Pod).

The API server is the one `CHAOSBUS_TEST_KUBECONFIG` names, else a control plane started from
`KUBEBUILDER_ASSETS` (tests/kube/controlplane.py), else the in-repo fake (tests/kubefake);
the services run in cluster mode (watcher and recorder `--kubeconfig`), one node injector, and the
test kubelet (tests/kube/kubelet.py) plays the pods: real processes in real netns, `process://` IDs.
Needs root. `python -m bench.bench_kube [--runs N] [--json PATH]`; `python -m bench` runs it too when
`CHAOSBUS_TEST_KUBECONFIG` is set (or with `--kube`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench import report
from bench.kernel import TableMonitor

ROOT = Path(__file__).resolve().parents[1]
NODE = f"bench-kube-{os.getpid() % 10000}"
BRIDGE, SUBNET = f"cbbk{os.getpid() % 10000}", f"10.218.{os.getpid() % 250}.0/24"
APPLY_TARGET = (0.050, 0.200)  # the single-target targets (p50, p99), same as local mode
CHAOS = {"apiVersion": "chaos-mesh.org/v1alpha1", "kind": "NetworkChaos",
         "spec": {"action": "partition", "mode": "all", "direction": "to",
                  "selector": {"labelSelectors": {"role": "target"}},
                  "target": {"mode": "all", "selector": {"labelSelectors": {"role": "peer"}}}}}


def _tests_on_path() -> None:
    """The API fake, its client and the test kubelet live with the tests: borrow them."""
    tests = str(ROOT / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)


@contextlib.contextmanager
def api_server(workdir: Path) -> Iterator[tuple[Path, str]]:
    """(kubeconfig, label): the real server named by CHAOSBUS_TEST_KUBECONFIG, else the fake."""
    real = os.environ.get("CHAOSBUS_TEST_KUBECONFIG", "")
    if real:
        yield Path(real), "real API server"
        return
    from kube.controlplane import ControlPlane, assets

    folder, _ = assets()
    if folder is not None:
        (workdir / "controlplane").mkdir()
        plane = ControlPlane(folder, workdir / "controlplane").start()
        try:
            yield plane.kubeconfig, "real API server (envtest control plane)"
        finally:
            plane.stop()
        return
    from kubefake import FakeApiServer

    fake = FakeApiServer(bookmark_interval=0.5).start()
    try:
        yield fake.write_kubeconfig(workdir / "kubeconfig"), "in-repo API fake"
    finally:
        fake.close()


@contextlib.contextmanager
def services(kubeconfig: Path, namespace: str, nats_url: str, workdir: Path) -> Iterator[None]:
    from chaosbus.common import signing

    signing.ensure_keys(workdir / "keys")
    env = {**os.environ, "CLUSTER_SCOPED": "false", "TARGET_NAMESPACE": namespace,
           "CHAOSBUS_KEYS_DIR": str(workdir / "keys")}
    base = ["--nats", nats_url, "--metrics-port", "0"]
    argv = {"watcher": ["--kubeconfig", str(kubeconfig), "--target-namespace", namespace], "scheduler": [],
            "injector": ["--node", NODE, "--journal", str(workdir / "journal.db")],
            "recorder": ["--kubeconfig", str(kubeconfig)]}
    logs = {name: workdir / f"{name}.log" for name in argv}
    procs = {name: subprocess.Popen([sys.executable, "-m", f"chaosbus.{name}", *base, *extra], env=env,
                                    stdout=logs[name].open("w"), stderr=subprocess.STDOUT)
             for name, extra in argv.items()}
    try:
        deadline = time.monotonic() + 90
        while not all("ready" in logs[n].read_text() for n in procs):
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs.values()):
                raise RuntimeError(f"services did not start; logs in {workdir}")
            time.sleep(0.1)
        yield
    finally:
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()


def _wait(check: Any, limit_s: float, what: str) -> float:
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > limit_s:
            raise TimeoutError(f"{what}: not within {limit_s} s")
        time.sleep(0.001)
    return time.time()


def measure(runs: int) -> dict[str, Any]:
    _tests_on_path()
    from kube.client import KubeClient
    from kube.crds import install_crds
    from kube.kubelet import Kubelet

    from chaosbus.common import natsserver
    from chaosbus.common import netns as nsutil
    from chaosbus.injector.faults.partition import table_name

    namespace = f"cbbench-{os.getpid()}"
    with tempfile.TemporaryDirectory(prefix="chaosbus-bench-kube-") as tmp, api_server(Path(tmp)) as (cfg, label):
        client = KubeClient(cfg)
        install_crds(client)
        client.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        server = natsserver.start(Path(tmp) / "nats")
        kubelet = Kubelet(client, NODE, bridge=BRIDGE, subnet=SUBNET)
        monitor = TableMonitor()
        try:
            kubelet.register_node()
            target = kubelet.run_pod("target", namespace, {"role": "target"}, netns=True)
            kubelet.run_pod("peer", namespace, {"role": "peer"}, netns=True)
            assert target.netns is not None
            path = nsutil.netns_path(target.netns)
            monitor.watch(path)
            monitor.start()
            with services(cfg, namespace, server.url, Path(tmp)):
                return _runs(client, monitor, path, namespace, runs, table_name) | {"api": label}
        finally:
            monitor.close()
            kubelet.close()
            server.stop()
            with contextlib.suppress(Exception):
                client.delete(f"/api/v1/namespaces/{namespace}")


def _runs(client: Any, monitor: TableMonitor, path: str, namespace: str, runs: int, table_name: Any) -> dict[str, Any]:
    plural = f"/apis/chaos-mesh.org/v1alpha1/namespaces/{namespace}/networkchaos"
    apply_s: list[float] = []
    recover_s: list[float] = []
    floor_s: list[float] = []
    for i in range(runs + 1):  # the first run warms every cache up and is not counted
        for _ in range(3):
            t = time.perf_counter()
            client.get(f"/api/v1/namespaces/{namespace}/pods/target")
            floor_s.append(time.perf_counter() - t)
        applied, recovered = _one_run(client, monitor, path, plural, f"bench-{i}", table_name)
        if i:
            apply_s.append(applied)
            recover_s.append(recovered)
    return {"apply": apply_s, "recover": recover_s, "floor": floor_s[3:]}


def _one_run(client: Any, monitor: TableMonitor, path: str, plural: str, name: str,
             table_name: Any) -> tuple[float, float]:
    """(create -> table committed, delete -> table gone) for one experiment, in seconds."""
    t0 = time.time()
    created = client.create(plural, {**CHAOS, "metadata": {"name": name, "namespace": plural.split("/")[5]}})
    table = table_name(created["metadata"]["uid"], ".")
    _wait(lambda: monitor.state(path, table)[0], 30, "partition in effect")
    applied = monitor.state(path, table)[1] - t0
    t1 = time.time()
    client.delete(f"{plural}/{name}")
    _wait(lambda: not monitor.state(path, table)[0], 30, "partition gone")
    recovered = monitor.state(path, table)[1] - t1
    _wait(lambda: client.get(f"{plural}/{name}") is None, 30, "object removed")
    return applied, recovered


def rows(raw: dict[str, Any]) -> report.Section:
    floor = report.pct(raw["floor"], 50) if raw["floor"] else None
    section = report.Section(f"through the Kubernetes API ({raw['api']}): create/delete -> kernel, 1 target")
    for rid, what, values in (("kube.apply.1", "API create -> partition in effect", raw["apply"]),
                              ("kube.recover.1", "API delete -> partition gone", raw["recover"])):
        p50, p99 = report.pct(values, 50), report.pct(values, 99)
        row = report.Row(rid, what, f"{len(values)} runs", report.fmt_s(p50), report.fmt_s(p99),
                         floor=report.fmt_s(floor), vs_floor=report.ratio(p50, floor),
                         data={"values": values, "floor_p50": floor})
        if rid == "kube.apply.1":
            row.target = "p50<=50 ms, p99<=200 ms"
            row.verdict = report.verdict(p50 <= APPLY_TARGET[0] and p99 <= APPLY_TARGET[1])
        section.rows.append(row)
    section.rows.append(report.Row("kube.floor.get", "one API round trip (GET pod)", f"{len(raw['floor'])}",
                                   report.fmt_s(floor), report.fmt_s(report.pct(raw["floor"], 99))))
    return section


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_kube: needs root (network namespaces, nftables)", file=sys.stderr)
        return 2
    section = rows(measure(args.runs))
    print(report.render([section]))
    if args.json:
        args.json.write_text(json.dumps(report.to_json([section]), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
