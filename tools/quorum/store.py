"""out/: artifacts by name, the record that says which inputs made them,
build logs, and the atomic publish that keeps half-written work invisible.

Layout (docs/spec/store.md):
    out/<name>/                 OCI image layout of the artifact
    out/<name>.tgz              transport archive (only when asked for)
    out/logs/<name>.log         the last build log
    out/.quorum/records/<name>.json   what built out/<name>/ (input hash, digests)
    out/.quorum/lock            one writer per out/ at a time
    out/.tmp/                   staging; anything here is garbage after a crash

A record is written only after its layout is in place, and a record whose
digest does not match the layout on disk is ignored; so a process killed at
any point leaves either the old artifact, or nothing that counts as done.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Collection
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

from . import canon, oci
from .errors import LockedError, QuorumError
from .safeio import load_json

RECORD_FORMAT = 1


@dataclass(frozen=True)
class Record:
    name: str
    kind: str
    version: str
    digest: str
    config_digest: str
    layer_digest: str
    input_hash: str
    size: int
    # Identity of the engine that built it (EngineFacts.identity; "" for a
    # seed, which the coordinator assembles, or a record from before the
    # pool).  Provenance for `reproduce --elsewhere`; never in the manifest.
    engine: str = ""

    def to_bytes(self) -> bytes:
        return canon.dumps_pretty({"format": RECORD_FORMAT, **asdict(self)})


class Store:
    def __init__(self, out: Path):
        self.out = Path(out)
        self.meta = self.out / ".quorum"
        self.tmp = self.out / ".tmp"

    # --- paths -------------------------------------------------------------
    def layout(self, name: str) -> Path:
        return self.out / name

    def record_path(self, name: str) -> Path:
        return self.meta / "records" / f"{name}.json"

    def log_path(self, name: str) -> Path:
        return self.out / "logs" / f"{name}.log"

    def archive_path(self, name: str) -> Path:
        return self.out / f"{name}.tgz"

    # --- reading -----------------------------------------------------------
    def record(self, name: str) -> Record | None:
        try:
            doc = load_json(self.record_path(name), limit=1 << 20)
            if not isinstance(doc, dict) or doc.pop("format", None) != RECORD_FORMAT:
                return None
            return Record(**doc)
        except (QuorumError, ValueError, TypeError):
            return None   # no record, or one that cannot be trusted: rebuild

    def lookup(self, name: str, input_hash: str, *, deep: bool = False) -> Record | None:
        """The artifact for exactly these inputs, if one is whole on disk."""
        rec = self.record(name)
        if rec is None or rec.input_hash != input_hash:
            return None
        try:
            oci.verify_layout(self.layout(name), rec.digest, deep=deep)
        except (OSError, ValueError, KeyError):
            return None
        return rec

    # --- writing -----------------------------------------------------------
    @contextmanager
    def staging(self, name: str) -> Iterator[Path]:
        """A private folder under out/.tmp/ that is removed on the way out,
        whatever happens: staged work never survives to be mistaken for an
        artifact."""
        self.tmp.mkdir(parents=True, exist_ok=True)
        d = Path(tempfile.mkdtemp(prefix=f"{name}.", dir=self.tmp))
        try:
            yield d
        finally:
            shutil.rmtree(d, ignore_errors=True)

    def publish(self, staged_layout: Path, record: Record) -> None:
        """Move a finished layout to out/<name>/ and then write its record."""
        final = self.layout(record.name)
        old = None
        # Invalidate first: from here until the new record lands, no record
        # matches what is on disk, so a crash leaves "not built".
        try:
            self.record_path(record.name).unlink()
        except FileNotFoundError:
            pass
        if final.exists() or final.is_symlink():
            old = self.tmp / f"old.{record.name}.{uuid.uuid4().hex}"
            os.replace(final, old)
        os.replace(staged_layout, final)
        canon.atomic_write(self.record_path(record.name), record.to_bytes())
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def clean_tmp(self) -> None:
        """Remove what crashed runs left in out/.tmp (called under the lock)."""
        if self.tmp.exists():
            for p in self.tmp.iterdir():
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)

    @contextmanager
    def lock(self) -> Iterator["Held"]:
        """One writer per out/: two builds in one tree would race on publish."""
        with hold(self.meta / "lock") as held:
            yield held


class Held:
    """A held lock.  ``keep_while`` defers the release past the end of the
    ``with`` block until the given futures are done: an interrupted build
    returns while a worker may still be writing, and the lock must outlive
    every writer (the process's exit releases it in any case)."""

    def __init__(self, fd: int):
        self.fd = fd
        self._pending = 0
        self._mutex = threading.Lock()
        self._closing = False

    def keep_while(self, futures: Collection[Future[Any]]) -> None:
        with self._mutex:
            self._pending += len(futures)
        for f in futures:
            f.add_done_callback(self._one_done)

    def _one_done(self, _future: Future[Any]) -> None:
        with self._mutex:
            self._pending -= 1
            last = self._pending == 0 and self._closing
        if last:
            os.close(self.fd)

    def release(self) -> None:
        with self._mutex:
            self._closing = True
            now = self._pending == 0
        if now:
            os.close(self.fd)


@contextmanager
def hold(path: Path) -> Iterator[Held]:
    """flock ``path`` for this process, or stop with LockedError (exit 3)
    naming the file and the holder's PID, which the holder writes there."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        finally:
            os.close(fd)
        raise LockedError(f"another quorum process (PID {holder}) holds {path}; wait for it to finish, "
                          "or stop it, and rerun") from None
    except BaseException:
        os.close(fd)
        raise
    # The PID is for the message above only; the flock is what counts.
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    held = Held(fd)
    try:
        yield held
    finally:
        held.release()
