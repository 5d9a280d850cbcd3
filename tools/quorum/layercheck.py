"""Does the layer the engine exported hold what the build made?

A tester's 100,000-file package came out different on two builds because
the engine itself dropped files from the layer it exported: quorum saw a
smaller, valid-looking layer and published it.  The build prelude therefore
counts the entries of /rootfs inside the container when the package's
script has finished (``MARKER`` line in the build output), and the count of
the exported layer must match it.  A mismatch is the engine's failure, never
the package's.

The line is printed by quorum's own template after the package's script; a
package that prints a false one, or stops its script early, can only make
its own build fail or skip the check for itself.
"""
from __future__ import annotations

import re
import tarfile
from pathlib import Path

from .errors import EngineError

MARKER = "quorum-layer-entries:"
_LINE = re.compile(re.escape(MARKER) + r" (\d{1,12})\Z")


class Counter:
    """Watches build output lines for the marker; the last one counts (the
    smoke test and later steps never print it)."""

    def __init__(self) -> None:
        self.expected: int | None = None

    def line(self, text: str) -> None:
        m = _LINE.fullmatch(text.strip())
        if m:
            self.expected = int(m.group(1))


def layer_entries(layer: Path) -> int:
    """Entries of an exported layer tar, without the root itself."""
    n = 0
    with tarfile.open(layer, "r:") as tf:
        for m in tf:
            if m.name.strip("/") in ("", "."):
                continue
            n += 1
    return n


def check(layer: Path, expected: int | None, *, package: str, endpoint: str = "the engine") -> None:
    if expected is None:
        return      # the step came from the layer cache, or the package has its own Containerfile
    got = layer_entries(layer)
    if got != expected:
        raise EngineError(f"{endpoint} exported {got} entries for {package}, but the build made {expected} "
                          "inside the container: the engine lost files; check its storage (docker info, "
                          "free space) and rebuild")
