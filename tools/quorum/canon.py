"""Canonical bytes for everything that is hashed or signed.

Two machines must produce the same bytes for the same data, so every JSON
document quorum writes goes through here: keys sorted, no insignificant
white space in hashed forms, UTF-8, and a trailing newline for the files that
people read and diff.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
from pathlib import Path
from typing import Any


def dumps(obj: Any) -> bytes:
    """Compact canonical JSON (the form that is hashed)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def dumps_pretty(obj: Any) -> bytes:
    """Canonical JSON for files people diff: sorted keys, fixed indentation,
    fixed separators, one trailing newline.  Still byte-deterministic."""
    text = json.dumps(obj, sort_keys=True, indent=2, separators=(",", ": "), ensure_ascii=False)
    return (text + "\n").encode("utf-8")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, bufsize: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(bufsize):
            h.update(chunk)
    return h.hexdigest()


def atomic_write(path: str | os.PathLike, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` so that a reader sees either the old file or
    the whole new one, never a prefix: write a temp file in the same folder
    (same file system, so rename is atomic), fsync it, rename over."""
    from . import temps
    path = Path(path)
    if path.is_dir():
        # Checked first: the rename would fail naming our temp file instead.
        raise IsADirectoryError(errno.EISDIR, "Is a directory", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    # The temp's name carries our PID, so the next write into this folder
    # removes what a killed run left (and `git add manifests` finds nothing).
    temps.sweep_atomic(path.parent)
    fd, tmp = temps.mkstemp(path.parent, f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError) and e.filename in (None, tmp) and e.errno is not None:
            # Name the file being written, not our temp (a full disk is
            # reported by write(), which names no file at all).
            raise OSError(e.errno, e.strerror, str(path)) from None
        raise
