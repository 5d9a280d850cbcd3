"""The ELF check reads real binaries: the Python interpreter running the
tests is dynamically linked, and a static ELF is made by hand."""
from __future__ import annotations

import struct
import sys
from pathlib import Path

from quorum.audit import elf_dynamic_parts


def _check(data: bytes):
    return elf_dynamic_parts(data[:64], lambda off, n: data[off:off + n])


def test_dynamic_interpreter_is_found():
    exe = Path(sys.executable).resolve().read_bytes()
    found = _check(exe)
    assert any("PT_INTERP" in f for f in found) and any("PT_DYNAMIC" in f for f in found)


def test_static_elf_passes_and_non_elf_is_ignored():
    # A minimal 64-bit little-endian ELF header with one PT_LOAD program header.
    eh = bytearray(64)
    eh[:4], eh[4], eh[5], eh[6] = b"\x7fELF", 2, 1, 1
    struct.pack_into("<Q", eh, 0x20, 64)          # e_phoff
    struct.pack_into("<HH", eh, 0x36, 56, 1)      # e_phentsize, e_phnum
    ph = bytearray(56)
    struct.pack_into("<I", ph, 0, 1)              # PT_LOAD
    assert _check(bytes(eh + ph)) == []
    assert _check(b"#!/bin/sh\necho hi\n" + bytes(64)) == []
