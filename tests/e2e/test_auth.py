"""Only chaosbus may command a fault: on the live system `chaosbus up` started (auth on by
default), a client without credentials is refused, a credentialed but wrong identity is denied
by nats-server itself (the violation is in the server's log), and a local user who cannot read
the state dir can do nothing at all. "No fault happened" is shown by a forged Task command whose
argv would create a marker file: the file never appears.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from pathlib import Path

import nats
import pytest
from helpers.live import NODE, System

from chaosbus.common import bus as busmod
from chaosbus.common import messages as m
from chaosbus.common import natsauth, subjects
from chaosbus.common.faultspecs import Task

NOBODY = 65534


def forged_task(marker: Path) -> m.NodeCommand:
    """A Task command as the scheduler would send it; run, it would create `marker`."""
    uid = f"forged-{uuid.uuid4().hex[:8]}"
    return m.NodeCommand(
        command_id=f"{uid}.1",
        experiment_uid=uid,
        generation=1,
        kind="WorkflowNode",
        namespace="default",
        name=uid,
        node=NODE,
        issued_at=time.time(),
        actions=[
            m.TargetAction(target_id=f"default/{uid}", op="apply", fault=Task(argv=["/usr/bin/touch", str(marker)]))
        ],
    )


def violations(system: System, subject: str) -> int:
    log = (system.state / "logs" / "nats-server.log").read_text()
    return sum(1 for line in log.splitlines() if "Violation" in line and f'"{subject}"' in line)


async def denied_publish(bus: busmod.Bus, subject: str, payload: bytes) -> bool:
    """A JetStream publish nats-server refuses never gets its acknowledgement."""
    try:
        await bus.js.publish(subject, payload, timeout=1.0)
    except (nats.errors.Error, TimeoutError):
        return True
    return False


def test_a_client_without_credentials_is_refused(system: System) -> None:
    async def attempt() -> None:
        await busmod.connect(system.url, "anonymous", auth=natsauth.ClientAuth(), connect_timeout=1.0)

    with pytest.raises(busmod.Refused):
        asyncio.run(attempt())


def test_a_client_with_an_unknown_key_is_refused(system: System, tmp_path: Path) -> None:
    stranger = tmp_path / "stranger.nk"
    natsauth.ensure_seed(stranger)

    async def attempt() -> None:
        await busmod.connect(system.url, "stranger", auth=natsauth.ClientAuth(stranger), connect_timeout=1.0)

    with pytest.raises(busmod.Refused):
        asyncio.run(attempt())


def identity(user: str) -> str:
    """The NATS user of a parametrized identity: this live system's node injector for "injector"
    (its node name is per test run, so it cannot be part of a test id)."""
    return f"injector-{NODE}" if user == "injector" else user


@pytest.mark.parametrize("user", ["recorder", "watcher", "cli", "client", "injector"])
def test_only_the_scheduler_may_send_node_commands(system: System, tmp_path: Path, user: str) -> None:
    marker = tmp_path / f"forged-by-{user}"
    subject = subjects.command_subject(NODE)
    before = violations(system, subject)

    async def forge() -> bool:
        bus = await busmod.connect(system.url, f"forger-{user}", auth=system.auth(identity(user)))
        try:
            return await denied_publish(bus, subject, busmod.encode(forged_task(marker)))
        finally:
            await bus.close()

    assert asyncio.run(forge()), f"{user} could publish {subject}"
    time.sleep(1.5)  # what an accepted command would take to run, with room
    assert not marker.exists(), "the forged Task ran"
    assert violations(system, subject) > before, "the refusal is in nats-server's log"


@pytest.mark.parametrize("user", ["client", "injector", "watcher"])
def test_only_the_recorder_and_local_clients_write_objects_and_status(system: System, user: str) -> None:
    write = subjects.write_subject("NetworkChaos", "default", "forged")
    key = subjects.object_key("NetworkChaos", "default", "forged")
    forged = json.dumps({"kind": "NetworkChaos", "metadata": {"name": "forged"}, "status": {"x": 1}}).encode()

    async def forge() -> tuple[bool, bool]:
        bus = await busmod.connect(system.url, f"forger-{user}", auth=system.auth(identity(user)))
        try:
            return (
                await denied_publish(bus, write, forged),
                await denied_publish(bus, f"$KV.{subjects.OBJECT_STORE.name}.{key}", forged),
            )
        finally:
            await bus.close()

    assert asyncio.run(forge()) == (True, True)
    assert system.get("networkchaos", "forged") is None


def test_a_node_injector_cannot_consume_another_nodes_commands(system: System) -> None:
    """Every way to a consumer of another node's command subject: that node's durable, its own
    durable name with the other filter, an ephemeral consumer, the legacy create without a filter.
    """
    other = "node-other"
    theirs, mine = subjects.injector_consumer(other), subjects.injector_consumer(NODE)
    stream = subjects.COMMANDS.name
    attempts = {
        "their durable": f"$JS.API.CONSUMER.CREATE.{stream}.{theirs}.{subjects.command_subject(other)}",
        "own name, their filter": f"$JS.API.CONSUMER.CREATE.{stream}.{mine}.{subjects.command_subject(other)}",
        "ephemeral": f"$JS.API.CONSUMER.CREATE.{stream}",
        "legacy durable": f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.{theirs}",
    }

    async def steal() -> tuple[list[str], list[str]]:
        bus = await busmod.connect(system.url, "thief", auth=system.auth(f"injector-{NODE}"))
        refused = []
        try:
            for what, api in attempts.items():
                name = mine if "own name" in what else theirs
                request = {
                    "stream_name": stream,
                    "config": {
                        "name": name,
                        "durable_name": name,
                        "filter_subject": subjects.command_subject(other),
                        "ack_policy": "explicit",
                        "deliver_policy": "all",
                    },
                }
                try:
                    await bus.nc.request(api, json.dumps(request).encode(), timeout=1.0)
                except (nats.errors.Error, TimeoutError):
                    refused.append(what)
        finally:
            await bus.close()
        admin = await busmod.connect(system.url, "check", auth=system.auth(natsauth.ADMIN))
        try:
            found = [(c.name, c.config.filter_subject) for c in await admin.js.consumers_info(stream)]
        finally:
            await admin.close()
        return refused, [name for name, filt in found if filt != subjects.command_subject(NODE)]

    refused, foreign = asyncio.run(steal())
    assert refused == list(attempts)
    assert foreign == [], "a consumer of another node's commands exists"


def test_a_local_user_who_cannot_read_the_state_dir_can_do_nothing(system: System, tmp_path: Path) -> None:
    """Run as uid 65534 (forked, then setuid: the interpreter lives under root's home): it finds
    no readable credentials, every connection is refused, and no fault or halt happens.
    """
    marker = tmp_path / "forged-by-nobody"
    os.chmod(tmp_path, 0o777)  # so that only the refusal, not the directory, keeps the marker away
    env = {**system.env}
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        os.close(read)
        code = 3
        try:
            os.environ.clear()
            os.environ.update(env)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            code = asyncio.run(_as_nobody(system.url, marker, write))
        finally:
            os._exit(code)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    with os.fdopen(read) as f:
        report = f.read()
    assert os.WEXITSTATUS(status) == 0, report
    assert "uid=65534" in report and "creds unreadable" in report
    time.sleep(1.0)
    assert not marker.exists()

    async def halted() -> bool:
        admin = await busmod.connect(system.url, "check", auth=system.auth(natsauth.ADMIN))
        try:
            kv = await admin.kv(subjects.CONTROL.name)
            try:
                entry = await kv.get(subjects.HALT_KEY)
            except nats.js.errors.KeyNotFoundError:
                return False
            return bool(entry.value) and busmod.decode(entry.value, m.HaltState).halted
        finally:
            await admin.close()

    assert not asyncio.run(halted())


async def _as_nobody(url: str, marker: Path, out_fd: int) -> int:
    """In the uid-65534 child: every way in is refused (exit 0), or one is not (exit 1)."""
    lines = [f"uid={os.geteuid()}"]
    try:
        natsauth.seed_file("cli").read_text()
        lines.append("creds READABLE")
    except OSError:
        lines.append("creds unreadable")
    auth = natsauth.client_auth("cli")
    accepted = []
    for name, attempt in (("as the CLI would", auth), ("without credentials", natsauth.ClientAuth())):
        try:
            bus = await busmod.connect(url, "nobody", auth=attempt, connect_timeout=1.0)
        except (busmod.Refused, OSError) as e:
            lines.append(f"{name}: refused ({type(e).__name__})")
            continue
        accepted.append(name)
        await bus.js.publish(subjects.command_subject(NODE), busmod.encode(forged_task(marker)), timeout=1.0)
        await bus.close()
    lines.append(f"accepted: {accepted}")
    os.write(out_fd, "\n".join(lines).encode())
    return 1 if accepted or auth.seed_file is not None else 0
