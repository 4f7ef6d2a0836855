"""A tiny ELF writer for the guest tests.

The guest builder reads kernel modules (.modinfo) and programs (PT_INTERP,
DT_NEEDED, DT_RPATH, DT_RUNPATH). Writing such files here keeps those tests
independent of the host's kernel and libraries; test_guest_elfwriter.py
checks that pyelftools reads what it writes.
"""

from __future__ import annotations

import struct

EM_X86_64 = 62
EM_386 = 3
SHT_PROGBITS, SHT_STRTAB, SHT_DYNAMIC = 1, 3, 6
PT_INTERP = 3
DT_NULL, DT_NEEDED, DT_RPATH, DT_RUNPATH = 0, 1, 15, 29


def build_elf(sections, interp: str | None = None, elfclass: int = 64,
              machine: int = EM_X86_64, etype: int = 3) -> bytes:
    """sections: list of (name, sh_type, data, link_index); index 0 is the null section."""
    is64 = elfclass == 64
    ehsize, phentsize, shentsize = (64, 56, 64) if is64 else (52, 32, 40)
    body = bytearray()
    offset = ehsize + (phentsize if interp else 0)

    interp_off = interp_size = 0
    if interp:
        raw = interp.encode() + b"\0"
        interp_off, interp_size = offset, len(raw)
        body += raw
        offset += len(raw)

    names = bytearray(b"\0")
    placed = []
    for name, sh_type, data, link in sections:
        while offset % 8:
            body += b"\0"
            offset += 1
        name_off = len(names)
        names += name.encode() + b"\0"
        placed.append((name_off, sh_type, offset, len(data), link))
        body += data
        offset += len(data)
    shstr_name = len(names)
    names += b".shstrtab\0"
    placed.append((shstr_name, SHT_STRTAB, offset, len(names), 0))
    body += names
    offset += len(names)
    while offset % 8:
        body += b"\0"
        offset += 1
    shoff = offset
    shnum = len(placed) + 1

    ident = b"\x7fELF" + bytes([2 if is64 else 1, 1, 1, 0]) + b"\0" * 8
    if is64:
        header = ident + struct.pack("<HHIQQQIHHHHHH", etype, machine, 1, 0,
                                     ehsize if interp else 0, shoff, 0, ehsize,
                                     phentsize, 1 if interp else 0, shentsize, shnum, shnum - 1)
        phdr = struct.pack("<IIQQQQQQ", PT_INTERP, 4, interp_off, 0, 0, interp_size, interp_size, 1) if interp else b""
        shdrs = b"\0" * shentsize + b"".join(
            struct.pack("<IIQQQQIIQQ", n, t, 0, 0, o, s, link, 0, 1, 16 if t == SHT_DYNAMIC else 0)
            for n, t, o, s, link in placed)
    else:
        header = ident + struct.pack("<HHIIIIIHHHHHH", etype, machine, 1, 0,
                                     ehsize if interp else 0, shoff, 0, ehsize,
                                     phentsize, 1 if interp else 0, shentsize, shnum, shnum - 1)
        phdr = struct.pack("<IIIIIIII", PT_INTERP, interp_off, 0, 0, interp_size, interp_size, 4, 1) if interp else b""
        shdrs = b"\0" * shentsize + b"".join(
            struct.pack("<IIIIIIIIII", n, t, 0, 0, o, s, link, 0, 1, 8 if t == SHT_DYNAMIC else 0)
            for n, t, o, s, link in placed)
    return bytes(header + phdr + body + shdrs)


def module_elf(modinfo: dict[str, str] | list[tuple[str, str]]) -> bytes:
    """A relocatable ELF with a .modinfo section of key=value strings."""
    items = modinfo.items() if isinstance(modinfo, dict) else modinfo
    data = b"".join(f"{k}={v}".encode() + b"\0" for k, v in items)
    return build_elf([(".modinfo", SHT_PROGBITS, data, 0)], etype=1)


def dynamic_elf(needed=(), rpath: str | None = None, runpath: str | None = None,
                interp: str | None = None, elfclass: int = 64, machine: int = EM_X86_64) -> bytes:
    """A shared object / executable with a .dynamic section (and PT_INTERP if interp)."""
    strtab = bytearray(b"\0")

    def add(text: str) -> int:
        off = len(strtab)
        strtab.extend(text.encode() + b"\0")
        return off

    tags = [(DT_NEEDED, add(n)) for n in needed]
    if rpath is not None:
        tags.append((DT_RPATH, add(rpath)))
    if runpath is not None:
        tags.append((DT_RUNPATH, add(runpath)))
    tags.append((DT_NULL, 0))
    fmt = "<qQ" if elfclass == 64 else "<iI"
    dynamic = b"".join(struct.pack(fmt, t, v) for t, v in tags)
    # Section 1 is .dynstr, section 2 .dynamic (linked to 1).
    return build_elf([(".dynstr", SHT_STRTAB, bytes(strtab), 0),
                      (".dynamic", SHT_DYNAMIC, dynamic, 1)],
                     interp=interp, elfclass=elfclass, machine=machine)
