"""The content-addressed source cache and its origins.

    $XDG_CACHE_HOME/quorum/sources/sha256/<hex>

A file enters the cache only after its bytes hashed to the pinned sha256 —
never before, never "for now" — so a later build can trust the cache by name.
Origins, in order: the cache, each URL of the source, Debian's source archive
through apt.  Every attempt is reported as an event; a source that no origin
could supply raises a FetchError listing each origin and what it gave.
"""
from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, BinaryIO

from . import temps
from .apt import PrivateApt
from .errors import FetchError
from .model import Source

if TYPE_CHECKING:   # imported where used, at run time (see _download)
    import http.client
    import urllib.request

Emit = Callable[[dict], None]


def cache_home() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "quorum"


@dataclass
class Attempt:
    origin: str
    result: str      # "ok", "mismatch", "error"
    detail: str = ""


class SourceCache:
    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root else cache_home()
        self.dir = self.root / "sources" / "sha256"
        self._apt: PrivateApt | None = None

    @property
    def apt(self) -> PrivateApt:
        if self._apt is None:
            self._apt = PrivateApt(self.root / "apt")
        return self._apt

    def path(self, sha256: str) -> Path:
        return self.dir / sha256

    def has(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def check(self, sha256: str, *, emit: Emit = lambda e: None, where: str = "") -> bool:
        """Re-hash a cached file; a corrupted entry (a disk error, a hand
        edit, a planted file) is removed, so the next fetch gets the pinned
        bytes again instead of trusting the name.  True if it is good."""
        p = self.path(sha256)
        if not p.is_file():
            return False
        if _sha256(p) == sha256:
            return True
        p.unlink(missing_ok=True)
        emit({"event": "cache-corrupt", "sha256": sha256, "package": where,
              "detail": "cached file did not match its name; removed"})
        return False

    def _tmpdir(self) -> Path:
        t = self.root / "tmp"
        t.mkdir(parents=True, exist_ok=True)
        # Downloads of killed runs (64 MiB and more) are collected here.
        temps.sweep(t, "")
        return temps.mkdtemp(t, "")

    def admit(self, candidate: Path, sha256: str) -> tuple[bool, str]:
        """Hash ``candidate``; if it matches, move it into the cache
        (atomically: same file system, one rename).  Returns (ok, actual)."""
        h = hashlib.sha256()
        with open(candidate, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        actual = h.hexdigest()
        if actual != sha256:
            candidate.unlink(missing_ok=True)
            return False, actual
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(candidate, 0o444)
        os.replace(candidate, self.path(sha256))
        return True, actual

    # --- sources ------------------------------------------------------------
    def fetch(self, src: Source, *, emit: Emit = lambda e: None, where: str = "",
              all_origins: bool = False, verify: bool = False) -> Path:
        """Return the cached path of ``src``, fetching it if needed.

        A file not yet in the cache is fetched from *every* origin that
        answers, and they must agree: an origin serving other bytes than the
        pin is a compromised mirror, a re-rolled tarball, or a wrong pin, and
        a person should look before anything is built from it.  With
        ``all_origins`` this is done even for a cached file.  With ``verify``
        (or ``all_origins``) a cached file is re-hashed first, and removed
        if it no longer matches."""
        if verify or all_origins:
            self.check(src.sha256, emit=emit, where=where)
        if self.has(src.sha256) and not all_origins:
            return self.path(src.sha256)
        attempts: list[Attempt] = []
        ok_origins = []
        was_cached = self.has(src.sha256)
        for origin, getter in self._origins(src):
            tmp = self._tmpdir()
            try:
                emit({"event": "fetch", "file": src.file, "origin": origin, "package": where})
                try:
                    candidate = getter(tmp)
                except FetchError as e:
                    attempts.append(Attempt(origin, "error", e.message))
                    continue
                except Exception as e:  # network errors of every kind
                    attempts.append(Attempt(origin, "error", f"{e.__class__.__name__}: {e}"[:200]))
                    continue
                if candidate is None:
                    attempts.append(Attempt(origin, "error", "no file with that hash there"))
                    continue
                if self.has(src.sha256):
                    actual = _sha256(candidate)
                    okay = actual == src.sha256
                else:
                    okay, actual = self.admit(candidate, src.sha256)
                if okay:
                    attempts.append(Attempt(origin, "ok"))
                    ok_origins.append(origin)
                else:
                    # Not the hash of a local file: a definition pointing at
                    # file:///etc/shadow must not learn that file's digest.
                    detail = "other bytes" if origin.startswith("file:") else f"got sha256 {actual}"
                    attempts.append(Attempt(origin, "mismatch", detail))
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        mismatches = [a for a in attempts if a.result == "mismatch"]
        if ok_origins and not mismatches:
            return self.path(src.sha256)
        if ok_origins and mismatches and not was_cached:
            # Admitted by one origin, contradicted by another: do not keep it.
            self.path(src.sha256).unlink(missing_ok=True)
        lines = "; ".join(f"{a.origin}: {a.result}{' (' + a.detail + ')' if a.detail else ''}" for a in attempts)
        what = "origins disagree" if (ok_origins and mismatches) else "no origin supplied the pinned bytes"
        raise FetchError(f"{src.file}: {what}; expected sha256 {src.sha256}; tried {lines or 'nothing'}",
                         file=where or None)

    def _origins(self, src: Source) -> Iterator[tuple[str, Callable[[Path], Path | None]]]:
        if self.has(src.sha256):
            yield "cache", lambda tmp: Path(shutil.copy2(self.path(src.sha256), tmp / "cached"))
        for url in src.urls:
            yield url, (lambda u: lambda tmp: _download(u, tmp / "download"))(url)
        if src.debian is not None:
            d = src.debian
            label = f"debian:{d.package}" + (f"={d.version}" if d.version else "")
            yield label, lambda tmp: self._from_debian(src, tmp)

    def _from_debian(self, src: Source, tmp: Path) -> Path | None:
        d = src.debian
        assert d is not None  # _origins offers this origin only for a source with one
        try:
            files = self.apt.download_source(d.package, d.version, tmp / "src")
        except FetchError:
            if d.version is None:
                raise
            # The archive drops superseded revisions; the orig tarball of the
            # same upstream version usually lives on in the current one, and
            # the hash decides whether it is the same file.
            files = self.apt.download_source(d.package, None, tmp / "src2")
        # The orig tarball may be named differently from upstream's; the hash
        # decides which file is the one.
        for f in files:
            if _sha256(f) == src.sha256:
                return f
        names = ", ".join(f.name for f in files)
        raise FetchError(f"none of {names} has sha256 {src.sha256[:16]}…")

    # --- Debian binary packages (seeds) -------------------------------------
    def fetch_debs(self, debs: list, *, emit: Emit = lambda e: None, where: str = "") -> list[Path]:
        """Every deb of ``debs`` (SeedDeb-like: name, version, arch, sha256)
        in the cache; the missing ones fetched in one apt call and each
        admitted only if its sha256 is the pinned one."""
        missing = [d for d in debs if not self.has(d.sha256)]
        if missing:
            emit({"event": "fetch", "file": f"{len(missing)} .debs", "origin": "debian", "package": where})
            tmp = self._tmpdir()
            try:
                try:
                    got = self.apt.download_debs([(d.name, d.version, d.arch) for d in missing], tmp)
                except FetchError:
                    got = []   # fall back to one at a time, which names the culprit
                by_sha = {}
                for p in got:
                    by_sha[_sha256(p)] = p
                for d in missing:
                    if d.sha256 in by_sha:
                        self.admit(by_sha[d.sha256], d.sha256)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        return [self.fetch_deb(d.name, d.version, d.arch, d.sha256, emit=emit, where=where) for d in debs]

    def fetch_deb(self, name: str, version: str, arch: str, sha256: str, *, emit: Emit = lambda e: None,
                  where: str = "") -> Path:
        if self.has(sha256):
            return self.path(sha256)
        tmp = self._tmpdir()
        try:
            emit({"event": "fetch", "file": f"{name}_{version}_{arch}.deb", "origin": "debian", "package": where})
            try:
                deb = self.apt.download_deb(name, version, arch, tmp)
            except FetchError as e:
                raise FetchError(f"{name} {version} ({arch}) is not in the cache and apt could not get it: "
                                 f"{e.message}. If the archive dropped this version, run "
                                 f"'quorum seed lock {where or 'SEED'}' to pin the current one",
                                 file=where or None) from None
            ok, actual = self.admit(deb, sha256)
            if not ok:
                raise FetchError(f"{name} {version}: downloaded .deb has sha256 {actual}, pinned {sha256}",
                                 file=where or None)
            return self.path(sha256)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _sha256(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


# Bounds on one download.  The hash check makes any bytes safe to *try*, but
# not any amount of them: an endless body (file:///dev/zero, a hostile
# server) would fill the disk, and a server sending a byte a minute would hold
# the build forever, since a socket timeout only limits each read.
MAX_SOURCE_BYTES = int(os.environ.get("QUORUM_MAX_SOURCE_BYTES", 2 << 30))
DOWNLOAD_DEADLINE = float(os.environ.get("QUORUM_DOWNLOAD_DEADLINE", 1800))


def _copy_bounded(r: BinaryIO, f: BinaryIO, url: str, limit: int, deadline: float) -> None:
    import time
    total = 0
    while chunk := r.read(1 << 20):
        total += len(chunk)
        if total > limit:
            raise FetchError(f"{url}: more than {limit} bytes; refused (set QUORUM_MAX_SOURCE_BYTES "
                             "for a larger source)")
        if time.monotonic() > deadline:
            raise FetchError(f"{url}: not complete after {DOWNLOAD_DEADLINE:.0f} s; refused "
                             "(set QUORUM_DOWNLOAD_DEADLINE for a slower origin)")
        f.write(chunk)


def _download(url: str, dst: Path, timeout: int = 30, limit: int | None = None) -> Path:
    """HTTP(S) or file:// into ``dst``, bounded in size and time.  Redirects
    keep the scheme (no https -> http downgrade, no jump to file: or ftp:);
    the hash check afterwards is what makes any origin safe to try."""
    # Imported here: urllib.request pulls in http, email and ssl, which a
    # build whose sources are all cached never needs.
    import stat
    import time
    import urllib.parse
    import urllib.request
    limit = MAX_SOURCE_BYTES if limit is None else limit
    deadline = time.monotonic() + DOWNLOAD_DEADLINE
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "file":
        path = urllib.request.url2pathname(parsed.path)
        try:
            # O_NONBLOCK: a FIFO would block the open; fstat then refuses
            # anything but a regular file (/dev/zero, a directory).
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError as e:
            raise FetchError(f"{url}: {e.strerror}") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise FetchError(f"{url}: not a regular file")
        with os.fdopen(fd, "rb") as src, open(dst, "wb") as f:
            _copy_bounded(src, f, url, limit, deadline)
        return dst
    if parsed.scheme not in ("http", "https"):
        raise FetchError(f"unsupported URL scheme {parsed.scheme!r}")

    class SameScheme(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str,
                             headers: http.client.HTTPMessage, newurl: str) -> urllib.request.Request | None:
            target = urllib.parse.urlparse(urllib.parse.urljoin(req.full_url, newurl)).scheme
            if target != parsed.scheme:
                raise FetchError(f"{url}: redirected from {parsed.scheme}: to {target}:; refused")
            return super().redirect_request(req, fp, code, msg, headers, newurl)

    opener = urllib.request.build_opener(SameScheme())
    req = urllib.request.Request(url, headers={"User-Agent": "quorum"})
    with opener.open(req, timeout=timeout) as r, open(dst, "wb") as f:
        length = r.headers.get("Content-Length")
        if length and length.isdigit() and int(length) > limit:
            raise FetchError(f"{url}: {length} bytes announced, more than {limit}; refused")
        _copy_bounded(r, f, url, limit, deadline)
    return dst
