"""Cluster mode's mutual TLS, for real: nats-server started from the Secret `chaosbus nats-secrets`
generates (TLS with client verification, nkey users with allow-lists), and clients holding the
identity Secrets as their pods mount them. The right certificate and seed connect; no
certificate, a certificate from another CA, or a good certificate without a seed are refused.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
import yaml

from chaosbus.cli import natssecrets
from chaosbus.common import bus as busmod
from chaosbus.common import natsauth, natsserver, natstls, subjects

SERVICE_NAME = "nats.chaosbus.svc"  # in the server's certificate; the test reaches it on loopback


def _mount(path: Path, data: dict[str, str]) -> Path:
    path.mkdir(parents=True)
    for name, text in data.items():
        natsauth.write_private(path / name, text)
    return path


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[str, dict[str, Path]]]:
    """(the server's tls:// URL, each identity Secret's mount directory)."""
    docs = {
        d["metadata"]["name"]: d["stringData"]
        for d in yaml.safe_load_all(natssecrets.secrets_yaml(namespace="chaosbus", service="nats"))
    }
    server_dir = _mount(tmp_path / "server", docs.pop(natssecrets.SERVER_SECRET))
    conf = server_dir / "nats.conf"
    conf.write_text(conf.read_text().replace(natssecrets.SERVER_TLS_DIR, str(server_dir)))
    mounts = {name: _mount(tmp_path / name, data) for name, data in docs.items()}
    server = natsserver.start(tmp_path / "nats", config_file=conf, log_file=tmp_path / "nats-server.log")
    try:
        yield server.url.replace("nats://", "tls://"), mounts
    finally:
        server.stop()


async def _connect(url: str, **opts: Any) -> nats.NATS:
    return await nats.connect(
        url, allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=2, tls_hostname=SERVICE_NAME, **opts
    )


def _options(mount: Path) -> dict[str, Any]:
    return natsauth.ClientAuth(mount / "nkey", mount).connect_options()


def test_the_right_certificate_and_seed_connect_and_keep_their_allow_list(cluster: tuple[str, dict[str, Path]]) -> None:
    url, mounts = cluster

    async def run() -> tuple[bool, bool]:
        nc = await _connect(url, **_options(mounts["chaosbus-nats-admin"]))
        try:
            js = nc.jetstream()
            await js.add_stream(name="CHAOS_TEST", subjects=["chaos.cmd.*"])
        finally:
            await nc.close()
        client = await _connect(url, **_options(mounts["chaosbus-nats-client"]))
        try:
            try:
                await client.jetstream().publish("chaos.cmd.n1", b"{}", timeout=1.0)
                forged = True
            except nats.errors.TimeoutError:
                forged = False
            return client.is_connected, forged
        finally:
            await client.close()

    connected, forged = asyncio.run(run())
    assert connected and not forged


def test_no_client_certificate_is_refused(cluster: tuple[str, dict[str, Path]]) -> None:
    url, mounts = cluster
    opts = _options(mounts["chaosbus-nats-scheduler"])
    opts["tls"] = ssl.create_default_context(cafile=str(mounts["chaosbus-nats-scheduler"] / "ca.crt"))
    with pytest.raises((OSError, nats.errors.Error, asyncio.TimeoutError)):
        asyncio.run(_connect(url, **opts))


def test_a_certificate_from_another_ca_is_refused(cluster: tuple[str, dict[str, Path]], tmp_path: Path) -> None:
    url, mounts = cluster
    other_ca = natstls.new_ca("someone else's CA")
    leaf = natstls.issue(other_ca, "scheduler")
    forged = _mount(
        tmp_path / "forged",
        {
            "tls.crt": leaf.cert.decode(),
            "tls.key": leaf.key.decode(),
            "ca.crt": (mounts["chaosbus-nats-scheduler"] / "ca.crt").read_text(),
        },
    )
    opts = _options(mounts["chaosbus-nats-scheduler"])
    opts["tls"] = natsauth.client_tls_context(forged)
    with pytest.raises((OSError, nats.errors.Error, asyncio.TimeoutError)):
        asyncio.run(_connect(url, **opts))


def test_a_good_certificate_without_a_seed_is_refused(cluster: tuple[str, dict[str, Path]]) -> None:
    url, mounts = cluster
    opts = natsauth.ClientAuth(None, mounts["chaosbus-nats-scheduler"]).connect_options()
    # Not an nkey user, so nats-server asks the auth service (auth callout), which no test runs
    # here: the connection is never admitted (tests/kube/test_auth_callout.py has the service).
    with pytest.raises((nats.errors.Error, asyncio.TimeoutError, TimeoutError)):
        asyncio.run(_connect(url, **opts))


def test_every_identity_secret_holds_its_own_client_certificate(cluster: tuple[str, dict[str, Path]]) -> None:
    _, mounts = cluster
    mounts = {n: m for n, m in mounts.items() if n != natssecrets.DASHBOARD_TOKENS_SECRET}  # not a NATS identity
    names = set()
    for name, mount in mounts.items():
        leaf = natstls.KeyPair((mount / "tls.crt").read_bytes(), (mount / "tls.key").read_bytes())
        names.add(leaf.certificate().subject.rfc4514_string())
        secret = mount / ("tls.key" if name == natssecrets.NODE_INJECTORS_SECRET else "nkey")
        assert secret.stat().st_mode & 0o777 == 0o600, name
    assert len(names) == len(mounts)


def test_the_services_connection_path_over_mutual_tls(tmp_path: Path) -> None:
    """bus.connect with a ClientAuth (what every service and the CLI use): the admin declares,
    the CLI identity writes its bucket and is refused another's, all over mutual TLS.
    """
    ca = natstls.new_ca()
    server = natstls.issue(ca, "nats", server_names=["127.0.0.1"])
    tls_dir = _mount(
        tmp_path / "server",
        {"tls.crt": server.cert.decode(), "tls.key": server.key.decode(), "ca.crt": ca.cert.decode()},
    )
    auths = {}
    users = []
    for user in (natsauth.ADMIN, "cli"):
        seed = natsauth.new_seed()
        key = natsauth.public_key(seed)
        leaf = natstls.issue(ca, user)
        mount = _mount(
            tmp_path / user,
            {"nkey": seed, "tls.crt": leaf.cert.decode(), "tls.key": leaf.key.decode(), "ca.crt": ca.cert.decode()},
        )
        auths[user] = natsauth.ClientAuth(mount / "nkey", mount, admin=user == natsauth.ADMIN)
        users.append(natsauth.User(key, natsauth.permissions(user, inbox=natsauth.inbox_prefix(key))))
    conf = tmp_path / "nats.conf"
    conf.write_text(
        natsauth.server_config(
            users, tls=natsauth.ServerTls(str(tls_dir / "tls.crt"), str(tls_dir / "tls.key"), str(tls_dir / "ca.crt"))
        )
    )
    srv = natsserver.start(tmp_path / "nats", config_file=conf)
    url = srv.url.replace("nats://", "tls://")

    async def run() -> tuple[bool, bool]:
        admin = await busmod.connect(url, "admin", auth=auths[natsauth.ADMIN])
        try:
            await admin.ensure()
        finally:
            await admin.close()
        cli = await busmod.connect(url, "cli", auth=auths["cli"])
        try:
            await (await cli.kv(subjects.OBJECT_STORE.name)).put("Pod.default.x", b"{}")
            try:
                await cli.js.publish(f"$KV.{subjects.TARGETS.name}.pod.default.x", b"{}", timeout=1.0)
                forged = True
            except (nats.errors.Error, TimeoutError):
                forged = False
            return cli.nc.is_connected, forged
        finally:
            await cli.close()

    try:
        assert asyncio.run(run()) == (True, False)
    finally:
        srv.stop()
