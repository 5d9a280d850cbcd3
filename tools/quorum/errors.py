"""Errors a person can act on.

Every error quorum raises on purpose is a QuorumError: the CLI prints it as one
line (``file: field: what is expected``) and exits non-zero, never with a
traceback.  Anything else escaping is a bug in quorum.
"""
from __future__ import annotations

import os


class QuorumError(Exception):
    """An error with an optional location (file, field) and a message."""

    exit_code = 1

    def __init__(self, message: str, *, file: str | os.PathLike[str] | None = None,
                 field: str | None = None):
        super().__init__(message)
        self.message = message
        # Callers pass the Path they were reading; the message names it as
        # str(path) would (os.fspath gives the same text for str and Path).
        self.file: str | None = os.fspath(file) if file is not None else None
        self.field = field

    def __str__(self) -> str:
        parts = [p for p in (self.file, self.field) if p]
        return ": ".join(parts + [self.message])


class InputError(QuorumError):
    """Usage or input error: a file, argument or value the user gave cannot
    be used as it is (exit 3, see docs/exit-codes.md)."""

    exit_code = 3


class DefinitionError(InputError):
    """A tree file (quorum.yaml, package.yaml, seed) is malformed."""


class GraphError(InputError):
    """A cycle, or a dependency that does not exist."""


class FetchError(QuorumError):
    """A source could not be fetched or did not match its pinned hash."""


class EngineError(QuorumError):
    """The container engine is unreachable or misbehaved (infrastructure,
    not the package's fault: reproduce reports these as FAILED)."""

    exit_code = 2


class LockedError(QuorumError):
    """Another quorum process holds the lock of what this one would write."""

    exit_code = 3


class BuildError(QuorumError):
    """A package's own build script or smoke test failed."""

    def __init__(self, message: str, *, package: str, log_path: str | None = None,
                 log_tail: list[str] | None = None):
        super().__init__(message, file=None)
        self.package = package
        self.log_path = log_path
        self.log_tail = log_tail or []


class UnsafeArchiveError(QuorumError):
    """A tar member tried to escape its root or smuggle a device node."""


# errno name -> (what it means here, with the remedy; exit code).  2: the
# machine failed; 3: the path the user gave (or owns) is wrong.
_OS_ERRORS = {
    "ENOSPC": ("no space left on device; free some space there and rerun", 2),
    "EDQUOT": ("disk quota exceeded; free some space there and rerun", 2),
    "EIO": ("input/output error; check the disk", 2),
    "EACCES": ("permission denied; fix its ownership or run as its owner", 3),
    "EPERM": ("permission denied; fix its ownership or run as its owner", 3),
    "EROFS": ("read-only file system", 3),
    "EEXIST": ("exists and is not a folder; move it away and rerun", 3),
    "ENOTDIR": ("part of this path is a file where a folder is needed", 3),
    "EISDIR": ("is a folder; give the path of a file", 3),
}


def describe_os_error(e: OSError, where: str | None = None) -> tuple[str, int]:
    """One line naming the path and the remedy, and the exit code, for an
    error of the file system (full disk, permissions, a folder where a file
    belongs): the machine's or the user's, never a package's.  ``where``
    names the place when the error itself does not (a write() has no file
    name)."""
    import errno
    where = str(e.filename) if e.filename is not None else (where or "(unknown path)")
    what, code = _OS_ERRORS.get(errno.errorcode.get(e.errno or 0, ""), (e.strerror or str(e), 3))
    return f"{where}: {what}", code


class MachineError(QuorumError):
    """The machine quorum runs on failed (no space, I/O error): exit 2 like
    an engine failure, never blamed on a package."""

    exit_code = 2
