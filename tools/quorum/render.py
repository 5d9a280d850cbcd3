"""Containerfiles and build contexts from package definitions.

The package's words reach the engine only through files quorum writes into
the build context (build.sh, test.sh) and through values that passed the
patterns in ``tree``: nothing from a definition is pasted into a
Containerfile instruction, so a YAML field cannot add an instruction or a
shell command of its own.
"""
from __future__ import annotations

import hashlib
import io
import os
import shlex
import tarfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO

import jinja2

from .errors import DefinitionError, FetchError
from .model import Package

BUILD_DIR = "/build"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CONTAINERFILE_PATH = ".quorum/Containerfile"
TEST_CONTAINERFILE_PATH = ".quorum/test.Containerfile"


@dataclass(frozen=True)
class DepRef:
    name: str
    image: str          # "sha256:<config digest>": the image ID once loaded


@dataclass(frozen=True)
class Settings:
    """What the build environment pins.  ``reproduce`` changes some of these
    on purpose to show which packages depend on them."""
    build_dir: str = BUILD_DIR
    umask: str = "022"
    tz: str = "UTC"
    locale: str = "C"
    extra_env: tuple[tuple[str, str], ...] = ()
    build_user: str | None = None        # "uid:gid" to build as, None = root


def settings_for(pkg: Package, settings: Settings) -> Settings:
    """The settings one package builds under: a package that must build as
    root (``needs-root``), or whose own Containerfile quorum does not
    rewrite, keeps root whatever the rebuild varies."""
    if settings.build_user and (pkg.needs_root or pkg.containerfile is not None):
        return replace(settings, build_user=None)
    return settings


@dataclass
class Rendered:
    containerfile: str
    build_sh: str
    test_sh: str | None
    env: list[tuple[str, str]] = field(default_factory=list)


def _env() -> jinja2.Environment:
    e = jinja2.Environment(loader=jinja2.PackageLoader("quorum", "templates"), undefined=jinja2.StrictUndefined,
                           keep_trailing_newline=True, autoescape=False)
    e.filters["shquote"] = lambda v: shlex.quote(str(v))
    return e


_JINJA = None


def jinja() -> jinja2.Environment:
    global _JINJA
    if _JINJA is None:
        _JINJA = _env()
    return _JINJA


def build_env(pkg: Package, epoch: int, settings: Settings = Settings()) -> list[tuple[str, str]]:
    fixed = {
        "SOURCE_DATE_EPOCH": str(epoch), "TZ": settings.tz, "LC_ALL": settings.locale, "LANG": settings.locale,
        "HOME": settings.build_dir, "PATH": DEFAULT_PATH, "DESTDIR": "/rootfs",
        "QUORUM_BUILD_DIR": settings.build_dir,
    }
    env = dict(pkg.env)
    env.update(fixed)
    env.update(dict(settings.extra_env))
    return sorted(env.items())


def render(pkg: Package, *, seed_image: str | None, deps: list[DepRef], epoch: int,
           settings: Settings = Settings()) -> Rendered:
    settings = settings_for(pkg, settings)
    env = build_env(pkg, epoch, settings)
    j = jinja()
    script = pkg.build if pkg.build is not None else "# no build script: the package's Containerfile does the work"
    build_sh = j.get_template("build.sh.j2").render(env=env, umask=settings.umask, build_dir=settings.build_dir,
                                                    script=script.rstrip("\n"))
    test_sh = None
    if pkg.test:
        test_sh = j.get_template("test.sh.j2").render(env=env, script=pkg.test.rstrip("\n"),
                                                      build_dir=settings.build_dir)
    variables = dict(name=pkg.name, version=pkg.version, seed=seed_image or "", deps=deps, epoch=epoch,
                     build_dir=settings.build_dir, env=env, build_user=settings.build_user or "",
                     sources=[{"file": s.file, "sha256": s.sha256} for s in pkg.sources])
    if pkg.containerfile is not None:
        try:
            tmpl = j.from_string(pkg.containerfile.read_text(encoding="utf-8"))
            containerfile = tmpl.render(**variables)
        except jinja2.TemplateError as e:
            line = getattr(e, "lineno", None)
            raise DefinitionError(f"template error: {e}", file=pkg.containerfile,
                                  field=f"line {line}" if line else None) from None
    else:
        containerfile = j.get_template("Containerfile.j2").render(**variables)
    return Rendered(containerfile=containerfile, build_sh=build_sh, test_sh=test_sh, env=env)


def render_test(pkg: Package, *, artifact_image: str, seed_image: str | None, deps: list[DepRef],
                settings: Settings = Settings()) -> str:
    return jinja().get_template("test.Containerfile.j2").render(
        name=pkg.name, version=pkg.version, artifact=artifact_image, seed=seed_image or "", deps=deps,
        build_dir=settings.build_dir)


# --- build contexts ---------------------------------------------------------

class _ContextWriter:
    """A build context tar with fixed metadata: the engine's layer cache and
    the build itself see the same bytes on every machine."""

    def __init__(self, fileobj: BinaryIO, epoch: int):
        self.tf = tarfile.open(fileobj=fileobj, mode="w", format=tarfile.GNU_FORMAT)
        self.epoch = epoch
        self.dirs: set[str] = set()

    def _info(self, name: str, size: int, mode: int) -> tarfile.TarInfo:
        ti = tarfile.TarInfo(name)
        ti.size, ti.mode, ti.mtime = size, mode, self.epoch
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = ""
        return ti

    def _parents(self, name: str) -> None:
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in self.dirs:
                ti = self._info(d, 0, 0o755)
                ti.type = tarfile.DIRTYPE
                self.tf.addfile(ti)
                self.dirs.add(d)

    def add_bytes(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._parents(name)
        self.tf.addfile(self._info(name, len(data), mode), io.BytesIO(data))

    def add_file(self, name: str, path: Path, mode: int = 0o644, expect_sha256: str | None = None) -> None:
        """Copy ``path`` in; with ``expect_sha256``, re-check the bytes as
        they are read (the cache could have been altered since it admitted
        them) and refuse a mismatch."""
        self._parents(name)
        size = path.stat().st_size
        with open(path, "rb") as f:
            reader = _HashingReader(f) if expect_sha256 else f
            self.tf.addfile(self._info(name, size, mode), reader)
        if expect_sha256 and reader.hexdigest() != expect_sha256:
            raise FetchError(f"cached file {path} no longer has sha256 {expect_sha256} "
                             f"(got {reader.hexdigest()}); delete it and fetch again")

    def close(self) -> None:
        self.tf.close()


class _HashingReader:
    def __init__(self, f):
        self.f, self.h = f, hashlib.sha256()

    def read(self, n=-1):
        b = self.f.read(n)
        self.h.update(b)
        return b

    def hexdigest(self) -> str:
        return self.h.hexdigest()


def write_context(dst: BinaryIO, pkg: Package, rendered: Rendered, source_paths: dict[str, Path], epoch: int,
                  test_containerfile: str | None = None) -> None:
    """The build context: sources, the package's files, and quorum's
    generated files under .quorum/.  The smoke test's context is the same
    plus its own Containerfile, so a test can use the sources (e.g. to check
    a compiler rebuilds itself to the same bytes)."""
    w = _ContextWriter(dst, epoch)
    entries: list[tuple[str, object]] = []
    for s in pkg.sources:
        entries.append((s.file, ("source", source_paths[s.file], s.sha256)))
    for rel in pkg.files:
        entries.append((rel, ("file", pkg.dir / rel, None)))
    entries.append((CONTAINERFILE_PATH, ("bytes", rendered.containerfile.encode())))
    entries.append((".quorum/build.sh", ("bytes", rendered.build_sh.encode())))
    if rendered.test_sh is not None:
        entries.append((".quorum/test.sh", ("bytes", rendered.test_sh.encode())))
    if test_containerfile is not None:
        entries.append((TEST_CONTAINERFILE_PATH, ("bytes", test_containerfile.encode())))
    for name, spec in sorted(entries):
        if spec[0] == "bytes":
            w.add_bytes(name, spec[1])
        else:
            _, path, sha = spec
            # Only the executable bit is kept from the maintainer's checkout:
            # git records no other mode, so anything else would differ
            # between two clones.
            mode = 0o755 if os.access(path, os.X_OK) and spec[0] == "file" else 0o644
            w.add_file(name, path, mode, expect_sha256=sha)
    w.close()


def file_hashes(pkg: Package) -> dict[str, list]:
    """sha256 and executable bit of every package file (for the input hash)."""
    out = {}
    for rel in pkg.files:
        p = pkg.dir / rel
        h = hashlib.sha256(p.read_bytes()).hexdigest()
        out[rel] = [h, 0o755 if os.access(p, os.X_OK) else 0o644]
    return out
