"""Signing for tests that play the scheduler, the operator or the SLO guard: one key pair per role
and test session, the trust an injector under test gets, and publishers that seal what they
send as the real scheduler and `chaosbus halt` do.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from chaosbus.common import bus as busmod
from chaosbus.common import messages as m
from chaosbus.common import signing, subjects

SCHEDULER_KEY = Ed25519PrivateKey.generate()
OPERATOR_KEY = Ed25519PrivateKey.generate()
GUARD_KEY = Ed25519PrivateKey.generate()
SCHEDULER = signing.Signer(SCHEDULER_KEY)
OPERATOR = signing.Signer(OPERATOR_KEY)
GUARD = signing.Signer(GUARD_KEY)
TRUST = signing.Trust.of(
    [
        signing.TrustedKey(SCHEDULER.kid, "scheduler", SCHEDULER_KEY.public_key()),
        signing.TrustedKey(OPERATOR.kid, "operator", OPERATOR_KEY.public_key()),
        signing.TrustedKey(GUARD.kid, "guard", GUARD_KEY.public_key()),
    ]
)
COMMAND_TTL_S = 300.0


def write_keys(directory: Path) -> Path:
    """These keys as files (the layout `chaosbus keys generate` makes), for a service process."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    for role, key in (("scheduler", SCHEDULER_KEY), ("operator", OPERATOR_KEY), ("guard", GUARD_KEY)):
        (directory / f"{role}.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        (directory / f"{role}.key").chmod(0o600)
        (directory / f"{role}.pub").write_bytes(
            key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        )
    return directory


def seal_command(
    cmd: m.NodeCommand, *, signer: signing.Signer = SCHEDULER, ttl_s: float = COMMAND_TTL_S, now: float | None = None
) -> bytes:
    return signer.seal_message(subjects.command_subject(cmd.node), cmd, ttl_s=ttl_s, now=now)


async def publish_command(bus: busmod.Bus, cmd: m.NodeCommand, *, msg_id: str | None = None) -> None:
    """As the scheduler sends it: signed, on the node's command subject."""
    await bus.publish(
        subjects.COMMANDS,
        subjects.command_subject(cmd.node),
        cmd,
        msg_id=msg_id or cmd.command_id,
        seal=lambda subject, data: SCHEDULER.seal(subject, data, ttl_s=COMMAND_TTL_S),
    )


async def publish_lease(bus: busmod.Bus, lease: m.NodeLease) -> None:
    subject = subjects.lease_subject(lease.node)
    await bus.nc.publish(subject, SCHEDULER.seal_message(subject, lease, ttl_s=max(lease.ttl_s, 1.0) + 30))


async def put_halt(bus: busmod.Bus, state: m.HaltState) -> int:
    """The KV copy only, signed by the operator, as `chaosbus halt` writes it; returns its revision."""
    kv = await bus.kv(subjects.CONTROL.name)
    return await kv.put(subjects.HALT_KEY, OPERATOR.seal_message(signing.CONTROL_AUD, state, ttl_s=None))
