"""The allow-lists generated from the subject table: who may publish and read what, checked the
way nats-server matches subjects, and the configuration nats-server itself accepts.
"""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path

import pytest

from chaosbus.common import logging as cblog
from chaosbus.common import natsauth, natsserver, subjects

SERVICES = ("watcher", "scheduler", "recorder", "injector", "cli", "client")


def matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: `*` one token, `>` one or more at the end."""
    p, s = pattern.split("."), subject.split(".")
    for i, t in enumerate(p):
        if t == ">":
            return len(s) > i
        if i >= len(s) or (t != "*" and t != s[i]):
            return False
    return len(p) == len(s)


def may_publish(identity: str, subject: str, node: str = "n1") -> bool:
    return any(matches(p, subject) for p in natsauth.permissions(identity, node=node).publish)


def may_subscribe(identity: str, subject: str, node: str = "n1") -> bool:
    return any(matches(p, subject) for p in natsauth.permissions(identity, node=node).subscribe)


@pytest.mark.parametrize(
    ("subject", "allowed"),
    [
        (subjects.command_subject("n1"), {"scheduler"}),
        (subjects.cluster_command_subject(), {"scheduler"}),
        (subjects.lease_subject("n1"), {"scheduler"}),
        (subjects.write_subject("NetworkChaos", "default", "x"), {"scheduler"}),
        (subjects.decision_subject("uid"), {"scheduler"}),
        (subjects.result_subject("n1", "uid"), {"injector"}),
        (subjects.result_subject("n2", "uid"), set()),  # another node's results
        (subjects.object_subject("NetworkChaos", "default", "x"), {"watcher"}),
        (f"$KV.{subjects.OBJECT_STORE.name}.NetworkChaos.default.x", {"cli", "recorder", "scheduler"}),
        (f"$KV.{subjects.TARGETS.name}.pod.default.x", {"watcher"}),
        (f"$KV.{subjects.CONTROL.name}.halt", {"cli"}),
        (f"$KV.{subjects.SCHEDULER.name}.leader", {"scheduler"}),
        (subjects.HALT_SUBJECT, {"cli"}),
        ("chaos.trigger.apply", {"cli", "client"}),
        ("$JS.API.STREAM.CREATE.CHAOS_CMD", set()),
        ("$JS.API.STREAM.DELETE.CHAOS_CMD", set()),
        ("$JS.API.STREAM.PURGE.KV_control", set()),
        ("$JS.API.CONSUMER.DURABLE.CREATE.CHAOS_CMD.injector-n2", set()),
        ("$JS.API.STREAM.MSG.GET.CHAOS_CMD", set()),
        ("$JS.API.DIRECT.GET.CHAOS_CMD", set()),
        ("_INBOX.someone.reply", set()),
    ],
)
def test_who_may_publish(subject: str, allowed: set[str]) -> None:
    assert {i for i in SERVICES if may_publish(i, subject)} == allowed


def test_a_node_injector_consumes_only_its_own_commands() -> None:
    own, other = "injector-n1", "injector-n2"
    assert may_publish("injector", f"$JS.API.CONSUMER.CREATE.CHAOS_CMD.{own}.chaos.cmd.n1")
    assert may_publish("injector", f"$JS.API.CONSUMER.MSG.NEXT.CHAOS_CMD.{own}")
    assert may_publish("injector", f"$JS.ACK.CHAOS_CMD.{own}.1.2.3.4.5")
    # its own durable name with another node's filter, another's durable, an ephemeral consumer
    assert not may_publish("injector", f"$JS.API.CONSUMER.CREATE.CHAOS_CMD.{own}.chaos.cmd.n2")
    assert not may_publish("injector", f"$JS.API.CONSUMER.CREATE.CHAOS_CMD.{other}.chaos.cmd.n2")
    assert not may_publish("injector", "$JS.API.CONSUMER.CREATE.CHAOS_CMD")
    assert not may_publish("injector", f"$JS.API.CONSUMER.MSG.NEXT.CHAOS_CMD.{other}")
    assert not may_publish("injector", f"$JS.ACK.CHAOS_CMD.{other}.1.2.3.4.5")
    assert may_subscribe("injector", subjects.lease_subject("n1"))
    assert not may_subscribe("injector", subjects.lease_subject("n2"))


def test_node_names_are_tokens_in_the_allow_list() -> None:
    p = natsauth.permissions("injector", node="node.a")
    assert "chaos.lease.node_a" in p.subscribe
    assert natsauth.user_name("injector", "node.a") == "injector-node_a"


def test_the_shared_injector_identity_reaches_every_node() -> None:
    assert may_publish("injector", "$JS.API.CONSUMER.CREATE.CHAOS_CMD.injector-n2.chaos.cmd.n2", node="*")
    assert may_subscribe("injector", subjects.lease_subject("n2"), node="*")
    assert not may_publish("injector", subjects.command_subject("n2"), node="*")


def test_only_the_scheduler_answers_triggers() -> None:
    assert [i for i in SERVICES if may_subscribe(i, "chaos.trigger.apply")] == ["scheduler"]
    assert [i for i in SERVICES if natsauth.permissions(i).allow_responses] == ["scheduler"]


def test_each_identity_reads_replies_only_under_its_own_inbox() -> None:
    p = natsauth.permissions("client", inbox="_INBOX.UKEY")
    assert p.subscribe == ("_INBOX.UKEY.>",)
    assert not any(matches(s, "_INBOX.UOTHER.x") for s in p.subscribe)


def test_unknown_identity_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown identity"):
        natsauth.permissions("mallory")


def test_nats_server_accepts_the_generated_configuration(tmp_path: Path) -> None:
    conf = natsauth.prepare_local(tmp_path, "n1")
    json.loads(conf.read_text())
    done = subprocess.run([natsserver.binary(), "-c", str(conf), "-t"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr


def test_local_credentials_are_private_and_reused(tmp_path: Path) -> None:
    natsauth.prepare_local(tmp_path, "n1")
    files = sorted(natsauth.creds_dir(tmp_path).iterdir())
    assert [f.name for f in files] == [
        "admin.nk",
        "cli.nk",
        "client.nk",
        "dashboard.nk",
        "guard.nk",
        "injector-n1.nk",
        "nats-server.conf",
        "recorder.nk",
        "scheduler.nk",
        "watcher.nk",
    ]
    assert stat.S_IMODE(natsauth.creds_dir(tmp_path).stat().st_mode) == 0o700
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    seeds = {f.name: f.read_text() for f in files if f.suffix == ".nk"}
    natsauth.prepare_local(tmp_path, "n1")
    assert seeds == {f.name: f.read_text() for f in natsauth.creds_dir(tmp_path).iterdir() if f.suffix == ".nk"}
    assert all(natsauth.public_key(s).startswith("U") for s in seeds.values())


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("nats://alice:s3cret@nats:4222", "nats://***@nats:4222"),
        ("nats://TOKEN@a:1,nats://b:2", "nats://***@a:1,nats://b:2"),
        ("tls://nats.chaosbus.svc:4222", "tls://nats.chaosbus.svc:4222"),
    ],
)
def test_urls_are_redacted_for_logs(text: str, shown: str) -> None:
    assert cblog.redact(text) == shown


def test_state_dir_credentials_go_only_to_the_server_recorded_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHAOSBUS_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("CHAOSBUS_NATS_CREDS", raising=False)
    natsauth.prepare_local(tmp_path, "n1")
    (tmp_path / "nats.url").write_text("nats://127.0.0.1:4222\n")
    assert natsauth.client_auth("cli", url="nats://127.0.0.1:4222").seed_file == natsauth.seed_file("cli", tmp_path)
    assert natsauth.client_auth("cli").seed_file == natsauth.seed_file("cli", tmp_path)
    assert natsauth.client_auth("cli", url="nats://127.0.0.1:5555").seed_file is None  # someone else's server
    given = tmp_path / "given.nk"
    assert natsauth.client_auth("cli", seed=given, url="nats://elsewhere:1").seed_file == given


@pytest.mark.parametrize("name", ["watcher", "scheduler", "recorder", "injector"])
def test_chaosbus_up_starts_each_service_with_its_own_seed_and_metrics_on_loopback(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib

    from chaosbus.cli import up
    from chaosbus.common import service

    argv = up.service_argv(name, "nats://127.0.0.1:4222", 0, "n1", tmp_path / "j.db", tmp_path / "creds")
    captured = []
    monkeypatch.setattr(service, "run", lambda _svc, args, _main: captured.append(args))
    importlib.import_module(f"chaosbus.{name}.__main__").main(argv[3:])
    [args] = captured
    assert args.metrics_addr == "127.0.0.1"
    user = natsauth.user_name(name, "n1" if name == "injector" else "")
    assert Path(args.nats_creds) == tmp_path / "creds" / f"{user}.nk"
