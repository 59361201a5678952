"""NATS JWTs for the auth callout (docs/security.md#per-node-identities-in-cluster-mode).

A NATS JWT is three base64url parts, `header.claims.signature`, where the signature is an
Ed25519 signature (an nkey's) over `header.claims` and the issuer is the nkey in `iss`. The
claims are msgspec Structs below, in the shape nats-server reads (nats-io/jwt v2): the
authorization request nats-server sends to the auth service, signed by the server's nkey; the
user JWT the auth service issues, signed by the callout's issuer account nkey; and the response
that carries it. The only cryptography is the `nkeys` package's signing and verification.
"""

from __future__ import annotations

import base64
import hashlib
import time
from typing import Any, TypeVar

import msgspec

C = TypeVar("C")

HEADER = {"typ": "JWT", "alg": "ed25519-nkey"}
VERSION = 2
REQUEST_AUDIENCE = "nats-authorization-request"  # the `aud` of every authorization request
GLOBAL_ACCOUNT = "$G"  # server-configuration mode's one account: where issued users are placed
NO_LIMIT = -1


class JwtError(ValueError):
    """A token that is not a NATS JWT of the expected kind, or whose signature does not hold."""


class ServerId(msgspec.Struct, kw_only=True):
    name: str = ""
    host: str = ""
    id: str = ""
    version: str = ""


class ClientInfo(msgspec.Struct, kw_only=True):
    host: str = ""
    id: int = 0
    user: str = ""
    name: str = ""
    kind: str = ""
    type: str = ""


class ConnectOpts(msgspec.Struct, kw_only=True):
    auth_token: str = ""
    user: str = ""
    name: str = ""
    lang: str = ""
    version: str = ""


class AuthorizationRequest(msgspec.Struct, kw_only=True):
    server_id: ServerId
    user_nkey: str
    client_info: ClientInfo = msgspec.field(default_factory=ClientInfo)
    connect_opts: ConnectOpts = msgspec.field(default_factory=ConnectOpts)
    type: str = ""
    version: int = 0


class AuthorizationRequestClaims(msgspec.Struct, kw_only=True):
    iss: str
    sub: str = ""
    aud: str = ""
    iat: int = 0
    exp: int = 0
    nats: AuthorizationRequest


class Allow(msgspec.Struct, kw_only=True, omit_defaults=True):
    allow: list[str] = []


class UserPermissions(msgspec.Struct, kw_only=True):
    pub: Allow
    sub: Allow
    subs: int = NO_LIMIT
    data: int = NO_LIMIT
    payload: int = NO_LIMIT
    type: str = "user"
    version: int = VERSION


class UserClaims(msgspec.Struct, kw_only=True):
    jti: str = ""
    iat: int
    iss: str
    name: str
    sub: str
    aud: str = GLOBAL_ACCOUNT
    exp: int
    nats: UserPermissions


class AuthorizationResponse(msgspec.Struct, kw_only=True):
    jwt: str = ""
    error: str = ""
    type: str = "authorization_response"
    version: int = VERSION


class AuthorizationResponseClaims(msgspec.Struct, kw_only=True):
    jti: str = ""
    iat: int
    iss: str
    sub: str
    aud: str
    exp: int
    nats: AuthorizationResponse


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode(claims: UserClaims | AuthorizationResponseClaims, issuer_seed: str) -> str:
    """The signed JWT of `claims`, issued by the nkey `issuer_seed` (its public key is `iss`)."""
    import nkeys  # type: ignore[import-untyped]

    kp = nkeys.from_seed(issuer_seed.encode())
    try:
        if claims.iss != kp.public_key.decode():
            raise JwtError("the claims' iss is not the signing key's public key")
        # jti: a hash of the claims without it, so that each token names itself (as nats-io/jwt does)
        body = msgspec.json.encode(msgspec.structs.replace(claims, jti=""))
        jti = base64.b32encode(hashlib.sha256(body).digest()).decode().rstrip("=")
        claims = msgspec.structs.replace(claims, jti=jti)
        signing_input = f"{_b64(msgspec.json.encode(HEADER))}.{_b64(msgspec.json.encode(claims))}"
        return f"{signing_input}.{_b64(kp.sign(signing_input.encode()))}"
    finally:
        kp.wipe()


def decode_request(token: str, *, now: float | None = None) -> AuthorizationRequestClaims:
    """An authorization request from nats-server: signed by a server nkey (`N...`), for the
    callout audience, not expired. Raises JwtError otherwise.
    """
    claims = decode(token, AuthorizationRequestClaims, issuer_prefix="N")
    if claims.aud != REQUEST_AUDIENCE or claims.nats.type != "authorization_request":
        raise JwtError(f"not an authorization request (aud {claims.aud!r}, type {claims.nats.type!r})")
    if claims.exp and claims.exp < (time.time() if now is None else now):
        raise JwtError("the authorization request has expired")
    return claims


def public_key_bytes(public_key: str) -> bytes:
    """The raw Ed25519 key inside an nkey public key (base32: a prefix byte, 32 key bytes and a
    CRC-16 of them, which must hold).
    """
    import nkeys

    try:
        raw = base64.b32decode(public_key + "=" * (-len(public_key) % 8))
    except ValueError:
        raise JwtError(f"{public_key!r} is not an nkey") from None
    if len(raw) != 35 or nkeys.crc16(bytearray(raw[:-2])) != int.from_bytes(raw[-2:], "little"):
        raise JwtError(f"{public_key!r} is not an nkey (length or checksum)")
    return raw[1:33]


def decode(token: str, kind: type[C], *, issuer_prefix: str) -> C:
    """Claims of `kind` from a NATS JWT whose signature holds for its `iss`."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    parts = token.strip().split(".")
    if len(parts) != 3:
        raise JwtError("not a JWT (three dot-separated parts expected)")
    try:
        header: dict[str, Any] = msgspec.json.decode(_unb64(parts[0]))
        raw = _unb64(parts[1])
        sig = _unb64(parts[2])
        iss = msgspec.json.decode(raw, type=dict[str, Any]).get("iss", "")
    except (ValueError, msgspec.DecodeError) as e:
        raise JwtError(f"not a JWT: {e}") from None
    if header.get("alg") != HEADER["alg"]:
        raise JwtError(f"unexpected algorithm {header.get('alg')!r}")
    if not isinstance(iss, str) or not iss.startswith(issuer_prefix):
        raise JwtError(f"issuer {iss!r} is not a {issuer_prefix}... nkey")
    try:
        Ed25519PublicKey.from_public_bytes(public_key_bytes(iss)).verify(sig, f"{parts[0]}.{parts[1]}".encode())
    except InvalidSignature:
        raise JwtError(f"the signature does not hold for {iss}") from None
    try:
        return msgspec.json.decode(raw, type=kind)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise JwtError(f"claims: {e}") from None
