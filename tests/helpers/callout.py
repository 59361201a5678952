"""nats-server as `chaosbus nats-secrets` configures it for cluster mode: nkey users plus the auth
callout, every stream declared by the admin identity; for the auth-callout tests.
"""

from __future__ import annotations

from pathlib import Path

from chaosbus.common import bus as busmod
from chaosbus.common import natsauth, natsserver


async def callout_server(tmp: Path, users: tuple[str, ...]) -> tuple[natsserver.EmbeddedServer, str]:
    """The started server (nkey users: the admin and `users`, seeds under `tmp`) and the callout
    issuer's seed, which signs the users the auth service issues.
    """
    issuer = natsauth.new_seed(account=True)
    known = []
    for user in (natsauth.ADMIN, *users):
        seed = natsauth.ensure_seed(natsauth.seed_file(user, tmp))
        key = natsauth.public_key(seed)
        known.append(natsauth.User(key, natsauth.permissions(user, inbox=natsauth.inbox_prefix(key))))
    conf = tmp / "nats.conf"
    conf.write_text(natsauth.server_config(known, callout=natsauth.AuthCallout(natsauth.public_key(issuer))))
    server = natsserver.start(tmp / "nats", config_file=conf, log_file=tmp / "nats-server.log")
    admin = await busmod.connect(
        server.url, "test-admin", auth=natsauth.ClientAuth(natsauth.seed_file(natsauth.ADMIN, tmp), admin=True)
    )
    await admin.ensure()
    await admin.close()
    return server, issuer
