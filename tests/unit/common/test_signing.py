"""The signed envelope on its own: what `Trust.open` refuses and why, key files, replays."""

from __future__ import annotations

import stat
import time
from pathlib import Path

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from chaosbus.common import messages as m
from chaosbus.common import signing

KEY = Ed25519PrivateKey.generate()
SIGNER = signing.Signer(KEY)
TRUST = signing.Trust.of([signing.TrustedKey(SIGNER.kid, "scheduler", KEY.public_key())])
NOW = 1_000_000.0
LEASE = m.NodeLease(node="n1", ttl_s=15.0, held=["a"])


def seal(**kw: float | None) -> bytes:
    return SIGNER.seal_message("chaos.lease.n1", LEASE, ttl_s=kw.get("ttl_s", 60.0), now=kw.get("now", NOW))


def refused(data: bytes, **kw: object) -> signing.Refused:
    args: dict[str, object] = {"aud": "chaos.lease.n1", "role": "scheduler", "now": NOW, **kw}
    with pytest.raises(signing.Refused) as err:
        TRUST.open(data, **args)  # type: ignore[arg-type]
    return err.value


def test_a_valid_message_opens_to_its_payload() -> None:
    opened = TRUST.open(seal(), aud="chaos.lease.n1", role="scheduler", now=NOW + 1)
    assert msgspec.json.decode(opened.payload, type=m.NodeLease) == LEASE
    assert opened.kid == SIGNER.kid and opened.claims.exp == NOW + 60.0


@pytest.mark.parametrize(
    ("data", "kw", "reason", "why"),
    [
        (msgspec.json.encode(LEASE), {}, "unsigned", "not a signed envelope"),
        (b"\xff not json", {}, "unsigned", "not a signed envelope"),
        (seal(), {"role": "operator"}, "forged", "a scheduler key may not sign this"),
        (seal(), {"aud": "chaos.lease.n2"}, "forged", "meant for 'chaos.lease.n1'"),
        (seal().replace(b'"ttl_s":15.0', b'"ttl_s":1e12'), {}, "forged", "bad signature"),
        (seal(), {"now": NOW + 60.0}, "expired", "expired 0.0s ago"),
        (seal(now=NOW + 31.0), {}, "expired", "in the future"),
        (seal(ttl_s=None), {}, "expired", "carries no expiry"),
        (seal(ttl_s=7200.0), {}, "expired", "more than the 3600s allowed"),
    ],
    # Named by the expected refusal: an id made of the sealed bytes (fresh keys per process) would
    # differ between pytest-xdist's workers, which then refuse to run.
    ids=lambda value: value if isinstance(value, str) else "-",
)
def test_refusals_name_their_reason(data: bytes, kw: dict[str, object], reason: str, why: str) -> None:
    err = refused(data, **kw)
    assert err.reason == reason and why in err.detail


def test_an_unknown_key_is_forged_even_with_a_good_signature() -> None:
    other = signing.Signer(Ed25519PrivateKey.generate())
    err = refused(other.seal_message("chaos.lease.n1", LEASE, ttl_s=60.0, now=NOW))
    assert err.reason == "forged" and err.kid == other.kid


def test_kill_switch_states_need_no_expiry_where_the_receiver_says_so() -> None:
    trust = signing.Trust.of([signing.TrustedKey(SIGNER.kid, "operator", KEY.public_key())])
    data = SIGNER.seal_message(signing.CONTROL_AUD, m.HaltState(halted=True), ttl_s=None, now=NOW)
    opened = trust.open(data, aud=signing.CONTROL_AUD, role="operator", now=NOW + 1e8, expires=False)
    assert msgspec.json.decode(opened.payload, type=m.HaltState).halted
    assert signing.peek(data) == opened.payload and signing.peek(b"{}") == b"{}"


def test_sequences_increase_across_signers_of_one_key() -> None:
    first = signing.Signer(KEY)
    a = [first.next_seq() for _ in range(3)]
    b = signing.Signer(KEY).next_seq()  # a restarted scheduler: continues above, from the clock
    assert a == sorted(set(a)) and b > a[-1]


def test_the_replay_book() -> None:
    book = signing.ReplayBook()
    opened = TRUST.open(seal(), aud="chaos.lease.n1", role="scheduler", now=NOW)
    book.check_once(opened)
    book.mark(opened.kid, opened.claims.seq, opened.claims.exp)
    with pytest.raises(signing.Refused, match="replayed"):
        book.check_once(opened)
    book.prune(opened.claims.exp)  # expired: the expiry refuses it from now on, the book forgets it
    book.check_once(opened)
    book.check_newer(opened, "lease")
    with pytest.raises(signing.Refused, match="is not after"):
        book.check_newer(opened, "lease")


def test_key_files_are_private_created_once_and_load_as_trust(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    assert len(signing.ensure_keys(keys)) == 3 and signing.ensure_keys(keys) == []
    for role in signing.ROLES:
        assert stat.S_IMODE((keys / f"{role}.key").stat().st_mode) == 0o600
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    signing.write_key_pair(keys / "next", "scheduler")
    (keys / "scheduler-next.pub").write_bytes((keys / "next" / "scheduler.pub").read_bytes())
    trust = signing.Trust.from_dir(keys)
    assert len(trust.kids("scheduler")) == 2 and len(trust.kids("operator")) == 1  # rotation: both trusted
    assert len(trust.kids("guard")) == 1
    new = signing.Signer.from_file(keys / "next" / "scheduler.key")
    assert new.kid in trust.kids("scheduler")
    with pytest.raises(FileExistsError):
        signing.write_key_pair(keys, "operator")  # never overwritten


def test_the_guard_key_signs_kill_switch_states_that_only_halt(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    signing.ensure_keys(keys)
    trust = signing.Trust.from_dir(keys)
    guard = signing.Signer.from_file(keys / "guard.key")
    sealed = guard.seal(signing.CONTROL_AUD, b"{}", ttl_s=None)
    opened = trust.open(sealed, aud=signing.CONTROL_AUD, role=signing.HALT_ROLES, now=time.time(), expires=False)
    assert opened.role == "guard"
    assert signing.may_sign_halt_state("guard", True) and not signing.may_sign_halt_state("guard", False)
    assert signing.may_sign_halt_state("operator", False) and not signing.may_sign_halt_state("scheduler", True)
    with pytest.raises(signing.Refused, match="a guard key may not sign this"):
        trust.open(guard.seal("chaos.cmd.n1", b"{}", ttl_s=60), aud="chaos.cmd.n1", role="scheduler", now=time.time())


class CommandBeforeTheCarriedLease(m.Message, kw_only=True, frozen=True):
    """NodeCommand as an injector older than the carried lease reads it (no `lease` field)."""

    command_id: str
    node: str
    issued_at: float
    actions: list[m.TargetAction] = []


def test_a_command_carrying_a_lease_still_opens_for_an_injector_that_predates_the_field() -> None:
    cmd = m.NodeCommand(
        command_id="c1",
        experiment_uid="u1",
        generation=1,
        kind="PodChaos",
        namespace="default",
        name="x",
        node="n1",
        issued_at=NOW,
        lease=LEASE,
    )
    opened = TRUST.open(
        SIGNER.seal_message("chaos.cmd.n1", cmd, ttl_s=60.0, now=NOW), aud="chaos.cmd.n1", role="scheduler", now=NOW
    )
    # the older reader skips the field (it learns the lease from the next renewal); the newer one gets it
    old = msgspec.json.decode(opened.payload, type=CommandBeforeTheCarriedLease)
    assert (old.command_id, old.node) == ("c1", "n1")
    assert msgspec.json.decode(opened.payload, type=m.NodeCommand).lease == LEASE
    plain = msgspec.json.encode(msgspec.structs.replace(cmd, lease=None))
    assert b"lease" not in plain and msgspec.json.decode(plain, type=m.NodeCommand).lease is None
