"""Text that reaches a terminal.

File names, log lines and values from definitions are chosen by whoever
wrote a package, a tarball or a build script.  Printed raw, an escape
sequence in one of them can rewrite the screen, hide a line or change the
title of the terminal: everything quorum prints for a person that it did not
write itself goes through ``printable``.
"""
from __future__ import annotations

from collections.abc import Iterable


def printable(s: str) -> str:
    """``s`` safe for a terminal: control characters (ESC, CR, …) and bytes
    that were not UTF-8 become backslash escapes; tabs stay."""
    out = []
    for c in s:
        o = ord(c)
        if 0xDC80 <= o <= 0xDCFF:       # surrogateescape'd byte from a tar name
            out.append(f"\\x{o - 0xDC00:02x}")
        elif c == "\t" or c.isprintable():
            out.append(c)
        elif o < 0x100:
            out.append(f"\\x{o:02x}")
        else:
            out.append(f"\\u{o:04x}")
    return "".join(out)


def known(names: Iterable[str]) -> str:
    """" (known: a, b, …)" for an error about a name that does not exist:
    the first eight, sorted, so that the message stays one short line."""
    ordered = sorted(names)
    if not ordered:
        return " (none are defined)"
    return " (known: " + ", ".join(ordered[:8]) + (", …" if len(ordered) > 8 else "") + ")"
