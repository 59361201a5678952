"""The process-pod supervisor, local mode's kubelet for one pod: sets up the pod's netns, address
and cgroup, registers the Pod object, runs the command inside them (and, unless the spec says
otherwise, as PID 1 of its own PID and mount namespaces, as a container would), restarts it per
restartPolicy (as a Deployment's pod comes back), keeps it stopped while a node injector holds the
pod (local mode's pod-failure, chaosbus.common.podhold) and then starts it afresh, and on SIGTERM
tears everything down.

Run by `chaosbus pod run` as `python -m chaosbus.cli.supervisor --spec JSON` in its own session.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from typing import Any

import msgspec

from chaosbus.cli import ipam, podnet
from chaosbus.common import bus as busmod
from chaosbus.common import cgroups, config, natsauth, podexec, podhold, processid, subjects
from chaosbus.common import messages as m
from chaosbus.common.kvbucket import TypedBucket
from chaosbus.common.objects import now_rfc3339
from chaosbus.common.store import NotFound, ObjectStore

NETNS_ANNOTATION = "chaosbus.io/netns"
SUPERVISOR_ANNOTATION = "chaosbus.io/supervisor-pid"
BRIDGE_ANNOTATION = "chaosbus.io/bridge"
CGROUP_ANNOTATION = "chaosbus.io/cgroup"  # the pod cgroup's directories, comma-separated
BACKOFF_MAX_S = 10.0
HOLD_POLL_S = 0.1
POD_FAILURE_REASON = "PodFailure"  # the container's waiting reason while a pod-failure holds it


class PodSpec(msgspec.Struct, kw_only=True):
    name: str
    namespace: str = "default"
    labels: dict[str, str] = {}
    argv: list[str]
    restart: str = "Always"
    node: str = ""
    bridge: str = podnet.DEFAULT_BRIDGE
    subnet: str = podnet.DEFAULT_SUBNET
    gateway: str = podnet.DEFAULT_GATEWAY
    log_file: str = ""
    pid_namespace: bool = True  # the command is PID 1 of its own PID and mount namespaces
    volumes: list[str] = []  # HOST:PATH, bind-mounted into the pod's mount namespace


def pod_object(spec: PodSpec, netns: str, ip: str, cgroup: cgroups.PodCgroup | None = None) -> dict[str, Any]:
    ann = {NETNS_ANNOTATION: netns, SUPERVISOR_ANNOTATION: str(os.getpid()), BRIDGE_ANNOTATION: spec.bridge}
    if cgroup is not None:
        ann[CGROUP_ANNOTATION] = ",".join(cgroup.dirs)
    container: dict[str, Any] = {"name": spec.name, "command": spec.argv}
    pod_spec: dict[str, Any] = {"nodeName": spec.node, "restartPolicy": spec.restart, "containers": [container]}
    if spec.volumes:
        # Shown the way a kubelet's pod shows a hostPath volume and its mount.
        pairs = [podexec.split_volume(v) for v in spec.volumes]
        pod_spec["volumes"] = [{"name": f"vol-{i}", "hostPath": {"path": host}} for i, (host, _) in enumerate(pairs)]
        container["volumeMounts"] = [{"name": f"vol-{i}", "mountPath": path} for i, (_, path) in enumerate(pairs)]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": spec.name, "namespace": spec.namespace, "labels": spec.labels, "annotations": ann},
        "spec": pod_spec,
        "status": {"phase": "Pending", "podIP": ip, "hostIP": "", "containerStatuses": []},
    }


def container_status(
    spec: PodSpec, pid: int | None, restarts: int, last_exit: int | None, held: list[podhold.Hold] | None = None
) -> dict[str, Any]:
    cs: dict[str, Any] = {
        "name": spec.name,
        "ready": pid is not None,
        "restartCount": restarts,
        "containerID": str(processid.of_process(pid)) if pid else "",
    }
    if pid:
        cs["state"] = {"running": {"startedAt": now_rfc3339()}}
    elif held:
        by = ", ".join(sorted({h.experiment for h in held}))
        cs["state"] = {"waiting": {"reason": POD_FAILURE_REASON, "message": f"stopped by pod-failure ({by})"}}
    if last_exit is not None:
        cs["lastState"] = {"terminated": {"exitCode": last_exit, "finishedAt": now_rfc3339()}}
    return cs


class Supervisor:
    def __init__(self, spec: PodSpec, store: ObjectStore, ipam_kv: TypedBucket[m.AddressLease]) -> None:
        self.spec, self.store, self.ipam_kv = spec, store, ipam_kv
        self.netns = f"cbpod-{uuid.uuid4().hex[:8]}"
        self.ip = ""
        self.uid = ""
        self.child: subprocess.Popen[bytes] | None = None
        self.cgroup: cgroups.PodCgroup | None = None
        self.holds = podhold.pod_dir(self.netns)
        self.stopping = asyncio.Event()

    async def start(self) -> None:
        s = self.spec
        self.ip = await ipam.allocate(self.ipam_kv, s.subnet, s.gateway, f"{s.namespace}/{s.name}")
        prefix = s.subnet.split("/")[1]
        await asyncio.to_thread(podnet.ensure_bridge, s.bridge, f"{s.gateway}/{prefix}")
        await asyncio.to_thread(podnet.create_pod_network, self.netns, s.bridge, f"{self.ip}/{prefix}", s.gateway)
        self.cgroup = await asyncio.to_thread(cgroups.create, self.netns)
        await asyncio.to_thread(podhold.make_dir, self.holds)
        created = await self.store.create(pod_object(s, self.netns, self.ip, self.cgroup))
        self.uid = str(created["metadata"]["uid"])

    async def run(self) -> None:
        restarts, last_exit, backoff = 0, None, 0.5
        while not self.stopping.is_set():
            if self._held():
                await self._hold(restarts, last_exit)
                restarts += 1  # started afresh, as a container restarted from its original image
                continue
            started = time.monotonic()
            self.child = self._spawn()
            pid = await self._container_pid(self.child)
            await self._set_status("Running", container_status(self.spec, pid, restarts, last_exit))
            last_exit = await self._wait_child()
            if self.stopping.is_set():
                break
            if self._held():
                continue
            if self.spec.restart == "Never":
                phase = "Succeeded" if last_exit == 0 else "Failed"
                await self._set_status(phase, container_status(self.spec, None, restarts, last_exit))
                await self.stopping.wait()
                break
            restarts += 1
            backoff = 0.5 if time.monotonic() - started > BACKOFF_MAX_S else min(BACKOFF_MAX_S, backoff * 2)
            await self._set_status("Running", container_status(self.spec, None, restarts, last_exit))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), timeout=backoff)

    def _spawn(self) -> subprocess.Popen[bytes]:
        out: Any = open(self.spec.log_file, "ab") if self.spec.log_file else subprocess.DEVNULL  # noqa: SIM115
        try:
            argv = podexec.command(
                self.spec.argv,
                cgroups=self.cgroup.dirs if self.cgroup else (),
                new_pidns=self.spec.pid_namespace,
                new_mountns=self.spec.pid_namespace,
                volumes=self.spec.volumes,
            )
            return podnet.spawn_in_netns(
                argv,
                self.netns,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, processid.POD_UID_ENV: self.uid, processid.POD_NAMESPACE_ENV: self.spec.namespace},
            )
        finally:
            if out is not subprocess.DEVNULL:
                out.close()

    async def _container_pid(self, child: subprocess.Popen[bytes], timeout: float = 5.0) -> int:
        """The pid of the pod's command: with its own PID namespace, the helper's child (PID 1 inside),
        so that faults and the container ID name the command itself, not the shim.
        """
        if not self.spec.pid_namespace:
            return child.pid
        deadline = time.monotonic() + timeout
        while child.poll() is None and time.monotonic() < deadline:
            try:
                with open(f"/proc/{child.pid}/task/{child.pid}/children") as f:
                    kids = f.read().split()
            except FileNotFoundError:
                break
            if kids:
                return int(kids[0])
            await asyncio.sleep(0.005)
        return child.pid

    async def _wait_child(self) -> int:
        """Until the command exits, the pod is stopped, or a hold comes (the command is then killed)."""
        assert self.child is not None
        next_look = time.monotonic() + HOLD_POLL_S
        while self.child.poll() is None and not self.stopping.is_set():
            if time.monotonic() >= next_look:
                next_look = time.monotonic() + HOLD_POLL_S
                if self._held():
                    await self._stop_command()
                    break
            await asyncio.sleep(0.05)
        return self.child.returncode if self.child.returncode is not None else -1

    def _held(self) -> list[podhold.Hold]:
        return podhold.active(self.holds, time.time())

    async def _stop_command(self) -> None:
        """Kill the command and everything it left in the pod's cgroup, as stopping a container does."""
        assert self.child is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.child.pid, signal.SIGKILL)
        await asyncio.to_thread(self.child.wait)
        if self.cgroup is not None:
            for pid in await asyncio.to_thread(cgroups.procs, self.cgroup.dirs[0]):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    async def _hold(self, restarts: int, last_exit: int | None) -> None:
        """While a hold is in force (its deadline is in the hold: no injector needs to be alive):
        no command, the pod not ready."""
        held = self._held()
        await self._set_status("Running", container_status(self.spec, None, restarts, last_exit, held))
        while held and not self.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), timeout=HOLD_POLL_S)
            held = self._held()

    async def _set_status(self, phase: str, cs: dict[str, Any]) -> None:
        def mutate(obj: dict[str, Any]) -> dict[str, Any]:
            return {**obj, "status": {**obj.get("status", {}), "phase": phase, "containerStatuses": [cs]}}

        with contextlib.suppress(NotFound):
            await self.store.mutate("Pod", self.spec.namespace, self.spec.name, mutate)

    async def teardown(self) -> None:
        if self.child is not None and self.child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.child.pid, signal.SIGKILL)
            await asyncio.to_thread(self.child.wait)
        await asyncio.to_thread(podnet.delete_pod_network, self.netns)
        await asyncio.to_thread(shutil.rmtree, self.holds, True)
        if self.cgroup is not None:
            await asyncio.to_thread(cgroups.remove, self.cgroup)
        if self.ip:
            await ipam.release(self.ipam_kv, self.ip)
        # Last, as a kubelet finishes a pod's deletion: once the Pod is gone, so is everything it
        # had (`pod rm` waits for this, then deletes the bridge when no veth is left on it).
        with contextlib.suppress(NotFound):
            await self.store.delete("Pod", self.spec.namespace, self.spec.name)


async def amain(spec: PodSpec, url: str) -> None:
    bus = await busmod.connect(url, f"chaosbus-pod-{spec.namespace}-{spec.name}")
    await bus.ensure()
    sup = Supervisor(spec, ObjectStore(await bus.bucket(subjects.OBJECT_STORE)), await bus.bucket(subjects.IPAM))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, sup.stopping.set)
    try:
        await sup.start()
        await sup.run()
    finally:
        await sup.teardown()
        await bus.close()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="chaosbus-pod-supervisor")
    p.add_argument("--spec", required=True, help="PodSpec as JSON")
    p.add_argument("--nats", default=None)
    args = p.parse_args(argv)
    spec = msgspec.json.decode(args.spec, type=PodSpec)
    if not spec.node:
        spec.node = config.node_name()
    url = config.nats_url(args.nats)
    natsauth.use(natsauth.client_auth("cli", url=url))  # `chaosbus pod run` passes given credentials in the environment
    asyncio.run(amain(spec, url))


if __name__ == "__main__":
    main()
