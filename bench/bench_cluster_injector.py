"""The memory of the services that work through the Kubernetes API, the figures their Deployments'
requests rest on, against the in-repo API fake (the server does not change what a process holds).
The cluster injector: RSS idle and under a PodChaos burst. Idle: once ready, after a warm-up, the
largest of a window of samples. Burst: one pod-failure command over N pods (each patched to the
pause image, its originals kept in its journal and annotations), then its recover; the peak over
both. The `--kube` watcher, the recorder in cluster mode and the auth service: RSS idle, the same
way. Each Deployment in deploy/k8s requests at least the idle figure docs/deploy.md documents
(tests/contract/test_deploy_memory.py checks the manifests against the document).

`python -m bench.bench_cluster_injector [--pods N] [--json PATH]` (no root needed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PAUSE = "registry.k8s.io/pause:3.9"


def _tests_on_path() -> None:
    """The API fake, its client and the test signing keys live with the tests: borrow them."""
    tests = str(ROOT / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)


class RssSampler:
    """The process's RSS (MiB) every `interval` seconds, on a thread, with when each was taken."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        import psutil

        self.ps, self.interval = psutil.Process(pid), interval
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.samples.append((time.monotonic(), self.ps.memory_info().rss / 2**20))
            except Exception:  # the process ended
                return

    def peak(self, since: float, until: float) -> float:
        return max((rss for t, rss in self.samples if since <= t <= until), default=float("nan"))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)


def _readyz(port: int) -> int:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


def _command(pods: list[dict[str, Any]], op: str, uid: str) -> Any:
    from chaosbus.common import messages as m
    from chaosbus.common import subjects

    actions = [
        m.TargetAction(
            target_id=f"{p['metadata']['namespace']}/{p['metadata']['name']}",
            op=op,  # type: ignore[arg-type]
            pod_uid=p["metadata"]["uid"],
            namespace=p["metadata"]["namespace"],
            pod_name=p["metadata"]["name"],
            container_ids=["containerd://0123abcd"],
            fault=m.PodFailure(),
        )
        for p in pods
    ]
    return m.NodeCommand(
        command_id=f"{uid}.{op}",
        experiment_uid=uid,
        generation=1,
        kind="PodChaos",
        namespace=pods[0]["metadata"]["namespace"],
        name="burst",
        node=subjects.CLUSTER_NODE,
        issued_at=time.time(),
        deadline=time.time() + 600,
        actions=actions,
    )


async def _publish(url: str, cmd: Any) -> None:
    from helpers.signing import publish_command

    from chaosbus.common import bus as busmod

    bus = await busmod.connect(url, "bench")
    try:
        await publish_command(bus, cmd)
    finally:
        await bus.close()


def _started(argv: list[str], env: dict[str, str], work: Path, name: str) -> subprocess.Popen[bytes]:
    """A service process, once its /readyz says 200 (`argv` carries its --metrics-port)."""
    port = int(argv[argv.index("--metrics-port") + 1])
    log = (work / f"{name}.log").open("wb")
    proc = subprocess.Popen(argv, stdout=log, stderr=log, env=env)
    deadline = time.monotonic() + 90
    while _readyz(port) != 200:
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError((work / f"{name}.log").read_text()[-3000:])
        time.sleep(0.2)
    return proc


def _idle(sampler: RssSampler, warmup_s: float, idle_s: float) -> float:
    time.sleep(warmup_s)
    start = time.monotonic()
    time.sleep(idle_s)
    return sampler.peak(start, time.monotonic())


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def measure(pods: int = 200, idle_s: float = 10.0, warmup_s: float = 5.0) -> dict[str, Any]:
    _tests_on_path()
    from helpers.prom import free_port
    from helpers.signing import write_keys

    from chaosbus.common import natsauth, natsserver

    with tempfile.TemporaryDirectory(prefix="cb-cinj-") as tmp:
        work = Path(tmp)
        fake, client, kubeconfig = _api(work)
        server = natsserver.start(work / "nats", port=0)
        procs: list[subprocess.Popen[bytes]] = []
        try:
            ns = "bench"
            made = _pods(client, ns, pods)
            env = {
                **os.environ,
                "CHAOSBUS_KEYS_DIR": str(write_keys(work / "keys")),
                "CHAOSBUS_STATE_DIR": str(work / "state"),
                "POD_FAILURE_PAUSE_IMAGE": PAUSE,
            }
            seed = work / "issuer.seed"
            natsauth.write_private(seed, natsauth.new_seed(account=True))
            common = ["--kubeconfig", str(kubeconfig), "--nats", server.url, "--metrics-port"]
            others = {
                "watcher": ["chaosbus.watcher", "--kube", *common, str(free_port())],
                "recorder": ["chaosbus.recorder", *common, str(free_port())],
                "auth": ["chaosbus.authcallout", "--issuer-seed", str(seed), *common, str(free_port())],
            }
            result: dict[str, Any] = {"pods": pods}
            for name, argv in others.items():  # one at a time: each measured on a quiet machine
                proc = _started([sys.executable, "-m", *argv], env, work, name)
                procs.append(proc)
                sampler = RssSampler(proc.pid)
                result[f"{name}_idle_rss_mib"] = round(_idle(sampler, warmup_s, idle_s), 1)
                sampler.stop()
                _stop(proc)
            argv = [sys.executable, "-m", "chaosbus.injector", "--cluster", *common, str(free_port())]
            argv += ["--journal", str(work / "journal.db")]
            proc = _started(argv, env, work, "injector")
            procs.append(proc)
            sampler = RssSampler(proc.pid)
            idle = _idle(sampler, warmup_s, idle_s)

            def images() -> list[str]:
                return [
                    p["spec"]["containers"][0]["image"]
                    for p in fake.objects("pods")
                    if p["metadata"]["namespace"] == ns
                ]

            uid = uuid.uuid4().hex
            burst_start = time.monotonic()
            for op, want in (("apply", PAUSE), ("recover", "nginx:1.25")):
                asyncio.run(_publish(server.url, _command(made, op, uid)))
                deadline = time.monotonic() + 120
                while any(i != want for i in images()):
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{op} not done within 120 s")
                    time.sleep(0.1)
            burst_s = time.monotonic() - burst_start
            time.sleep(1.0)
            peak = sampler.peak(burst_start, time.monotonic())
            sampler.stop()
            result |= {
                "cluster_injector_idle_rss_mib": round(idle, 1),
                "cluster_injector_burst_peak_rss_mib": round(peak, 1),
                "burst_s": round(burst_s, 2),
            }
            return result
        finally:
            for proc in procs:
                if proc.poll() is None:
                    _stop(proc)
            server.stop()
            fake.close()


def _api(work: Path) -> tuple[Any, Any, Path]:
    from kube.client import KubeClient
    from kube.crds import install_crds
    from kubefake import FakeApiServer

    fake = FakeApiServer(bookmark_interval=0.5).start()
    kubeconfig = fake.write_kubeconfig(work / "kubeconfig")
    client = KubeClient(kubeconfig)
    install_crds(client)  # what the watcher lists and the recorder writes
    return fake, client, kubeconfig


def _pods(client: Any, ns: str, n: int) -> list[dict[str, Any]]:
    client.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    return [
        client.create(
            f"/api/v1/namespaces/{ns}/pods",
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"web-{i}", "labels": {"app": "web"}},
                "spec": {"nodeName": "n1", "containers": [{"name": "main", "image": "nginx:1.25"}]},
            },
        )
        for i in range(n)
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pods", type=int, default=200)
    p.add_argument("--json", default="")
    args = p.parse_args()
    got = measure(args.pods)
    print(json.dumps(got))
    if args.json:
        Path(args.json).write_text(json.dumps(got, indent=2))


if __name__ == "__main__":
    main()
