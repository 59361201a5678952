"""The GolangChaos payload: Go amd64 prologues relocated exactly (the morestack jump redirected),
unknown code refused, and the stub's layout (its data read RIP-relative, the message in place)."""

from __future__ import annotations

import struct

import pytest

from chaosbus.injector.backends import gostub

# database/sql.(*DB).QueryContext as Go 1.19 compiles it: cmp 0x10(%r14),%rsp; jbe +0x180;
# sub $0x78,%rsp; mov %rbp,0x70(%rsp); lea 0x70(%rsp),%rbp
GO119 = bytes.fromhex("493b66100f868001000048 83ec78 48896c2470 488d6c2470".replace(" ", ""))
# The newer frame set-up: cmp; jbe rel8; push %rbp; mov %rsp,%rbp; sub $0x20,%rsp
SHORT = bytes.fromhex("493b6610 7630 55 4889e5 4883ec20 90909090".replace(" ", ""))
# A large frame: lea -0x1000(%rsp),%r12; cmp 0x10(%r14),%r12; jbe rel32
LARGE = bytes.fromhex("4c8da42400f0ffff 4d3b6610 0f8600010000 55 4889e5".replace(" ", ""))


@pytest.mark.parametrize(
    ("code", "length", "jbe_from", "jbe_rel"),
    [
        (GO119, 14, 4 + 6, 0x180),
        (SHORT, 14, 4 + 2, 0x30),
        (LARGE, 18, 8 + 4 + 6, 0x100),
    ],
)
def test_prologues_are_relocated_whole(code: bytes, length: int, jbe_from: int, jbe_rel: int) -> None:
    r = gostub.relocate_prologue(0x4A7240, code)
    assert r.length == length >= gostub.JUMP_LEN
    assert r.jbe_target == 0x4A7240 + jbe_from + jbe_rel
    assert r.jbe_at is not None and r.code[r.jbe_at - 2 : r.jbe_at] == b"\x0f\x86"


def test_unknown_code_is_refused() -> None:
    with pytest.raises(gostub.UnknownPrologue, match="not a Go amd64 prologue"):
        gostub.relocate_prologue(0x1000, bytes.fromhex("f30f1efa554889e5") + bytes(24))  # endbr64: C


def test_payload_layout_and_jumps() -> None:
    p = gostub.build_payload([(0x4A7240, GO119), (0x4A9000, SHORT)], itab=0x4EF9A8, deadline_s=1_800_000_000)
    code = p.code
    assert code[:8] == gostub.MAGIC and p.relocs == (gostub.OFF_ERROR,)
    deadline, itab, msg_off, msg_len = struct.unpack_from("<qQQQ", code, gostub.OFF_DEADLINE)
    assert (deadline, itab) == (1_800_000_000, 0x4EF9A8)
    assert code[msg_off : msg_off + msg_len] == gostub.MESSAGE.encode()
    assert len(p.entries) == 2 and p.entries[0] == gostub.CODE_OFFSET
    for entry, (addr, first) in zip(p.entries, [(0x4A7240, GO119), (0x4A9000, SHORT)], strict=True):
        stub = code[entry:]
        # the cmp reads the deadline RIP-relative: its displacement lands on OFF_DEADLINE
        cmp_at = stub.index(b"\x48\x3b\x05")
        rel = struct.unpack_from("<i", stub, cmp_at + 3)[0]
        assert entry + cmp_at + 7 + rel == gostub.OFF_DEADLINE
        # after the relocated prologue, a far jump back to the first byte it did not cover
        back = struct.pack("<Q", addr + gostub.relocate_prologue(addr, first).length)
        assert b"\xff\x25\0\0\0\0" + back in stub


def test_looks_patched() -> None:
    assert gostub.looks_patched(b"\xff\x25\0\0\0\0" + bytes(8))
    assert not gostub.looks_patched(GO119)
