"""Seeds: locking a requested Debian package set into a pinned closure, and
assembling the pinned .debs into one deterministic image layer.

The seed is how the first image exists on an engine that has none and can
pull none.  Its digest must depend only on the lock (docs/spec/seed.md): the
same .debs, unpacked in Python in a fixed order with no maintainer scripts,
normalised like any artifact.
"""
from __future__ import annotations

import fnmatch
import hashlib
import io
import re
import tarfile
from collections.abc import Callable
from pathlib import Path

from . import canon, deb, oci
from .errors import DefinitionError, UnsafeArchiveError
from .fetch import SourceCache
from .model import Seed, SeedDeb

# Folders every build environment expects to exist even though no .deb
# ships them (dpkg's postinst or the container runtime would make them).
BASE_DIRS = {"tmp": 0o1777, "dev": 0o755, "proc": 0o755, "sys": 0o755, "etc": 0o755,
             "build": 0o755, "rootfs": 0o755, "root": 0o700, "var/tmp": 0o1777}


def lock(seed: Seed, cache: SourceCache) -> list[SeedDeb]:
    """Resolve ``seed.request`` through the machine's apt configuration into
    the pinned closure (names, versions, sha256 from the signed index)."""
    if not seed.request:
        raise DefinitionError("nothing to lock: give the Debian packages the seed needs in request:",
                              file=seed.definition_file, field="request")
    apt = cache.apt
    debs = []
    closure = apt.resolve(list(seed.request), seed.arch)
    # Dependencies that the seed's job does not need (a sanitizer runtime,
    # Kerberos for libc's RPC headers…): every binary left out is one less
    # binary trusted.  The seed is then not dependency-complete on purpose;
    # its builds prove the omission harmless.
    unknown = sorted(set(seed.omit) - {n for n, _, _ in closure})
    if unknown:
        raise DefinitionError(f"omit names packages that are not in the closure: {', '.join(unknown)}",
                              file=seed.definition_file, field="omit")
    closure = [c for c in closure if c[0] not in seed.omit]
    records = apt.show_many(closure)
    for name, version, arch in closure:
        rec = records[(name, version, arch)]
        debs.append(SeedDeb(name=name, version=version, arch=arch, sha256=rec["SHA256"],
                            size=int(rec.get("Size", 0)) or None, filename=rec.get("Filename")))
    return sorted(debs, key=lambda d: (d.name, d.arch))


def write_lock(seed: Seed, debs: list[SeedDeb]) -> None:
    """Rewrite the seed file's ``packages:`` section, keeping everything
    above it (comments included) as the maintainer wrote it."""
    from .canon import atomic_write
    text = seed.definition_file.read_text()
    m = re.search(r"^packages:.*\Z", text, flags=re.M | re.S)
    head = text[:m.start()] if m else text
    if head and not head.endswith("\n"):
        head += "\n"
    lines = ["packages:  # written by `quorum seed lock`; do not edit by hand"]
    for d in debs:
        lines += [f"  - name: {d.name}", f"    version: \"{d.version}\"", f"    arch: {d.arch}",
                  f"    sha256: {d.sha256}"]
        if d.size:
            lines.append(f"    size: {d.size}")
        if d.filename:
            lines.append(f"    filename: {d.filename}")
    atomic_write(seed.definition_file, (head + "\n".join(lines) + "\n").encode())


def fetch_debs(seed: Seed, cache: SourceCache, emit: Callable[[dict], None] = lambda e: None) -> list[Path]:
    if not seed.locked:
        raise DefinitionError(f"seed {seed.name!r} is not locked: run 'quorum seed lock {seed.name}'",
                              file=seed.definition_file, field="packages")
    stale = sorted(d.name for d in seed.debs if d.name in seed.omit)
    if stale:
        raise DefinitionError(f"pinned but listed in omit: {', '.join(stale)}; run 'quorum seed lock {seed.name}'",
                              file=seed.definition_file, field="packages")
    return cache.fetch_debs(list(seed.debs), emit=emit, where=seed.name)


def _excluded(name: str, patterns: tuple[str, ...]) -> bool:
    p = "/" + name
    return any(fnmatch.fnmatchcase(p, pat) or fnmatch.fnmatchcase(p + "/", pat) for pat in patterns)


def merge(seed: Seed, deb_paths: list[Path], raw_out: Path) -> None:
    """Merge the data trees of the debs into one (not yet normalised) tar.

    Two debs shipping the same directory is normal; the same file with
    different contents would make the result depend on unpack order, so it
    is an error that names both packages."""
    with tarfile.open(raw_out, "w", format=tarfile.GNU_FORMAT) as out:
        union = Union(out, file=seed.definition_file, field="packages", what="the seed")
        for d, path in zip(seed.debs, deb_paths):
            with deb.data_tar(path) as tf:
                union.add(d.name, tf, exclude=seed.exclude)
        union.finish(seed.symlinks)


class Union:
    """The union of several file trees (tar streams) written into one tar:
    a seed's .debs, or an environment's member artifacts
    (docs/spec/environment.md).  Each path belongs to the first source that
    has it; a later source may only have the same thing there (a directory,
    or an identical file, link or symlink), or the result would depend on
    the order of the sources: that is an error naming both."""

    def __init__(self, out: tarfile.TarFile, *, file: Path, field: str, what: str):
        self.out, self.file, self.field, self.what = out, file, field, what
        self.owners: dict[str, tuple[str, str]] = {}   # name -> (source, identity)

    def add(self, source: str, tf: tarfile.TarFile, *, exclude: tuple[str, ...] = ()) -> None:
        owners = self.owners
        for m in tf.getmembers():
            name = oci._clean_name(m.name)
            if not name or _excluded(name, exclude):
                continue
            if m.isreg():
                f = tf.extractfile(m)
                data = f.read() if f is not None else b""
                ident = (f"file:{hashlib.sha256(data).hexdigest()}:{m.mode & 0o7777:o}"
                         f":{int(m.uid)}:{int(m.gid)}")
            elif m.isdir():
                ident, data = "dir", None
            elif m.issym():
                ident, data = "sym:" + m.linkname, None
            elif m.islnk():
                ident, data = "lnk:" + oci._clean_name(m.linkname, what="hard link target"), None
            else:
                raise UnsafeArchiveError(f"{source}: {name!r} is a device or special file")
            if name in owners:
                if owners[name][1] == ident:
                    continue
                if ident == "dir" or owners[name][1] == "dir":
                    raise UnsafeArchiveError(f"{name!r} is a directory in one of {self.what}'s sources and not "
                                             f"in another ({owners[name][0]}, {source})")
                raise DefinitionError(f"{name!r} is shipped differently by {owners[name][0]} and {source}",
                                      file=self.file, field=self.field)
            owners[name] = (source, ident)
            m.name = name
            if m.islnk():
                m.linkname = oci._clean_name(m.linkname)
            self.out.addfile(m, io.BytesIO(data) if data is not None else None)

    def finish(self, symlinks: tuple[tuple[str, str], ...]) -> None:
        """The folders every build environment expects, then ``symlinks``."""
        owners = self.owners
        for name, mode in sorted(BASE_DIRS.items()):
            if name not in owners:
                ti = tarfile.TarInfo(name)
                ti.type, ti.mode = tarfile.DIRTYPE, mode
                self.out.addfile(ti)
                owners[name] = ("quorum", "dir")
        for path, target in symlinks:
            name = oci._clean_name(path)
            if name in owners and owners[name][1] == "sym:" + target:
                continue   # a source already has exactly this link
            if name in owners:
                raise DefinitionError(f"{path} already exists in {self.what} ({owners[name][0]})",
                                      file=self.file, field=f"symlinks.{path}")
            ti = tarfile.TarInfo(name)
            ti.type, ti.linkname, ti.mode = tarfile.SYMTYPE, target, 0o777
            self.out.addfile(ti)
            owners[name] = ("symlinks", "sym:" + target)


def version(seed: Seed) -> str:
    """The seed's version (its manifest entry and image tag): how many
    .debs are pinned and a short hash of the pins themselves, e.g.
    ``43debs-3f2a9c1d0b7e``.  Relocking to other .debs gives another version;
    the same lock gives the same one everywhere (docs/spec/seed.md)."""
    pins = sorted([d.name, d.version, d.arch, d.sha256] for d in seed.debs)
    return f"{len(pins)}debs-{canon.sha256_bytes(canon.dumps(pins))[:12]}"


def input_fields(seed: Seed, epoch: int) -> dict:
    """Everything the seed's bytes depend on (hashed into its input hash)."""
    return {
        "kind": "seed",
        "arch": seed.arch,
        "debs": [[d.name, d.version, d.arch, d.sha256] for d in seed.debs],
        "symlinks": [list(s) for s in seed.symlinks],
        "exclude": list(seed.exclude),
        "omit": list(seed.omit),
        "env": [list(e) for e in seed.env],
        "epoch": epoch,
        "base_dirs": sorted(BASE_DIRS.items()),
    }
