"""Errors a person can act on.

Every error quorum raises on purpose is a QuorumError: the CLI prints it as one
line (``file: field: what is expected``) and exits non-zero, never with a
traceback.  Anything else escaping is a bug in quorum.
"""
from __future__ import annotations


class QuorumError(Exception):
    """An error with an optional location (file, field) and a message."""

    exit_code = 1

    def __init__(self, message: str, *, file: str | None = None, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.file = str(file) if file is not None else None
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


def describe_os_error(e: OSError) -> tuple[str, int]:
    """One line naming the path and the remedy, and the exit code, for an
    error of the file system (full disk, permissions, a folder where a file
    belongs): the machine's or the user's, never a package's."""
    import errno
    where = e.filename if e.filename is not None else "(unknown path)"
    if e.errno == errno.ENOSPC:
        return f"{where}: no space left on device; free some space there and rerun", 2
    if e.errno == errno.EDQUOT:
        return f"{where}: disk quota exceeded; free some space there and rerun", 2
    if e.errno == errno.EIO:
        return f"{where}: input/output error; check the disk", 2
    if e.errno in (errno.EACCES, errno.EPERM):
        return f"{where}: permission denied; fix its ownership or run as its owner", 3
    if e.errno == errno.EROFS:
        return f"{where}: read-only file system", 3
    if e.errno == errno.EEXIST:
        return f"{where}: exists and is not a folder; move it away and rerun", 3
    if e.errno == errno.ENOTDIR:
        return f"{where}: part of this path is a file where a folder is needed", 3
    if e.errno == errno.EISDIR:
        return f"{where}: is a folder; give the path of a file", 3
    return f"{where}: {e.strerror or e}", 3


class MachineError(QuorumError):
    """The machine quorum runs on failed (no space, I/O error): exit 2 like
    an engine failure, never blamed on a package."""

    exit_code = 2
