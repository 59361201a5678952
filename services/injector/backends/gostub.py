"""The code GolangChaos places in a Go program (see gosql.py): per redirected function a stub that,
before the deadline, returns `(nil, &errorString{MESSAGE})` in Go's amd64 register ABI, and from
the deadline on runs the function's relocated prologue and jumps back into it. Pure: bytes in,
bytes out; x86-64 only.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

MESSAGE = "chaosbus: injected sql error"
JUMP_LEN = 14  # jmp *0(%rip) + the 8-byte destination: clobbers no register
NO_DEADLINE = 2**63 - 1
SYS_TIME = 201

# Payload layout: a header the stubs address RIP-relative, then one stub per function.
MAGIC = b"CBGOSQL1"
OFF_DEADLINE = 8  # int64 unix seconds
OFF_ITAB = 16  # absolute address of the itab
OFF_ERROR = 24  # an errors.errorString: string data pointer (page-relative, relocated) and length
OFF_MESSAGE = 40
CODE_OFFSET = 256
MAX_MESSAGE = CODE_OFFSET - OFF_MESSAGE


class UnknownPrologue(ValueError):
    """The function starts with code this patch cannot relocate."""


# Instructions Go's amd64 function prologues are made of (stack check, frame set-up), by prefix:
# (leading bytes, total length). None of them is RIP-relative; the conditional jump to the
# function's morestack block is handled apart.
_PROLOGUE = (
    (b"\x49\x3b\x66\x10", 4),  # cmp 0x10(%r14), %rsp
    (b"\x4d\x3b\x66\x10", 4),  # cmp 0x10(%r14), %r12
    (b"\x4c\x8d\x64\x24", 5),  # lea disp8(%rsp), %r12
    (b"\x4c\x8d\xa4\x24", 8),  # lea disp32(%rsp), %r12
    (b"\x55", 1),  # push %rbp
    (b"\x48\x89\xe5", 3),  # mov %rsp, %rbp
    (b"\x48\x83\xec", 4),  # sub $imm8, %rsp
    (b"\x48\x81\xec", 7),  # sub $imm32, %rsp
    (b"\x48\x89\x6c\x24", 5),  # mov %rbp, disp8(%rsp)
    (b"\x48\x89\xac\x24", 8),  # mov %rbp, disp32(%rsp)
    (b"\x48\x8d\x6c\x24", 5),  # lea disp8(%rsp), %rbp
    (b"\x48\x8d\xac\x24", 8),  # lea disp32(%rsp), %rbp
)


@dataclass(frozen=True, slots=True)
class Relocated:
    """A function's first whole instructions covering JUMP_LEN bytes, ready to run elsewhere:
    `code` with the jbe (if any) still to be pointed at a far jump to `jbe_target`."""

    code: bytes
    length: int  # bytes of the original function they cover
    jbe_at: int | None = None  # offset in `code` of the rel32 of a `jbe`
    jbe_target: int = 0


def relocate_prologue(address: int, code: bytes) -> Relocated:
    """Decodes the prologue at `address` (its bytes `code`) up to JUMP_LEN bytes.

    Raises:
        UnknownPrologue: an instruction this decoder does not know.
    """
    out = bytearray()
    pos = 0
    jbe_at: int | None = None
    jbe_target = 0
    while pos < JUMP_LEN:
        rest = code[pos:]
        if rest[:1] == b"\x76" and len(rest) >= 2:  # jbe rel8
            jbe_target = address + pos + 2 + struct.unpack_from("<b", rest, 1)[0]
            jbe_at = len(out) + 2
            out += b"\x0f\x86\0\0\0\0"
            pos += 2
            continue
        if rest[:2] == b"\x0f\x86" and len(rest) >= 6:  # jbe rel32
            jbe_target = address + pos + 6 + struct.unpack_from("<i", rest, 2)[0]
            jbe_at = len(out) + 2
            out += b"\x0f\x86\0\0\0\0"
            pos += 6
            continue
        for prefix, n in _PROLOGUE:
            if rest.startswith(prefix) and len(rest) >= n:
                out += rest[:n]
                pos += n
                break
        else:
            raise UnknownPrologue(
                f"unexpected code at the entry of the function at {address:#x}: "
                f"{code[: JUMP_LEN + 4].hex()} (not a Go amd64 prologue this patch knows)"
            )
    return Relocated(bytes(out), pos, jbe_at, jbe_target)


def _far_jump(dest: int) -> bytes:
    return b"\xff\x25\0\0\0\0" + struct.pack("<Q", dest)


def _rel32(frm: int, to: int) -> bytes:
    return struct.pack("<i", to - frm)


@dataclass(frozen=True, slots=True)
class Payload:
    code: bytes
    relocs: tuple[int, ...]  # offsets of 8-byte words the page's address is added to
    entries: tuple[int, ...]  # per function, the stub's offset


def _stub(o: int, relocated: Relocated, resume_at: int) -> bytes:
    """One function's stub at payload offset `o` (see the module docstring)."""
    s = bytearray()
    s += b"\x50\x51\x57\x41\x53"  # push rax, rcx, rdi, r11: what the syscall and its argument clobber
    s += b"\xb8" + struct.pack("<I", SYS_TIME)  # mov $SYS_time, %eax
    s += b"\x31\xff"  # xor %edi, %edi
    s += b"\x0f\x05"  # syscall
    s += b"\x48\x3b\x05" + _rel32(o + len(s) + 7, OFF_DEADLINE)  # cmp deadline(%rip), %rax
    s += b"\x41\x5b\x5f\x59\x58"  # pop r11, rdi, rcx, rax (flags kept)
    jge_at = len(s)
    s += b"\x0f\x8d\0\0\0\0"  # jge passthrough
    s += b"\x31\xc0"  # xor %eax, %eax: *Rows = nil
    s += b"\x48\x8b\x1d" + _rel32(o + len(s) + 7, OFF_ITAB)  # mov itab(%rip), %rbx
    s += b"\x48\x8d\x0d" + _rel32(o + len(s) + 7, OFF_ERROR)  # lea error(%rip), %rcx
    s += b"\xc3"  # ret
    passthrough = len(s)
    s[jge_at + 2 : jge_at + 6] = _rel32(o + jge_at + 6, o + passthrough)
    prologue = len(s)
    s += relocated.code
    s += _far_jump(resume_at)
    if relocated.jbe_at is not None:
        slot = len(s)
        s += _far_jump(relocated.jbe_target)
        at = prologue + relocated.jbe_at
        s[at : at + 4] = _rel32(o + at + 4, o + slot)
    return bytes(s)


def build_payload(functions: list[tuple[int, bytes]], itab: int, deadline_s: int, message: str = MESSAGE) -> Payload:
    """The page codepatch maps: `functions` are (runtime address, first bytes) of each function to
    redirect; `itab` the runtime address of *errors.errorString's `error` itab; from `deadline_s`
    (unix seconds) on, the functions run normally again.

    Raises:
        UnknownPrologue: a prologue this patch cannot relocate.
    """
    text = message.encode()[:MAX_MESSAGE]
    head = bytearray(CODE_OFFSET)
    head[0:8] = MAGIC
    struct.pack_into("<qQQQ", head, OFF_DEADLINE, min(deadline_s, NO_DEADLINE), itab, OFF_MESSAGE, len(text))
    head[OFF_MESSAGE : OFF_MESSAGE + len(text)] = text
    code = bytearray(head)
    entries = []
    for address, first in functions:
        relocated = relocate_prologue(address, first)
        entries.append(len(code))
        code += _stub(len(code), relocated, address + relocated.length)
        code += b"\xcc" * (-len(code) % 16)
    return Payload(bytes(code), (OFF_ERROR,), tuple(entries))


def looks_patched(code: bytes) -> bool:
    """Whether a function's first bytes are codepatch's jump."""
    return code[:6] == b"\xff\x25\0\0\0\0"
