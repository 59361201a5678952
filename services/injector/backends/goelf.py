"""The facts GolangChaos needs from an ELF binary: its type, whether it is a Go program, and the
link-time addresses of wanted symbols from its symbol table. Pure over the file's bytes.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass

GO_MARKERS = ("runtime.main", "runtime.goexit")
ITAB_PREFIXES = ("go:itab.", "go.itab.")
CAVE_MARGIN = 64  # zero bytes left between the program headers and a cave


class NotElf(ValueError):
    """Not a 64-bit little-endian x86-64 ELF file."""


@dataclass(frozen=True, slots=True)
class ElfInfo:
    """What GolangChaos needs from a binary: its type (2 ET_EXEC, 3 ET_DYN), whether it is Go,
    whether it has a symbol table, the wanted symbols' link-time addresses and its loadable
    segments (vaddr, file offset, file size) for reading code from the file."""

    e_type: int
    go: bool
    has_symtab: bool
    symbols: dict[str, int]
    loads: tuple[tuple[int, int, int], ...]
    cave: tuple[int, int] | None = None  # (vaddr, length): executable zero bytes no code uses
    itablink: tuple[int, int] | None = None  # (vaddr, size) of the table of every itab's address

    def file_offset(self, vaddr: int) -> int | None:
        for start, offset, size in self.loads:
            if start <= vaddr < start + size:
                return offset + vaddr - start
        return None

    @property
    def first_load(self) -> int:
        return min((v for v, _, _ in self.loads), default=0) & ~0xFFF


def parse_elf(data: bytes | mmap.mmap, wanted: tuple[str, ...]) -> ElfInfo:
    """The ELF facts GolangChaos needs from a 64-bit little-endian binary's bytes.

    Raises:
        NotElf: not such an ELF file (the message says how).
    """
    if len(data) < 64 or data[:4] != b"\x7fELF":
        raise NotElf("not an ELF executable")
    if data[4] != 2 or data[5] != 1:
        raise NotElf("not a 64-bit little-endian ELF executable")
    e_type, e_machine = struct.unpack_from("<HH", data, 16)
    if e_machine != 62:
        raise NotElf(f"not an x86-64 executable (machine {e_machine})")
    e_phoff, e_shoff = struct.unpack_from("<QQ", data, 32)
    e_phentsize, e_phnum, e_shentsize, e_shnum, e_shstrndx = struct.unpack_from("<HHHHH", data, 54)
    loads = []
    headers_at = 0
    for i in range(e_phnum):
        p_type, p_flags, p_offset, p_vaddr, _paddr, p_filesz = struct.unpack_from(
            "<IIQQQQ", data, e_phoff + i * e_phentsize
        )
        if p_type == 1:
            loads.append((p_vaddr, p_offset, p_filesz))
            if p_offset == 0 and p_flags & 1:  # PF_X: the headers are mapped executable
                headers_at = p_vaddr
    sections = []
    for i in range(e_shnum):
        sections.append(struct.unpack_from("<IIQQQQIIQQ", data, e_shoff + i * e_shentsize))
    names_off = sections[e_shstrndx][4] if e_shstrndx < len(sections) else 0

    def name_at(table: int, off: int) -> str:
        end = data.find(b"\0", table + off)
        return data[table + off : end].decode("utf-8", "replace")

    section_names = {name_at(names_off, s[0]) for s in sections} if names_off else set()
    symbols: dict[str, int] = {}
    symtab = next((s for s in sections if s[1] == 2), None)  # SHT_SYMTAB
    want = set(wanted) | set(GO_MARKERS)
    if symtab is not None and symtab[6] < len(sections):
        strtab_off = sections[symtab[6]][4]
        start, size, entsize = symtab[4], symtab[5], symtab[9] or 24
        for off in range(start, start + size - entsize + 1, entsize):
            st_name, _info, _other, _shndx, st_value = struct.unpack_from("<IBBHQ", data, off)
            if st_value == 0 or st_name == 0:
                continue
            end = data.find(b"\0", strtab_off + st_name)
            name = data[strtab_off + st_name : end].decode("utf-8", "replace")
            if name in want:
                symbols[name] = st_value
    go = bool({".gopclntab", ".data.rel.ro.gopclntab", ".go.buildinfo", ".note.go.buildid"} & section_names) or any(
        m in symbols for m in GO_MARKERS
    )
    by_name = {name_at(names_off, sh[0]): sh for sh in sections} if names_off else {}
    # A PIE's are in .data.rel.ro, named .data.rel.ro.gopclntab and .data.rel.ro.itablink.
    pcln = by_name.get(".gopclntab") or by_name.get(".data.rel.ro.gopclntab")
    links = by_name.get(".itablink") or by_name.get(".data.rel.ro.itablink")
    functions = {n for n in want if not n.startswith(ITAB_PREFIXES)} - symbols.keys()
    if functions and pcln is not None:
        text = by_name.get(".text")
        symbols.update(pclntab_functions(data, pcln[4], pcln[5], functions, text[3] if text else 0))
    itablink = (links[3], links[5]) if links is not None else None
    cave = None
    if headers_at:
        # The rest of the first page after the program and section headers, up to the first
        # section's bytes: zero padding the loader maps executable and nothing reads.
        tables = [e_phoff + e_phnum * e_phentsize]
        if e_shoff < 4096:
            tables.append(e_shoff + e_shnum * e_shentsize)
        start = (max(tables) + CAVE_MARGIN + 15) & ~15
        end = min([4096, *(sh[4] for sh in sections if sh[1] != 8 and sh[5] and sh[4] >= start - CAVE_MARGIN)])
        if end > start and not any(data[start - CAVE_MARGIN : end]):
            cave = (headers_at + start, end - start)
    return ElfInfo(e_type, go, symtab is not None, symbols, tuple(loads), cave, itablink)


PCLNTAB_MAGICS = (0xFFFFFFF0, 0xFFFFFFF1)  # Go 1.18-1.19, Go 1.20 on (same layout)


def pclntab_functions(
    data: bytes | mmap.mmap, start: int, size: int, wanted: set[str], text_addr: int
) -> dict[str, int]:
    """Entry addresses of the `wanted` functions from Go's pclntab (which `-ldflags=-s` keeps):
    the header (magic, nfunc, textStart, offsets of the name table and the function table), then
    per function (entry offset from textStart, offset of its _func), each _func starting with its
    entry offset and the offset of its name. Unknown layouts (Go before 1.18) give nothing."""
    if size < 72:
        return {}
    magic, _pad1, _pad2, _min_lc, ptr_size = struct.unpack_from("<IBBBB", data, start)
    if magic not in PCLNTAB_MAGICS or ptr_size != 8:
        return {}
    nfunc, _nfiles, text_start, funcname_off, _cu, _filetab, _pctab, pcln_off = struct.unpack_from(
        "<QQQQQQQQ", data, start + 8
    )
    text_start = text_start or text_addr
    names = start + funcname_off
    pcln = start + pcln_off
    found: dict[str, int] = {}
    encoded = {n.encode() + b"\0": n for n in wanted}
    for i in range(nfunc):
        entry_off, func_off = struct.unpack_from("<II", data, pcln + 8 * i)
        _entry, name_off = struct.unpack_from("<Ii", data, pcln + func_off)
        at = names + name_off
        for raw, name in encoded.items():
            if data[at : at + len(raw)] == raw:
                found[name] = text_start + entry_off
        if len(found) == len(wanted):
            break
    return found
