"""Authorized targets on the live local system: an experiment in `team-a` naming `kube-system` is
refused in its status and the kube-system pod is untouched; a forged node command (straight onto
`chaos.cmd.<node>`, as anyone who reaches NATS could send it) cannot kill a host process, nor one
pod's process under another pod's uid: the injector's result says why and the process lives.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import psutil
import pytest
import yaml
from helpers.live import BRIDGE, NODE, SUBNET, System, eventually

from chaosbus.common import bus as busmod
from chaosbus.common import messages as m
from chaosbus.common import natsauth, processid, signing, subjects

pytestmark = pytest.mark.privileged


def pid_of(system: System, namespace: str, name: str) -> int:
    obj = json.loads(system.cli("pod", "list", "-n", namespace, "-o", "json").stdout)
    [pod] = [p for p in obj if p["metadata"]["name"] == name]
    ident = processid.parse(pod["status"]["containerStatuses"][0]["containerID"])
    assert ident is not None
    return ident.pid


def get(system: System, kind: str, name: str, namespace: str) -> dict[str, object]:
    done = system.cli("get", kind, name, "-n", namespace, "-o", "json", check=False)
    return json.loads(done.stdout) if done.returncode == 0 else {}


def test_team_a_cannot_kill_a_kube_system_pod(system: System) -> None:
    system.cli(
        "pod",
        "run",
        "--name",
        "coredns",
        "-n",
        "kube-system",
        "-l",
        "k8s-app=kube-dns",
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
        "coredns",
    )
    try:
        pid = pid_of(system, "kube-system", "coredns")
        system.cli(
            "apply",
            "-n",
            "team-a",
            "-f",
            "-",
            stdin=yaml.safe_dump(
                {
                    "apiVersion": "chaos-mesh.org/v1alpha1",
                    "kind": "PodChaos",
                    "metadata": {"name": "kill-dns"},
                    "spec": {
                        "action": "pod-kill",
                        "mode": "all",
                        "selector": {"namespaces": ["kube-system"], "labelSelectors": {"k8s-app": "kube-dns"}},
                    },
                }
            ),
        )

        def selected() -> dict[str, object] | None:
            status = get(system, "podchaos", "kill-dns", "team-a").get("status") or {}
            conditions = status.get("conditions") or []  # type: ignore[union-attr]
            return next((c for c in conditions if c["type"] == "Selected" and c["status"] == "False"), None)

        condition = eventually(selected, timeout=10)
        assert condition["reason"] == "SelectionFailed"
        assert "namespace 'kube-system' is protected" in str(condition["message"])
        status = get(system, "podchaos", "kill-dns", "team-a")["status"]
        assert not (status["experiment"].get("containerRecords") or [])  # type: ignore[index]
        assert psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        pods = json.loads(system.cli("pod", "list", "-n", "kube-system", "-o", "json").stdout)
        assert [
            p["status"]["containerStatuses"][0]["restartCount"] for p in pods if p["metadata"]["name"] == "coredns"
        ] == [0]  # a pod of its own: never restarted
        system.cli("delete", "podchaos", "kill-dns", "-n", "team-a")

        # Past the scheduler: a forged command with coredns's real uid, claiming team-a as its namespace.
        dns = next(
            p
            for p in json.loads(system.cli("pod", "list", "-n", "kube-system", "-o", "json").stdout)
            if p["metadata"]["name"] == "coredns"
        )
        res = forge(
            system,
            m.TargetAction(
                target_id="team-a/coredns",
                op="apply",
                pod_uid=dns["metadata"]["uid"],
                namespace="team-a",
                pod_name="coredns",
                container_ids=[dns["status"]["containerStatuses"][0]["containerID"]],
                fault=m.PodKill(),
            ),
        )
        assert not res.ok and "belongs to namespace kube-system, not to team-a" in res.message, res
        time.sleep(0.2)
        assert psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    finally:
        system.cli("pod", "rm", "coredns", "-n", "kube-system", check=False)


def forge(system: System, action: m.TargetAction) -> m.TargetResult:
    """Publish a pod-kill command for `action` to the live node injector, signed with the system's
    scheduler key (as a compromised or buggy scheduler would send it: the target checks are what
    stands in the way then); its one result.
    """
    signer = signing.Signer.from_file(system.state / "keys" / "scheduler.key")
    uid = f"forged-{time.monotonic_ns()}"
    cmd = m.NodeCommand(
        command_id=f"{uid}.1",
        experiment_uid=uid,
        generation=1,
        kind="PodChaos",
        namespace="team-a",
        name="forged",
        node=NODE,
        issued_at=time.time(),
        actions=[action],
    )

    async def send() -> m.TargetResult:
        # NATS refuses commands from anyone but the scheduler (test_auth.py); the forger here holds
        # the admin credentials, as a stolen one would, to show what the injector re-checks alone.
        bus = await busmod.connect(system.url, "e2e-forger", auth=system.auth(natsauth.ADMIN))
        try:
            sub = await bus.nc.subscribe(subjects.result_subject(NODE, uid))
            await bus.publish(
                subjects.COMMANDS,
                subjects.command_subject(NODE),
                cmd,
                msg_id=cmd.command_id,
                seal=lambda subject, data: signer.seal(subject, data, ttl_s=60.0),
            )
            msg = await sub.next_msg(timeout=10)
            batch = busmod.decode(msg.data, m.ResultBatch)
            [result] = batch.results
            return result
        finally:
            await bus.close()

    return asyncio.run(send())


def test_a_forged_pod_kill_of_a_host_process_kills_nothing(system: System) -> None:
    victim = subprocess.Popen(["sleep", "300"])
    try:
        res = forge(
            system,
            m.TargetAction(
                target_id="team-a/x",
                op="apply",
                pod_uid="any",
                namespace="team-a",
                pod_name="x",
                container_ids=[f"process://{victim.pid}"],
                fault=m.PodKill(),
            ),
        )
        assert not res.ok and res.message.startswith("refused: ") and "not a process pod's process" in res.message
        time.sleep(0.2)
        assert victim.poll() is None, "a host process was killed by a forged command"
        audit = [
            json.loads(line)
            for line in system.service_log("injector").splitlines()
            if '"target refused"' in line and f"process://{victim.pid}" in line
        ]
        assert audit and audit[-1]["why"] == res.message and audit[-1]["command_id"].startswith("forged-"), audit
    finally:
        victim.kill()
        victim.wait(5)


def test_a_forged_pod_kill_cannot_borrow_another_pods_uid(system: System) -> None:
    peer0, peer1 = system.pod("peer-0"), system.pod("peer-1")
    cid = peer1["status"]["containerStatuses"][0]["containerID"]
    restarts = peer1["status"]["containerStatuses"][0]["restartCount"]
    res = forge(
        system,
        m.TargetAction(
            target_id="default/peer-0",
            op="apply",
            pod_uid=peer0["metadata"]["uid"],
            namespace="default",
            pod_name="peer-0",
            container_ids=[cid],
            fault=m.PodKill(),
        ),
    )
    assert not res.ok, res
    assert f"belongs to pod uid {peer1['metadata']['uid']}" in res.message, res.message
    time.sleep(0.2)
    assert system.pod("peer-1")["status"]["containerStatuses"][0]["restartCount"] == restarts
    pid = processid.parse(cid)
    assert pid is not None and processid.is_running(pid), "peer-1 was killed under peer-0's name"
