"""Temporary files and folders that a later run can collect.

quorum writes through temporaries (atomic writes, downloads, GnuPG homes,
archives).  A run killed with SIGKILL cannot remove its own, so every
temporary's name carries the PID of the process that made it,
``<prefix><pid>.<random><suffix>``, and ``sweep`` removes those whose owner
is gone.  A live owner's temporaries are never touched: two runs in one
folder (two `quorum sign`, a build and a verify) do not delete each other's
work in progress.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True       # someone else's live process
    return True


def mkstemp(folder: Path, prefix: str, suffix: str = ".tmp") -> tuple[int, str]:
    return tempfile.mkstemp(prefix=f"{prefix}{os.getpid()}.", suffix=suffix, dir=folder)


def mkdtemp(folder: Path, prefix: str, suffix: str = "") -> Path:
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}.", suffix=suffix, dir=folder))


def owner(name: str, prefix: str, suffix: str = "") -> int | None:
    """The PID in a temporary's name made with ``prefix``/``suffix``."""
    m = re.fullmatch(re.escape(prefix) + r"(\d+)\.[A-Za-z0-9_]+" + re.escape(suffix), name)
    return int(m.group(1)) if m else None


def _sweep(folder: Path, pid_of: Callable[[str], int | None]) -> list[Path]:
    """Remove the entries of ``folder`` (not below it) whose name yields
    the PID of a process that no longer exists."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for e in entries:
        pid = pid_of(e.name)
        if pid is None or pid == os.getpid() or _pid_alive(pid):
            continue
        try:
            if e.is_dir(follow_symlinks=False):
                shutil.rmtree(e.path, ignore_errors=True)
            else:
                os.unlink(e.path)
            removed.append(Path(e.path))
        except OSError:
            pass
    return removed


def sweep(folder: Path, prefix: str, suffix: str = "") -> list[Path]:
    """Remove the temporaries in ``folder`` made with this prefix and
    suffix whose owner process no longer exists."""
    return _sweep(folder, lambda name: owner(name, prefix, suffix))


_ATOMIC = re.compile(r"\..+\.(\d+)\.[A-Za-z0-9_]+\.tmp")


def sweep_atomic(folder: Path) -> list[Path]:
    """Leftovers of canon.atomic_write in ``folder`` (``.<name>.<pid>.<rand>.tmp``)."""
    def pid_of(name: str) -> int | None:
        m = _ATOMIC.fullmatch(name)
        return int(m.group(1)) if m else None
    return _sweep(folder, pid_of)
