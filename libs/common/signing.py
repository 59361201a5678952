"""Signed, fresh, single-use messages: Ed25519 (the `cryptography` package) over a `Claims`
document (audience, issued-at, expiry, sequence, payload) carried in a `Signed` envelope.

Three signers, each with its own key pair:
  scheduler  signs node commands (`chaos.cmd.<node>`) and leases (`chaos.lease.<node>`);
  operator   signs the kill switch (`chaosbus halt` / `resume`), so that it works with no scheduler;
  guard      signs the SLO guard's halts: the kill switch's key for a process that must only ever
             engage it (receivers refuse a resume signed by it, see `may_sign_halt_state`).
A receiver trusts a list of public keys per role (several at once while a key is rotated) and
refuses what is unsigned, signed by a key it does not trust for that role, meant for another
audience, expired, or seen before (`ReplayBook`). Verification comes first: nothing inside the
body is decoded before the signature over its exact bytes holds.

Key files live in one directory (`keys_dir()`): `<role>.key` (PKCS#8 PEM, 0600) is the private
key, `<role>*.pub` (SubjectPublicKeyInfo PEM) the public keys a receiver trusts for that role.
Pure but for the key files and the clock, which callers pass in.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from chaosbus.common import config, settings
from chaosbus.common import messages as m

Role = Literal["scheduler", "operator", "guard"]
ROLES: tuple[Role, ...] = ("scheduler", "operator", "guard")
HALT_ROLES: tuple[Role, ...] = ("operator", "guard")  # who may sign a kill-switch state at all
Reason = Literal["unsigned", "forged", "expired", "replayed"]
REASONS: tuple[Reason, ...] = ("unsigned", "forged", "expired", "replayed")
CONTROL_AUD = "control.halt"  # the kill switch's audience, for its KV copy and its broadcast alike
BROADCAST_TTL_S = 60.0  # a kill-switch broadcast is news for a moment; its KV copy never expires
# Signed bytes start with this, so a signature made for chaosbus can never pass for anything else.
_DOMAIN = b"chaosbus.signed.v1\x00"
DEFAULT_SKEW_S = 30.0  # how far a signer's clock may run ahead of a receiver's
DEFAULT_MAX_LIFETIME_S = 3600.0  # a longer-lived message would make the replay memory unbounded

_envelope = msgspec.json.Decoder(m.Signed)
_claims = msgspec.json.Decoder(m.Claims)
_encoder = msgspec.json.Encoder()


class Refused(Exception):
    """A message that must not be acted on; `reason` is the metric label, `detail` the audit's why."""

    def __init__(self, reason: Reason, kid: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.kid, self.detail = reason, kid, detail


def key_id(public: Ed25519PublicKey) -> str:
    """A short, stable name for a public key: the first 16 hex digits of SHA-256 of its raw bytes."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def keys_dir() -> Path:
    """CHAOSBUS_KEYS_DIR, else `keys` in the state dir, where `chaosbus up` creates the keys."""
    env = settings.current().keys_dir
    return Path(env) if env else config.state_dir() / "keys"


def unsigned_mode() -> bool:
    """CHAOSBUS_UNSIGNED=1: send and accept plain messages. Only to measure what signing costs."""
    return settings.current().unsigned


# --- key files ---------------------------------------------------------------------------------


def write_key_pair(directory: Path, role: Role) -> Path:
    """Create `<role>.key` (0600, created exclusively: an existing key is never overwritten) and
    `<role>.pub` in `directory` (0700); returns the private key's path.
    """
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path = directory / f"{role}.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(private)
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (directory / f"{role}.pub").write_bytes(public)
    return path


def ensure_keys(directory: Path) -> list[Path]:
    """Every role's key pair in `directory`, created where missing; returns the private keys created."""
    created = []
    for role in ROLES:
        if not (directory / f"{role}.key").exists():
            created.append(write_key_pair(directory, role))
    os.chmod(directory, 0o700)
    return created


def load_private(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path}: not an Ed25519 private key")
    return key


def load_public(path: Path) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(path.read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path}: not an Ed25519 public key")
    return key


# --- signing -----------------------------------------------------------------------------------


class Signer:
    """Seals payloads for one role. `seq` continues above a previous process's (it starts at the
    current time in microseconds), so a restarted signer is never taken for a replay.
    """

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self.kid = key_id(key.public_key())
        self._seq = 0

    @classmethod
    def from_file(cls, path: Path) -> Signer:
        return cls(load_private(path))

    def next_seq(self) -> int:
        self._seq = max(self._seq + 1, time.time_ns() // 1000)
        return self._seq

    def seal(self, aud: str, payload: bytes, *, ttl_s: float | None, now: float | None = None) -> bytes:
        """The envelope for `payload` (an encoded message), valid for `aud` during `ttl_s`
        seconds (None: no expiry, for kill-switch states).
        """
        iat = time.time() if now is None else now
        claims = m.Claims(
            aud=aud,
            iat=iat,
            exp=0.0 if ttl_s is None else iat + ttl_s,
            seq=self.next_seq(),
            payload=msgspec.Raw(payload),
        )
        body = _encoder.encode(claims)
        return _encoder.encode(m.Signed(kid=self.kid, sig=self._key.sign(_DOMAIN + body), body=msgspec.Raw(body)))

    def seal_message(self, aud: str, msg: m.Message, *, ttl_s: float | None, now: float | None = None) -> bytes:
        return self.seal(aud, _encoder.encode(msg), ttl_s=ttl_s, now=now)


# --- verifying ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrustedKey:
    kid: str
    role: Role
    public: Ed25519PublicKey
    source: str = ""


@dataclass(frozen=True)
class Opened:
    """A message whose signature, audience and freshness held, and the role of the key that signed it."""

    kid: str
    claims: m.Claims
    role: Role = "scheduler"

    @property
    def payload(self) -> bytes:
        return bytes(self.claims.payload)


@dataclass(frozen=True)
class Trust:
    """The public keys a receiver trusts, by role, and how much clock skew and lifetime it allows."""

    keys: dict[str, TrustedKey]
    skew_s: float = DEFAULT_SKEW_S
    max_lifetime_s: float = DEFAULT_MAX_LIFETIME_S

    @classmethod
    def of(cls, keys: Iterable[TrustedKey], **kw: float) -> Trust:
        return cls({k.kid: k for k in keys}, **kw)

    @classmethod
    def from_dir(cls, directory: Path, **kw: float) -> Trust:
        """Every `scheduler*.pub`, `operator*.pub` and `guard*.pub` in `directory` (none if it does not exist)."""
        found = []
        for role in ROLES:
            for path in sorted(directory.glob(f"{role}*.pub")) if directory.is_dir() else []:
                public = load_public(path)
                found.append(TrustedKey(key_id(public), role, public, str(path)))
        return cls.of(found, **kw)

    def kids(self, role: Role) -> list[str]:
        return sorted(k.kid for k in self.keys.values() if k.role == role)

    def open(self, data: bytes, *, aud: str, role: Role | tuple[Role, ...], now: float, expires: bool = True) -> Opened:
        """Check `data` and return its claims, or raise Refused. `role`: the role (or roles) whose
        keys may sign it. `expires`: the message must carry an expiry within `max_lifetime_s`
        (everything but kill-switch states).
        """
        roles = (role,) if isinstance(role, str) else role
        try:
            env = _envelope.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise Refused("unsigned", "", "not a signed envelope") from None
        key = self.keys.get(env.kid)
        if key is None:
            raise Refused("forged", env.kid, "signed by a key this receiver does not trust")
        if key.role not in roles:
            raise Refused("forged", env.kid, f"a {key.role} key may not sign this (needs {' or '.join(roles)})")
        body = bytes(env.body)
        try:
            key.public.verify(env.sig, _DOMAIN + body)
        except InvalidSignature:
            raise Refused("forged", env.kid, "bad signature") from None
        try:
            claims = _claims.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            raise Refused("forged", env.kid, f"signed but malformed claims: {e}") from None
        if claims.aud != aud:
            raise Refused("forged", env.kid, f"meant for {claims.aud!r}, received as {aud!r}")
        if claims.iat > now + self.skew_s:
            raise Refused("expired", env.kid, f"issued {claims.iat - now:.0f}s in the future")
        if expires:
            if not claims.exp:
                raise Refused("expired", env.kid, "carries no expiry")
            if claims.exp - claims.iat > self.max_lifetime_s:
                raise Refused(
                    "expired",
                    env.kid,
                    f"valid for {claims.exp - claims.iat:.0f}s, more than the {self.max_lifetime_s:.0f}s allowed",
                )
        if claims.exp and claims.exp <= now:
            raise Refused("expired", env.kid, f"expired {now - claims.exp:.1f}s ago")
        return Opened(env.kid, claims, key.role)


def may_sign_halt_state(role: Role, halted: bool) -> bool:
    """Whether a key of `role` may sign this kill-switch state: the operator's both ways, the
    guard's only a halt (a guard that could resume would undo the operator's halts).
    """
    return role == "operator" or (role == "guard" and halted)


def peek(data: bytes) -> bytes:
    """The payload of an envelope WITHOUT checking it (or `data` itself if it is no envelope): only
    for advisory readers, e.g. `chaosbus apply` refusing while halted, never for acting on it.
    """
    try:
        return bytes(_claims.decode(bytes(_envelope.decode(data).body)).payload)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return data


# --- replays -----------------------------------------------------------------------------------


@dataclass
class ReplayBook:
    """What a receiver already accepted from each signer.

    Single-use messages (commands) are remembered by (signer, seq) until they expire: a command
    is redelivered after a crash or a nak, out of order, so "higher than the last" cannot judge
    it; "not seen before and not expired" can, with memory bounded by the expiry. Ordered messages
    (leases) must each be newer than the last accepted on their stream.
    """

    once: dict[tuple[str, int], float] = field(default_factory=dict)  # (kid, seq) -> exp
    highest: dict[tuple[str, str], int] = field(default_factory=dict)  # (kid, stream) -> seq

    def check_once(self, opened: Opened) -> None:
        if (opened.kid, opened.claims.seq) in self.once:
            raise Refused("replayed", opened.kid, f"sequence {opened.claims.seq} was already accepted")

    def mark(self, kid: str, seq: int, exp: float) -> None:
        self.once[(kid, seq)] = exp

    def unmark(self, kid: str, seq: int) -> None:
        self.once.pop((kid, seq), None)

    def check_newer(self, opened: Opened, stream: str) -> None:
        """Refuse unless newer than the last accepted on `stream`; accept it as the last."""
        last = self.highest.get((opened.kid, stream), 0)
        if opened.claims.seq <= last:
            raise Refused("replayed", opened.kid, f"sequence {opened.claims.seq} is not after {last}")
        self.highest[(opened.kid, stream)] = opened.claims.seq

    def prune(self, now: float) -> None:
        for key in [k for k, exp in self.once.items() if exp <= now]:
            del self.once[key]
