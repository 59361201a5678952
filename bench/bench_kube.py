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
CHAOS = {
    "apiVersion": "chaos-mesh.org/v1alpha1",
    "kind": "NetworkChaos",
    "spec": {
        "action": "partition",
        "mode": "all",
        "direction": "to",
        "selector": {"labelSelectors": {"role": "target"}},
        "target": {"mode": "all", "selector": {"labelSelectors": {"role": "peer"}}},
    },
}


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
def services(
    kubeconfig: Path, namespace: str, nats_url: str, workdir: Path, injector: tuple[str, ...] = ("--node", NODE)
) -> Iterator[None]:
    """The four services in cluster mode against the API server; `injector`: the node injector's
    own flags (its node name, its container runtime).
    """
    from chaosbus.common import signing

    signing.ensure_keys(workdir / "keys")
    env = {
        **os.environ,
        "CLUSTER_SCOPED": "false",
        "TARGET_NAMESPACE": namespace,
        "CHAOSBUS_KEYS_DIR": str(workdir / "keys"),
    }
    base = ["--nats", nats_url, "--metrics-port", "0"]
    argv = {
        "watcher": ["--kubeconfig", str(kubeconfig), "--target-namespace", namespace],
        "scheduler": [],
        "injector": [*injector, "--journal", str(workdir / "journal.db")],
        "recorder": ["--kubeconfig", str(kubeconfig)],
    }
    logs = {name: workdir / f"{name}.log" for name in argv}
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", f"chaosbus.{name}", *base, *extra],
            env=env,
            stdout=logs[name].open("w"),
            stderr=subprocess.STDOUT,
        )
        for name, extra in argv.items()
    }
    try:
        deadline = time.monotonic() + 90
        while not all("ready" in logs[n].read_text() for n in procs):
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs.values()):
                raise RuntimeError(f"services did not start; logs in {workdir}")
            time.sleep(0.1)
        yield
    except Exception:
        # What each service last said, to tell which hop a timed-out run stopped at.
        for name in ("scheduler", "injector", "watcher"):
            lines = logs[name].read_text(errors="replace").splitlines()[-10:]
            print(f"--- {name} (last {len(lines)} lines)", *(line[:240] for line in lines), sep="\n", file=sys.stderr)
        raise
    finally:
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()


def _wait_running(nats_url: str, namespace: str, names: list[str], limit_s: float = 30.0) -> None:
    """Until the watcher has projected each pod Running with its containers. The bench times
    experiments on running pods; one created within milliseconds of a pod's start can select the
    pod before its containers are projected, and that target then fails ("What is left")."""
    import asyncio

    from chaosbus.common import bus as busmod
    from chaosbus.common import subjects

    async def wait() -> None:
        bus = await busmod.connect(nats_url, "bench-kube-projection")
        try:
            targets = await bus.bucket(subjects.TARGETS)
            deadline = time.monotonic() + limit_s
            for name in names:
                while True:
                    pod = await targets.get(subjects.target_pod_key(namespace, name))
                    if pod is not None and pod.phase == "Running" and pod.containers:
                        break
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"pod {namespace}/{name} not projected running within {limit_s} s")
                    await asyncio.sleep(0.02)
        finally:
            await bus.close()

    asyncio.run(wait())


def _wait(check: Any, limit_s: float, what: str) -> float:
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > limit_s:
            raise TimeoutError(f"{what}: not within {limit_s} s")
        time.sleep(0.001)
    return time.time()


class EventClock:
    """When the watcher published each experiment's first event on NATS (by object name): the
    watcher's lag is that time minus the API create's start.
    """

    def __init__(self, nats_url: str) -> None:
        import asyncio
        import threading

        self.seen: dict[str, float] = {}
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(nats_url,), name="event-clock", daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("could not subscribe to the object events")

    def _run(self, url: str) -> None:
        import asyncio

        import msgspec
        import nats

        from chaosbus.common import messages as m
        from chaosbus.common import subjects

        async def main() -> None:
            async def quiet(_e: Exception) -> None:  # the server stops before this thread does
                return None

            nc = await nats.connect(url, allow_reconnect=False, error_cb=quiet)

            async def on_event(msg: Any) -> None:
                try:
                    event = msgspec.json.decode(msg.data, type=m.ObjectEvent)
                except msgspec.DecodeError:
                    return
                if event.type == "ADDED":
                    self.seen.setdefault(event.name, time.time())

            await nc.subscribe(subjects.OBJECT_EVENTS, cb=on_event)
            await nc.flush()
            self._ready.set()
            await asyncio.Event().wait()  # subscribed until the process ends

        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(main())


def measure(runs: int, sizes: tuple[int, ...] = (1,)) -> dict[str, Any]:
    """Per size N: N target pods (process pods of the test kubelet, each in its own netns) and one
    peer; `runs` experiments partitioning all N from the peer (a tenth of them, at least 3, at
    N >= 100).
    """
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
            kubelet.run_pod("peer", namespace, {"role": "peer"}, netns=True)
            paths: list[str] = []
            monitor.start()
            clock = EventClock(server.url)
            out: dict[str, Any] = {"api": label, "sizes": {}}
            with services(cfg, namespace, server.url, Path(tmp)):
                for size in sorted(sizes):
                    while len(paths) < size:
                        pod = kubelet.run_pod(f"target-{len(paths)}", namespace, {"role": "target"}, netns=True)
                        assert pod.netns is not None
                        paths.append(nsutil.netns_path(pod.netns))
                        monitor.watch(paths[-1])
                    _wait_running(server.url, namespace, ["peer", *(f"target-{i}" for i in range(size))])
                    n_runs = runs if size < 100 else max(3, runs // 10)
                    out["sizes"][str(size)] = _runs(
                        client, monitor, paths, namespace, n_runs, table_name, clock, f"bench-{size}"
                    )
            # Compatibility with one-size readers (bench/__main__.py, docs): the smallest size's figures.
            return out | out["sizes"][str(min(sizes))]
        finally:
            monitor.close()
            kubelet.close()
            server.stop()
            with contextlib.suppress(Exception):
                client.delete(f"/api/v1/namespaces/{namespace}")


def _runs(
    client: Any,
    monitor: TableMonitor,
    paths: list[str],
    namespace: str,
    runs: int,
    table_name: Any,
    clock: EventClock,
    prefix: str,
    chaos: dict[str, Any] = CHAOS,
) -> dict[str, Any]:
    """`runs` experiments (after one warm-up), each timed by `_one_run`, with three API GETs before
    each as the floor.
    """
    plural = f"/apis/chaos-mesh.org/v1alpha1/namespaces/{namespace}/networkchaos"
    out: dict[str, list[float]] = {"apply": [], "recover": [], "removed": [], "floor": [], "watch_lag": []}
    for i in range(runs + 1):  # the first run warms every cache up and is not counted
        for _ in range(3):
            t = time.perf_counter()
            client.get(f"/api/v1/namespaces/{namespace}")
            if i:
                out["floor"].append(time.perf_counter() - t)
        name = f"{prefix}-{i}"
        applied, recovered, removed, created_at = _one_run(client, monitor, paths, plural, name, table_name, chaos)
        if i:
            out["apply"].append(applied)
            out["recover"].append(recovered)
            out["removed"].append(removed)
            if name in clock.seen:
                out["watch_lag"].append(clock.seen[name] - created_at)
    return dict(out)


def _one_run(
    client: Any, monitor: TableMonitor, paths: list[str], plural: str, name: str, table_name: Any, chaos: dict[str, Any]
) -> tuple[float, float, float, float]:
    """(create -> every target's table committed, delete -> every table gone, delete -> the object
    removed (its finalizer released), create's start) for one experiment: the slowest target
    decides, as "all in effect" means.
    """
    limit = 30 + len(paths) * 0.5
    t0 = time.time()
    created = client.create(plural, {**chaos, "metadata": {"name": name, "namespace": plural.split("/")[5]}})
    table = table_name(created["metadata"]["uid"], ".")
    _wait(lambda: all(monitor.state(p, table)[0] for p in paths), limit, "partition in effect")
    applied = max(monitor.state(p, table)[1] for p in paths) - t0
    t1 = time.time()
    client.delete(f"{plural}/{name}")
    _wait(lambda: not any(monitor.state(p, table)[0] for p in paths), limit, "partition gone")
    recovered = max(monitor.state(p, table)[1] for p in paths) - t1
    removed = _wait(lambda: client.get(f"{plural}/{name}") is None, limit, "object removed") - t1
    return applied, recovered, removed, t0


def figure_rows(section: report.Section, prefix: str, size: int | str, figures: dict[str, Any]) -> None:
    """The rows of one size: apply, recovery, removal and the watcher's lag, against the API floor."""
    floor = report.pct(figures["floor"], 50) if figures["floor"] else None
    for rid, what, values in (
        (f"{prefix}.apply.{size}", f"API create -> partition in effect on all {size}", figures["apply"]),
        (f"{prefix}.recover.{size}", f"API delete -> partition gone on all {size}", figures["recover"]),
        (f"{prefix}.removed.{size}", "API delete -> object gone (finalizer released)", figures.get("removed") or []),
        (f"{prefix}.watch_lag.{size}", "API create -> watcher's event on NATS", figures.get("watch_lag") or []),
    ):
        if not values:
            continue
        p50, p99 = report.pct(values, 50), report.pct(values, 99)
        row = report.Row(
            rid,
            what,
            f"{len(values)} runs",
            report.fmt_s(p50),
            report.fmt_s(p99),
            floor=report.fmt_s(floor),
            vs_floor=report.ratio(p50, floor),
            data={"values": values, "floor_p50": floor},
        )
        if rid == "kube.apply.1":
            row.target = "p50<=50 ms, p99<=200 ms"
            row.verdict = report.verdict(p50 <= APPLY_TARGET[0] and p99 <= APPLY_TARGET[1])
        section.rows.append(row)
    section.rows.append(
        report.Row(
            f"{prefix}.floor.get.{size}",
            "one API round trip (GET namespace)",
            f"{len(figures['floor'])}",
            report.fmt_s(floor),
            report.fmt_s(report.pct(figures["floor"], 99)),
        )
    )


def rows(raw: dict[str, Any]) -> report.Section:
    section = report.Section(f"through the Kubernetes API ({raw['api']}): create/delete -> kernel")
    for size, figures in sorted((raw.get("sizes") or {"1": raw}).items(), key=lambda kv: int(kv[0])):
        figure_rows(section, "kube", size, figures)
    return section


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--sizes", default="1,100", help="targets per experiment, comma-separated")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_kube: needs root (network namespaces, nftables)", file=sys.stderr)
        return 2
    section = rows(measure(args.runs, tuple(int(x) for x in args.sizes.split(","))))
    print(report.render([section]))
    if args.json:
        args.json.write_text(json.dumps(report.to_json([section]), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
