"""PodChaos and HelloWorldChaos end to end, bad input through every door (CLI, NATS), selection
that matches nothing, and the services' /metrics over real HTTP.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import urllib.request

import psutil
import pytest
import yaml
from helpers.live import BRIDGE, NODE, SUBNET, System, eventually, wait_blocked

from chaosbus.common import bus as busmod
from chaosbus.common import natsauth, processid
from chaosbus.injector.backends import tcdev

pytestmark = pytest.mark.privileged


def chaos(kind: str, name: str, spec: dict[str, object]) -> str:
    return yaml.safe_dump(
        {"apiVersion": "chaos-mesh.org/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec}
    )


def pid_of(container_id: str) -> int:
    ident = processid.parse(container_id)
    assert ident is not None, container_id
    return ident.pid


def dead(pid: int) -> bool:
    """Gone, or a zombie; a process that ends between two looks is gone, not an error."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def records(system: System, kind: str, name: str) -> list[dict[str, object]]:
    obj = system.get(kind, name) or {}
    return ((obj.get("status") or {}).get("experiment") or {}).get("containerRecords") or []


def test_pod_kill_kills_exactly_the_selected_pod_and_it_comes_back(system: System) -> None:
    before = {p.name: pid_of(system.pod(p.name)["status"]["containerStatuses"][0]["containerID"]) for p in system.pods}
    system.cli(
        "apply",
        "-f",
        "-",
        stdin=chaos(
            "PodChaos", "kill-3", {"action": "pod-kill", "mode": "one", "selector": {"labelSelectors": {"index": "3"}}}
        ),
    )
    eventually(lambda: dead(before["peer-3"]))
    for name in ("peer-0", "peer-1", "peer-2"):
        assert psutil.pid_exists(before[name]), f"{name} was killed too"
    recs = eventually(lambda: [r for r in records(system, "podchaos", "kill-3") if r["phase"] == "Injected"])
    assert [r["id"] for r in recs] == ["default/peer-3"]

    def restarted() -> bool:
        cs = system.pod("peer-3")["status"]["containerStatuses"][0]
        ident = processid.parse(cs["containerID"])
        return cs["restartCount"] >= 1 and ident is not None and ident.pid != before["peer-3"]

    eventually(restarted, timeout=10)
    system.pods[3].pid = pid_of(system.pod("peer-3")["status"]["containerStatuses"][0]["containerID"])
    wait_blocked(system, set(), timeout=10)  # the restarted server answers again
    system.cli("delete", "podchaos", "kill-3")


def test_pause_does_not_stop_or_repeat_a_one_shot_pod_kill(system: System) -> None:
    system.cli(
        "apply",
        "-f",
        "-",
        stdin=chaos(
            "PodChaos", "kill-2", {"action": "pod-kill", "mode": "all", "selector": {"labelSelectors": {"index": "2"}}}
        ),
    )
    eventually(lambda: [r for r in records(system, "podchaos", "kill-2") if r["phase"] == "Injected"])
    system.cli("annotate", "podchaos", "kill-2", "experiment.chaos-mesh.org/pause=true")
    eventually(lambda: system.pod("peer-2")["status"]["containerStatuses"][0]["containerID"], timeout=10)
    desired = eventually(
        lambda: (system.get("podchaos", "kill-2") or {}).get("status", {}).get("experiment", {}).get("desiredPhase")
    )
    assert desired == "Run"
    [rec] = records(system, "podchaos", "kill-2")
    assert rec["injectedCount"] == 1
    system.cli("delete", "podchaos", "kill-2")
    system.pods[2].pid = pid_of(system.pod("peer-2")["status"]["containerStatuses"][0]["containerID"])
    wait_blocked(system, set(), timeout=10)


def test_container_kill_kills_the_named_container(system: System) -> None:
    pid = pid_of(system.pod("peer-1")["status"]["containerStatuses"][0]["containerID"])
    system.cli(
        "apply",
        "-f",
        "-",
        stdin=chaos(
            "PodChaos",
            "ckill-1",
            {
                "action": "container-kill",
                "mode": "all",
                "containerNames": ["peer-1"],
                "selector": {"labelSelectors": {"index": "1"}},
            },
        ),
    )
    recs = eventually(lambda: [r for r in records(system, "podchaos", "ckill-1") if r["phase"] == "Injected"])
    assert [r["id"] for r in recs] == ["default/peer-1/peer-1"]
    assert dead(pid)
    system.cli("delete", "podchaos", "ckill-1")
    wait_blocked(system, set(), timeout=10)


def test_hello_world_runs_ps_in_the_target_and_records_it(system: System) -> None:
    system.cli(
        "apply",
        "-f",
        "-",
        stdin=chaos(
            "HelloWorldChaos",
            "hello",
            {"mode": "one", "selector": {"labelSelectors": {"index": "0"}}, "duration": "30s"},
        ),
    )
    recs = eventually(lambda: [r for r in records(system, "helloworldchaos", "hello") if r["phase"] == "Injected"])
    message = recs[0]["events"][-1]["message"]  # type: ignore[index]
    assert "Hello world from default/peer-0" in message and "demoapp serve --name peer-0" in message
    assert '"ps_aux": ["USER' in system.service_log("injector")  # the listing itself is logged
    system.cli("delete", "helloworldchaos", "hello")
    assert system.get("helloworldchaos", "hello") is None


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("kind: [unclosed", "invalid YAML (line 1"),
        (chaos("NoSuchChaos", "x", {}), "kind: unknown kind 'NoSuchChaos'"),
        (
            chaos("PodChaos", "x", {"action": "pod-kill", "mode": "sometimes", "selector": {}}),
            "spec.mode: expected one of one, all, fixed, fixed-percent, random-max-percent",
        ),
        (chaos("PodChaos", "x", {"action": "pod-kill", "mode": "fixed", "value": "0", "selector": {}}), "spec.value"),
        (
            chaos("NetworkChaos", "x", {"action": "partition", "mode": "all", "duration": "-5s"}),
            "spec.duration: must not be negative",
        ),
        (
            chaos("NetworkChaos", "x", {"action": "partition", "mode": "all", "duration": "soon"}),
            "spec.duration: invalid duration 'soon'",
        ),
        (
            chaos("PodChaos", "ok", {"action": "pod-kill", "mode": "one"})
            + "---\n"
            + chaos("PodChaos", "bad", {"action": "explode", "mode": "one"}),
            "document 2 (PodChaos/bad): spec.action",
        ),
    ],
)
def test_bad_input_is_refused_with_the_field_named_and_nothing_written(
    system: System, document: str, message: str
) -> None:
    done = system.cli("apply", "-f", "-", stdin=document, check=False)
    assert done.returncode == 1
    assert message in done.stderr
    assert system.get("podchaos", "ok") is None  # all or nothing: the good document was not applied


def test_unknown_resource_type_and_missing_object_are_clear_errors(system: System) -> None:
    done = system.cli("get", "frobnicators", check=False)
    assert done.returncode == 1 and 'resource type "frobnicators"' in done.stderr
    done = system.cli("delete", "networkchaos", "nope", check=False)
    assert done.returncode == 1 and 'networkchaos "nope" not found' in done.stderr


def test_an_action_the_injector_cannot_do_is_a_failure_never_injected(system: System) -> None:
    if tcdev.probe()["netem"] is None:
        pytest.skip("this kernel has sch_netem: a delay is injected here, there is nothing to refuse")
    system.cli(
        "apply",
        "-f",
        "-",
        stdin=chaos(
            "NetworkChaos",
            "slow",
            {
                "action": "delay",
                "mode": "all",
                "delay": {"latency": "100ms"},
                "selector": {"fieldSelectors": {"metadata.name": "peer-0"}},
            },
        ),
    )

    def failed() -> list[dict[str, object]]:
        return [
            r for r in records(system, "networkchaos", "slow") if (r.get("events") or [{}])[-1].get("type") == "Failed"
        ]  # type: ignore[union-attr]

    [rec] = eventually(failed)
    assert rec["phase"] == "Not Injected" and rec["injectedCount"] == 0
    message = rec["events"][-1]["message"]  # type: ignore[index]
    assert "delay is not possible on this node: kernel lacks sch_netem" in message
    assert system.blocked() == set()  # and it did not turn into a partition
    system.cli("delete", "networkchaos", "slow")


def test_selector_matching_nothing_is_reported_in_status(system: System) -> None:
    system.cli(
        "apply",
        "-f",
        "-",
        stdin=chaos(
            "NetworkChaos",
            "nobody",
            {"action": "partition", "mode": "all", "selector": {"labelSelectors": {"app": "nothing-here"}}},
        ),
    )

    def selected() -> dict[str, str] | None:
        conds = ((system.get("networkchaos", "nobody") or {}).get("status") or {}).get("conditions") or []
        return next((c for c in conds if c["type"] == "Selected" and c.get("message")), None)

    cond = eventually(selected)
    assert cond["status"] == "False" and "no pod is selected" in cond["message"]
    system.cli("delete", "networkchaos", "nobody")


def test_malformed_nats_messages_crash_nothing(system: System) -> None:
    async def send() -> None:
        bus = await busmod.connect(system.url, "e2e-garbage", auth=system.auth(natsauth.ADMIN))
        try:
            for subject in (f"chaos.cmd.{NODE}", f"chaos.result.{NODE}.x", "chaos.phase.x", "chaos.obj.PodChaos.d.x"):
                await bus.js.publish(subject, b"\x00not json{")
                await bus.js.publish(subject, json.dumps({"unexpected": True}).encode())
        finally:
            await bus.close()

    asyncio.run(send())
    # Every service is still there and the whole path still works.
    system.cli(
        "apply",
        "-f",
        "-",
        stdin=chaos(
            "NetworkChaos",
            "after-garbage",
            {
                "action": "partition",
                "mode": "all",
                "direction": "to",
                "selector": {"fieldSelectors": {"metadata.name": "peer-0"}},
                "target": {"mode": "all", "selector": {"fieldSelectors": {"metadata.name": "peer-3"}}},
            },
        ),
    )
    wait_blocked(system, {(0, 3)})
    system.cli("delete", "networkchaos", "after-garbage")
    wait_blocked(system, set())
    for service in ("recorder", "scheduler"):
        eventually(lambda s=service: "malformed message" in system.service_log(s), timeout=10)
    # the injector refuses garbage on its command subject before decoding it: unsigned, audited
    refused = [line for line in system.service_log("injector").splitlines() if '"audit": true' in line]
    assert refused and all('"reason": "unsigned"' in line for line in refused)


def test_every_service_serves_its_metrics(system: System) -> None:
    expected = {
        "watcher": "chaosbus_watcher_object_events_total",
        "scheduler": "chaosbus_experiments",
        "recorder": "chaosbus_recorder_status_writes_total",
        "injector": "chaosbus_injector_open_faults ",
    }  # a sample, whatever ran before
    for service, metric in expected.items():
        eventually(lambda service=service, metric=metric: metric in scrape(system, service), timeout=30)


def scrape(system: System, service: str) -> str:
    """The service's /metrics at the port its latest start logged ("" while it is restarting: a test
    before this one may have killed it)."""
    ports = re.findall(r'"metrics_port": (\d+)', system.service_log(service))
    if not ports:
        return ""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ports[-1]}/metrics", timeout=5) as r:
            return str(r.read().decode())
    except OSError:
        return ""


@pytest.mark.parametrize(("code", "phase"), [(0, "Succeeded"), (3, "Failed")])
def test_restart_never_pod_ends_with_its_exit_code(system: System, code: int, phase: str) -> None:
    name = f"once-{code}"
    system.cli(
        "pod",
        "run",
        "--name",
        name,
        "--restart",
        "Never",
        "--bridge",
        BRIDGE,
        "--subnet",
        SUBNET,
        "--",
        sys.executable,
        "-c",
        f"import time, sys; time.sleep(0.5); sys.exit({code})",
    )
    eventually(lambda: system.pod(name)["status"]["phase"] == phase, timeout=10)
    cs = system.pod(name)["status"]["containerStatuses"][0]
    assert cs["restartCount"] == 0 and cs["lastState"]["terminated"]["exitCode"] == code
    system.cli("pod", "rm", name)
    assert system.get("pod", name) is None
