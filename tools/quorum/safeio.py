"""Reading files that someone else may have planted.

Every file quorum reads from a tree, a store or a signature folder may be
hostile: a named pipe (the read blocks forever), a symlink to ``/dev/zero``
(the read never ends) or to a file outside the tree (its bytes leak into a
build), a directory, a hard link to ``/etc/shadow`` (same inode, other name),
or simply a 3 GB file.  ``read_regular`` is the one way such files are read:
it opens without following symlinks and without blocking, checks on the open
descriptor (no race between the check and the read) that it is a regular file,
and reads at most ``limit`` bytes.

JSON documents get the same treatment through ``load_json``: a size limit,
and a nesting limit checked before Python's recursive parser sees the text.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from .errors import InputError, QuorumError

# Limits for the kinds of file quorum reads.  Definitions are written by
# people; a megabyte is far beyond any honest one.
DEFINITION_LIMIT = 1 << 20
# Machine-written JSON (manifests, records, index.json, reports): a tree of
# tens of thousands of packages stays well below this.
JSON_LIMIT = 64 << 20
# Nesting deeper than this is never written by quorum nor by any OCI tool;
# Python's json module would recurse ~1000 levels and then raise.
MAX_DEPTH = 64


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def check_regular(path: str | os.PathLike, *, single_link: bool = False,
                  error: type[QuorumError] = InputError, what: str = "file") -> os.stat_result:
    """lstat ``path`` and refuse anything but a regular file (and, with
    ``single_link``, a file with other hard links: a link to a secret file
    elsewhere on the machine has the secret's bytes under an innocent name)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise error(f"{what} not found", file=str(path)) from None
    except OSError as e:
        raise error(f"cannot read {what}: {e.strerror}", file=str(path)) from None
    if not stat.S_ISREG(st.st_mode):
        raise error(f"expected a regular {what}, found {_kind(st.st_mode)}", file=str(path))
    if single_link and st.st_nlink > 1:
        raise error(f"{what} has {st.st_nlink} hard links; copy it instead of linking it", file=str(path))
    return st


def read_regular(path: str | os.PathLike, *, limit: int, single_link: bool = False,
                 error: type[QuorumError] = InputError, what: str = "file") -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes, or ``error``
    naming the file and what is wrong with it."""
    check_regular(path, single_link=single_link, error=error, what=what)
    try:
        # O_NOFOLLOW: the name may have been swapped for a symlink since the
        # lstat; O_NONBLOCK: ...or for a FIFO, whose open would block.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise error(f"expected a regular {what}, found a symbolic link", file=str(path)) from None
        raise error(f"cannot read {what}: {e.strerror}", file=str(path)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise error(f"expected a regular {what}, found {_kind(st.st_mode)}", file=str(path))
        if st.st_size > limit:
            raise error(f"{what} is {st.st_size} bytes, more than the limit of {limit}", file=str(path))
        chunks, total = [], 0
        while True:
            b = os.read(fd, min(1 << 20, limit + 1 - total))
            if not b:
                break
            chunks.append(b)
            total += len(b)
            if total > limit:
                # Grew while we read it.
                raise error(f"{what} is more than the limit of {limit} bytes", file=str(path))
        return b"".join(chunks)
    except OSError as e:
        raise error(f"cannot read {what}: {e.strerror}", file=str(path)) from None
    finally:
        os.close(fd)


@contextlib.contextmanager
def open_regular(path: str | os.PathLike, *, single_link: bool = False,
                 error: type[QuorumError] = InputError, what: str = "file") -> Iterator[tuple[BinaryIO, int]]:
    """Open a regular file for streaming, checked like ``read_regular``;
    yields (file object, size at open time)."""
    check_regular(path, single_link=single_link, error=error, what=what)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        kind = "a symbolic link" if e.errno == errno.ELOOP else None
        raise error(f"expected a regular {what}, found {kind}" if kind else f"cannot read {what}: {e.strerror}",
                    file=str(path)) from None
    f = os.fdopen(fd, "rb")
    with f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise error(f"expected a regular {what}, found {_kind(st.st_mode)}", file=str(path))
        if single_link and st.st_nlink > 1:
            raise error(f"{what} has {st.st_nlink} hard links; copy it instead of linking it", file=str(path))
        yield f, st.st_size


def json_depth_ok(text: str | bytes, max_depth: int = MAX_DEPTH) -> bool:
    """True if no array/object in ``text`` nests deeper than ``max_depth``.
    Brackets inside strings are skipped; the scan is linear and does not
    recurse, so it is safe on any input."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    # Fast path: not even that many opening brackets in total.
    if text.count("[") + text.count("{") <= max_depth:
        return True
    depth, in_str, esc = 0, False, False
    for c in text:
        if in_str:
            if esc:
                esc = False
            elif c == "\\":
                esc = True
            elif c == '"':
                in_str = False
        elif c == '"':
            in_str = True
        elif c in "[{":
            depth += 1
            if depth > max_depth:
                return False
        elif c in "]}":
            depth -= 1
    return True


def loads_json(data: bytes | str, *, file: str | os.PathLike | None = None,
               error: type[QuorumError] = InputError, max_depth: int = MAX_DEPTH) -> Any:
    """Parse JSON with a nesting limit; errors name the file."""
    where = str(file) if file is not None else None
    if not json_depth_ok(data, max_depth):
        raise error(f"JSON nested more than {max_depth} levels deep", file=where)
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as e:
        raise error(f"not valid JSON: {str(e)[:200]}", file=where) from None


def load_json(path: str | os.PathLike, *, limit: int = JSON_LIMIT, error: type[QuorumError] = InputError,
              what: str = "JSON file") -> Any:
    """read_regular + loads_json."""
    return loads_json(read_regular(path, limit=limit, error=error, what=what), file=path, error=error)


def within(root: Path, path: Path) -> bool:
    """True if ``path``, with every symlink resolved, is inside ``root``
    (resolved too): a folder of the tree that is a link to elsewhere on the
    machine is outside it."""
    try:
        return path.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError):
        return False
