"""Read Debian binary packages without dpkg.

A .deb is an ar archive holding debian-binary, control.tar.* and data.tar.*.
quorum only ever needs the data member, read as a stream; maintainer scripts
in control.tar are never run (they would run on the build machine, with its
state, and could do anything).
"""
from __future__ import annotations

import io
import tarfile
from pathlib import Path

from .errors import QuorumError

_AR_MAGIC = b"!<arch>\n"


class DebError(QuorumError):
    pass


def ar_members(data: bytes, source: str) -> dict[str, bytes]:
    if not data.startswith(_AR_MAGIC):
        raise DebError("not a Debian package (no ar header)", file=source)
    pos, out = len(_AR_MAGIC), {}
    while pos + 60 <= len(data):
        hdr = data[pos:pos + 60]
        if hdr[58:60] != b"`\n":
            raise DebError(f"corrupt ar header at byte {pos}", file=source)
        name = hdr[:16].decode("ascii", "replace").strip().rstrip("/")
        try:
            size = int(hdr[48:58].decode("ascii").strip())
        except ValueError:
            raise DebError(f"corrupt ar member size at byte {pos}", file=source) from None
        pos += 60
        if pos + size > len(data):
            raise DebError(f"ar member {name!r} is truncated", file=source)
        out[name] = data[pos:pos + size]
        pos += size + (size & 1)
    return out


def data_tar(path: Path) -> tarfile.TarFile:
    """The data.tar of a .deb, decompressed, as a random-access TarFile."""
    import bz2
    import gzip
    import lzma
    members = ar_members(path.read_bytes(), str(path))
    for name, dec in (("data.tar.xz", lzma.decompress), ("data.tar.gz", gzip.decompress),
                      ("data.tar.bz2", bz2.decompress), ("data.tar", lambda b: b)):
        if name in members:
            return tarfile.open(fileobj=io.BytesIO(dec(members[name])), mode="r:")
    if "data.tar.zst" in members:
        raise DebError("data.tar.zst is not supported (no zstd in the Python standard library); "
                       "pin a package built with xz", file=str(path))
    raise DebError(f"no data.tar member (found {sorted(members)})", file=str(path))
