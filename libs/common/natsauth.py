"""NATS identities and what nats-server lets each do, generated from the subject table.

Every component connects with its own nkey (an Ed25519 key pair in NATS's encoding, from the
`nkeys` package); nats-server's configuration lists each identity's public key with publish and
subscribe allow-lists computed here from `subjects`, so the table that says who owns a stream is
also what the server enforces. The pure part (permissions, the server configuration, the doc
table) comes first; key files and client connect options follow.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chaosbus.common import config, settings, subjects

JS_API = "$JS.API"
ADMIN = "admin"  # declares streams and buckets (one step at start), never used by a service
OWN_INBOX = "_INBOX.<own public key>"  # as the doc shows a client's reply subjects


@dataclass(frozen=True)
class Permissions:
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    allow_responses: bool = False  # may answer requests it received (request/reply owners)


def user_name(identity: str, node: str = "") -> str:
    """The user an identity connects as: a node injector's is per node (`injector-<node>`)."""
    return f"{identity}-{subjects.token(node)}" if identity == "injector" and node else identity


def _fill(template: str, node: str) -> str:
    """A subject template with `{node}` filled in; the node `*` makes every such token a wildcard."""
    if node == "*":
        return ".".join("*" if "{node}" in t else t for t in template.split("."))
    return template.replace("{node}", subjects.token(node))


def _stream_info(stream: str) -> list[str]:
    return [f"{JS_API}.STREAM.INFO.{stream}"]


def _replay(stream: str) -> list[str]:
    """Ordered (ephemeral) consumers over a whole stream: create, info, flow control, delete."""
    return [
        *_stream_info(stream),
        f"{JS_API}.STREAM.NAMES",
        f"{JS_API}.CONSUMER.CREATE.{stream}",
        f"{JS_API}.CONSUMER.CREATE.{stream}.>",
        f"{JS_API}.CONSUMER.INFO.{stream}.*",
        f"{JS_API}.CONSUMER.DELETE.{stream}.*",
        f"$JS.FC.{stream}.>",
    ]


def _pull(stream: str, durable: str, filter_subject: str) -> list[str]:
    """One durable pull consumer: created only with its own filter (nats-py puts the filter in the
    create subject, and the server checks it against the request), fetched from, acked.
    """
    return [
        *_stream_info(stream),
        f"{JS_API}.CONSUMER.INFO.{stream}.{durable}",
        f"{JS_API}.CONSUMER.CREATE.{stream}.{durable}.{filter_subject}",
        f"{JS_API}.CONSUMER.MSG.NEXT.{stream}.{durable}",
        f"$JS.ACK.{stream}.{durable}.>",
    ]


def _kv_read(bucket: str) -> list[str]:
    stream = f"KV_{bucket}"
    return [
        *_replay(stream),
        f"{JS_API}.DIRECT.GET.{stream}",
        f"{JS_API}.DIRECT.GET.{stream}.>",
        f"{JS_API}.STREAM.MSG.GET.{stream}",
    ]


def _grants(identity: str, node: str) -> tuple[list[str], list[str], bool]:
    pub: list[str] = []
    sub: list[str] = []
    responds = False
    for s in subjects.STREAMS:
        if s.owner == identity:
            pub += [*_stream_info(s.name), *([_fill(t, node) for t in s.owner_subjects] or s.subjects)]
        for c in s.consumers:
            if c.identity != identity:
                continue
            if c.durable:
                pub += _pull(s.name, _fill(c.durable, node), _fill(c.filter, node))
            else:
                pub += _replay(s.name)
    for b in subjects.BUCKETS:
        if any(r.identity == identity for r in b.owners):
            pub += [*_kv_read(b.name), b.subject()]
        elif any(r.identity == identity for r in b.readers):
            pub += _kv_read(b.name)
    for cs in subjects.CORE_SUBJECTS:
        mine = [r for r in cs.readers if r.identity == identity]
        if cs.reply is not None:  # readers send requests; the owner answers them
            if cs.owner == identity:
                sub.append(cs.pattern)
                responds = True
            if mine:
                pub.append(cs.pattern)
            continue
        if cs.owner == identity:
            pub += [_fill(p, node) for p in (cs.owner_subjects or (cs.pattern,))]
        elif identity in cs.also_published_by:
            pub.append(cs.pattern)
        for r in mine:
            sub += [_fill(p, node) for p in (r.subjects or (cs.pattern,))]
    return pub, sub, responds


def permissions(identity: str, *, node: str = "*", inbox: str = OWN_INBOX) -> Permissions:
    """What `identity` may publish and subscribe to. `node` is a node injector's node (`*`: one
    identity shared by every node); `inbox` its reply-subject prefix (see `inbox_prefix`).
    """
    if identity == ADMIN:
        return Permissions(publish=(">",), subscribe=(">",))
    if identity not in subjects.IDENTITIES:
        raise ValueError(f"unknown identity {identity!r}")
    pub, sub, responds = _grants(identity, node)
    return Permissions(publish=_unique(pub), subscribe=_unique([*sub, f"{inbox}.>"]), allow_responses=responds)


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def inbox_prefix(public_key: str) -> str:
    """A client's reply subjects live under its own public key, so no other identity may read them."""
    return f"_INBOX.{public_key}"


@dataclass(frozen=True)
class User:
    public_key: str
    permissions: Permissions


@dataclass(frozen=True)
class ServerTls:
    """Paths as nats-server will see them (in cluster mode: inside its container)."""

    cert: str
    key: str
    ca: str


CALLOUT_TIMEOUT_S = 5


@dataclass(frozen=True)
class AuthCallout:
    """nats-server asks the auth service (identity `auth`) about every connection that is not one
    of the nkey users; its answers are signed by `issuer` (an account nkey's public key).
    """

    issuer: str


def server_config(users: Iterable[User], *, tls: ServerTls | None = None, callout: AuthCallout | None = None) -> str:
    """nats-server's configuration (its format accepts JSON): nkey users with their allow-lists,
    and with `tls` mutual TLS (a client without a certificate from the CA is refused); with
    `callout`, every other connection is judged by the auth service (the nkey users are its
    `auth_users`, which it never sees). Listen address, port and JetStream are given on the
    command line (natsserver.start).
    """
    users = list(users)
    conf: dict[str, Any] = {"authorization": {"users": [_user_entry(u) for u in users]}}
    if callout is not None:
        conf["authorization"]["auth_callout"] = {"issuer": callout.issuer, "auth_users": [u.public_key for u in users]}
        # The auth service asks the Kubernetes API twice per connection: more than the default
        # 2 s on a loaded control plane now and then (an injector refused in time retries anyway).
        conf["authorization"]["timeout"] = CALLOUT_TIMEOUT_S
    if tls is not None:
        conf["tls"] = {"cert_file": tls.cert, "key_file": tls.key, "ca_file": tls.ca, "verify": True, "timeout": 2}
    return json.dumps(conf, indent=2) + "\n"


def _user_entry(u: User) -> dict[str, Any]:
    perms: dict[str, Any] = {
        "publish": {"allow": list(u.permissions.publish)},
        "subscribe": {"allow": list(u.permissions.subscribe)},
    }
    if u.permissions.allow_responses:
        perms["allow_responses"] = True
    return {"nkey": u.public_key, "permissions": perms}


def markdown_table() -> str:
    """Each identity's allow-lists as Markdown, for docs/security.md (a contract test keeps them equal)."""
    rows = ["| identity | may publish | may subscribe |", "|---|---|---|"]
    for identity in subjects.IDENTITIES:
        p = permissions(identity, node="NODE")  # a node injector's own node, shown as <node>
        pub = ", ".join(f"`{s}`" for s in p.publish) + (
            " and replies to requests it received" if p.allow_responses else ""
        )
        rows.append(f"| `{user_name(identity, 'NODE')}` | {pub} | {', '.join(f'`{s}`' for s in p.subscribe)} |")
    rows.append(f"| `{ADMIN}` | `>` (declares streams and buckets at start) | `>` |")
    return "\n".join(rows).replace("NODE", "<node>")


# --- keys and files -------------------------------------------------------------------------------


def new_seed(*, account: bool = False) -> str:
    """A fresh user nkey seed (`SU...`), or an account's (`SA...`: the auth callout's issuer),
    from the operating system's random source.
    """
    import nkeys  # type: ignore[import-untyped]  # with its nacl, ~17 ms that most commands never need

    seed: bytes = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_ACCOUNT if account else nkeys.PREFIX_BYTE_USER)
    return seed.decode()


def public_key(seed: str) -> str:
    import nkeys

    kp = nkeys.from_seed(seed.strip().encode())
    try:
        return str(kp.public_key.decode())
    finally:
        kp.wipe()


def write_private(path: Path, text: str) -> None:
    """Write a secret readable by its owner only (0600, created so, never world-readable meanwhile)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def creds_dir(state: Path | None = None) -> Path:
    return (state or config.state_dir()) / "creds"


def seed_file(user: str, state: Path | None = None) -> Path:
    return creds_dir(state) / f"{user}.nk"


def ensure_seed(path: Path) -> str:
    """The seed in `path`, created at first use (0600) and reused after."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        seed = new_seed()
        write_private(path, seed + "\n")
        return seed


LOCAL_IDENTITIES = ("watcher", "scheduler", "recorder", "cli", "client", "dashboard", "guard")


def prepare_local(state: Path, nodes: str | Sequence[str]) -> Path:
    """Local mode's credentials and server configuration under `state` (`chaosbus up`): a seed per
    identity (a node injector's per node) and the admin's, created at first start and reused;
    the configuration is rewritten each start, so a new node or a changed table takes effect.
    """
    users = [User(public_key(ensure_seed(seed_file(ADMIN, state))), permissions(ADMIN))]
    wanted = [(identity, "") for identity in LOCAL_IDENTITIES]
    wanted += [("injector", node) for node in ([nodes] if isinstance(nodes, str) else nodes)]
    for identity, node in wanted:
        key = public_key(ensure_seed(seed_file(user_name(identity, node), state)))
        users.append(User(key, permissions(identity, node=node or "*", inbox=inbox_prefix(key))))
    path = creds_dir(state) / "nats-server.conf"
    write_private(path, server_config(users))
    return path


@dataclass(frozen=True)
class ClientAuth:
    """How one client proves who it is: an nkey seed file and, in cluster mode, a TLS directory
    holding `ca.crt`, `tls.crt` and `tls.key` (a Kubernetes TLS Secret with its CA).
    """

    seed_file: Path | None = None
    tls_dir: Path | None = None
    admin: bool = False  # declares streams and buckets; without credentials, so does everyone
    # A node injector in cluster mode: its projected ServiceAccount token, read again at every
    # (re)connect because the kubelet renews it; the auth service makes it its node's user.
    token_file: Path | None = None
    inbox: str = ""  # reply subjects of a token user (named after its node: it has no key of its own)

    @property
    def declares(self) -> bool:
        return self.admin or (self.seed_file is None and self.token_file is None)

    def connect_options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {}
        if self.seed_file is not None:
            seed = self.seed_file.read_text().strip()
            opts["nkeys_seed_str"] = seed
            opts["inbox_prefix"] = inbox_prefix(public_key(seed))
        elif self.token_file is not None:
            path = self.token_file
            opts["token"] = lambda: path.read_text().strip()
            opts["connect_timeout"] = CALLOUT_TIMEOUT_S + 1  # nats-server waits for the auth service
            if self.inbox:
                opts["inbox_prefix"] = self.inbox
        if self.tls_dir is not None:
            opts["tls"] = client_tls_context(self.tls_dir)
        return opts


def client_tls_context(tls_dir: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(tls_dir / "ca.crt"))
    ctx.load_cert_chain(str(tls_dir / "tls.crt"), str(tls_dir / "tls.key"))
    return ctx


_process_auth: ClientAuth | None = None


def use(auth: ClientAuth) -> None:
    """This process's credentials, used by every `bus.connect` that is not given its own."""
    global _process_auth
    _process_auth = auth


def process_auth() -> ClientAuth | None:
    return _process_auth


def client_auth(
    user: str, *, seed: str | Path | None = None, tls_dir: str | Path | None = None, url: str | None = None
) -> ClientAuth:
    """Where `user`'s credentials are: the given paths, else CHAOSBUS_NATS_CREDS (or, for a node
    injector in cluster mode, CHAOSBUS_NATS_TOKEN_FILE) and CHAOSBUS_NATS_TLS_DIR, else its seed
    in the state dir when it is readable and `url` is the
    server `chaosbus up` recorded there (none: connect without credentials, as to a test server
    without authorization).
    """
    seed_path = seed or settings.current().nats_creds or None
    token = settings.current().nats_token_file or None
    if seed_path is None and token is not None:
        tls = tls_dir or settings.current().nats_tls_dir or None
        return ClientAuth(None, Path(tls) if tls else None, token_file=Path(token), inbox=inbox_prefix(user))
    if seed_path is None and _is_local_server(url):
        default = seed_file(user)
        seed_path = default if _readable(default) else None
    tls = tls_dir or settings.current().nats_tls_dir or None
    return ClientAuth(Path(seed_path) if seed_path else None, Path(tls) if tls else None)


def _is_local_server(url: str | None) -> bool:
    """Whether `url` is (or defaults to) the server whose credentials the state dir holds."""
    if url is None:
        return True
    try:
        return url.strip() == config.url_file().read_text().strip()
    except OSError:
        return False


def _readable(path: Path) -> bool:
    try:
        return path.is_file() and os.access(path, os.R_OK)
    except OSError:
        return False


def add_auth_arguments(p: argparse.ArgumentParser) -> None:
    """Where this process's NATS credentials are (docs/security.md)."""
    p.add_argument(
        "--nats-creds",
        default=None,
        help="nkey seed file of this identity (default: CHAOSBUS_NATS_CREDS, else "
        "<state dir>/creds/<identity>.nk when readable)",
    )
    p.add_argument(
        "--nats-tls",
        default=None,
        help="directory with ca.crt, tls.crt and tls.key for mutual TLS (default: CHAOSBUS_NATS_TLS_DIR)",
    )


def use_arguments(user: str, args: argparse.Namespace, url: str | None = None) -> None:
    """Every connection this process opens to `url` authenticates as `user` (one process, one identity)."""
    use(client_auth(user, seed=args.nats_creds, tls_dir=args.nats_tls, url=url))
